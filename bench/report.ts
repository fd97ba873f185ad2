// Result aggregation (median over runs) and table formatting.

import type { DatasetName, ToolName } from "./tools.ts";

export const STEPS = ["backup-1", "backup-2", "backup-3", "restore"] as const;
export type Step = (typeof STEPS)[number];

export const STEP_LABEL: Record<Step, string> = {
  "backup-1": "1st backup",
  "backup-2": "2nd backup (changed)",
  "backup-3": "3rd backup (unchanged)",
  restore: "full restore",
};

export interface OkMeasurement {
  ok: true;
  ms: number;
  /** Time of a `sync` right after the command (dirty data the command left behind). */
  syncMs: number;
  /** Bytes the throughput is computed from (full source size). */
  srcBytes: number;
  maxRssKiB: number | null;
  cpuS: number | null;
  /** Average number of cores other processes kept busy during the step (noise indicator). */
  otherLoad: number | null;
  repoBytes: number;
  /**
   * Tools with a server process (gorde-remote): the server's CPU seconds during the step (also
   * included in cpuS) and its peak RSS during the step (not in maxRssKiB, which is the client's).
   */
  server?: { cpuS: number; maxRssKiB: number };
  /** Restore verification, restore step only. */
  check?: { ok: boolean; text: string; detail?: string };
}

export interface FailedMeasurement {
  ok: false;
  error: string;
}

export type Measurement = OkMeasurement | FailedMeasurement;

/** results[dataset][tool][step] = one measurement per run */
export type Results = Map<DatasetName, Map<ToolName, Map<Step, Measurement[]>>>;

export function record(res: Results, d: DatasetName, t: ToolName, s: Step, m: Measurement): void {
  let byTool = res.get(d);
  if (!byTool) res.set(d, (byTool = new Map<ToolName, Map<Step, Measurement[]>>()));
  let bySteps = byTool.get(t);
  if (!bySteps) byTool.set(t, (bySteps = new Map<Step, Measurement[]>()));
  let list = bySteps.get(s);
  if (!list) bySteps.set(s, (list = []));
  list.push(m);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function medianOrNull(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 ? null : median(v);
}

export interface Summary {
  m: Measurement;
  runs: number;
  failedRuns: number;
}

/** Median of each field over the successful runs; a failure if any run failed. */
export function summarize(ms: Measurement[]): Summary {
  const ok = ms.filter((m): m is OkMeasurement => m.ok);
  const failed = ms.filter((m): m is FailedMeasurement => !m.ok);
  if (failed.length > 0 || ok.length === 0) {
    const first = failed[0] ?? { ok: false as const, error: "no data" };
    return { m: first, runs: ms.length, failedRuns: failed.length };
  }
  const badCheck = ok.find((m) => m.check && !m.check.ok);
  const m: OkMeasurement = {
    ok: true,
    ms: median(ok.map((x) => x.ms)),
    syncMs: median(ok.map((x) => x.syncMs)),
    srcBytes: median(ok.map((x) => x.srcBytes)),
    maxRssKiB: medianOrNull(ok.map((x) => x.maxRssKiB)),
    cpuS: medianOrNull(ok.map((x) => x.cpuS)),
    otherLoad: medianOrNull(ok.map((x) => x.otherLoad)),
    repoBytes: median(ok.map((x) => x.repoBytes)),
  };
  const servers = ok.flatMap((x) => (x.server ? [x.server] : []));
  if (servers.length > 0) {
    m.server = { cpuS: median(servers.map((x) => x.cpuS)), maxRssKiB: median(servers.map((x) => x.maxRssKiB)) };
  }
  const check = badCheck?.check ?? ok.find((x) => x.check)?.check;
  if (check) m.check = check;
  return { m, runs: ms.length, failedRuns: 0 };
}

function ratio(x: number): string {
  if (!Number.isFinite(x)) return "—";
  return x >= 10 ? `${x.toFixed(1)}×` : `${x.toFixed(2)}×`;
}

const MB = 1e6;

export function mbps(m: OkMeasurement): number {
  return m.srcBytes / MB / (m.ms / 1000);
}

/** Tools that are gorde itself in another setup: compared with gorde in their own table, not as peers. */
const GORDE_VARIANTS: readonly ToolName[] = ["gorde", "gorde-remote"];

/** Markdown table (padded so it also reads well in a terminal) for one data set. */
export function datasetTable(res: Results, d: DatasetName, tools: readonly ToolName[]): string {
  const byTool = res.get(d);
  const peers = tools.filter((t) => !GORDE_VARIANTS.includes(t));
  const header = [
    "step",
    "tool",
    "time ms",
    "then sync ms",
    "MB/s",
    "peak RSS MiB",
    "CPU s",
    "other load",
    "datastore MB",
    "growth MB",
    ...peers.flatMap((p) => [`speed vs ${p}`, `size vs ${p}`]),
    "restore check / note",
  ];
  const rows: string[][] = [];
  const failedRow = (row: string[], status: string, note: string): string[] => [
    ...row,
    status,
    ...Array<string>(header.length - 4).fill(""),
    note.replaceAll("|", "\\|"),
  ];
  for (const step of STEPS) {
    for (const tool of tools) {
      const list = byTool?.get(tool)?.get(step);
      const row: string[] = [STEP_LABEL[step], tool];
      if (!list || list.length === 0) {
        rows.push(failedRow(row, "not run", ""));
        continue;
      }
      const s = summarize(list);
      if (!s.m.ok) {
        const runs = s.runs > 1 ? ` (${s.failedRuns}/${s.runs} runs)` : "";
        const status = s.m.error.startsWith("skipped") ? "skipped" : "failed";
        rows.push(failedRow(row, status, `${s.m.error}${runs}`));
        continue;
      }
      const m = s.m;
      const prevStep = STEPS[STEPS.indexOf(step) - 1];
      let growth = "";
      if (step === "backup-1") growth = (m.repoBytes / MB).toFixed(1);
      else if (prevStep && step !== "restore") {
        const prev = byTool?.get(tool)?.get(prevStep);
        const ps = prev ? summarize(prev) : null;
        if (ps?.m.ok) growth = ((m.repoBytes - ps.m.repoBytes) / MB).toFixed(1);
      }
      row.push(
        m.ms.toFixed(0),
        m.syncMs.toFixed(0),
        mbps(m).toFixed(1),
        m.maxRssKiB === null ? "n/a" : (m.maxRssKiB / 1024).toFixed(0),
        m.cpuS === null ? "n/a" : m.cpuS.toFixed(1),
        m.otherLoad === null ? "n/a" : m.otherLoad.toFixed(2),
        (m.repoBytes / MB).toFixed(1),
        growth,
      );
      for (const p of peers) {
        const pl = byTool?.get(p)?.get(step);
        const ps = pl ? summarize(pl) : null;
        if (tool === "gorde" && ps?.m.ok) {
          row.push(ratio(ps.m.ms / m.ms), ratio(m.repoBytes / ps.m.repoBytes));
        } else {
          row.push("", "");
        }
      }
      const notes = [
        ...(m.server ? [`server: CPU ${m.server.cpuS.toFixed(1)} s, peak RSS ${(m.server.maxRssKiB / 1024).toFixed(0)} MiB`] : []),
        ...(m.check ? [m.check.text] : []),
      ];
      row.push(notes.join("; ").replaceAll("|", "\\|"));
      rows.push(row);
    }
  }
  return formatTable(header, rows, header.map((_, i) => i >= 2 && i < header.length - 1));
}

/** Rounded down, so a share just under the target never reads as the target. */
const pct = (x: number): string => `${Math.floor(x * 100)}%`;

/** Throughput of gorde-remote relative to local gorde that counts as good enough. */
export const REMOTE_TARGET = 0.6;

/**
 * gorde-remote against local gorde, per step: throughput of remote as a share of local
 * (= local time / remote time), computed within each run and then the median over runs.
 * Null when either tool was not run on the data set.
 */
export function remoteTable(res: Results, d: DatasetName, tools: readonly ToolName[]): string | null {
  if (!tools.includes("gorde") || !tools.includes("gorde-remote")) return null;
  const byTool = res.get(d);
  const header = ["step", "local time ms", "remote time ms", "remote MB/s", "remote / local throughput", "per run", `target ≥ ${REMOTE_TARGET * 100}%`];
  const rows: string[][] = [];
  for (const step of STEPS) {
    const local = byTool?.get("gorde")?.get(step) ?? [];
    const remote = byTool?.get("gorde-remote")?.get(step) ?? [];
    const shares: number[] = [];
    for (let i = 0; i < Math.min(local.length, remote.length); i++) {
      const l = local[i]!;
      const r = remote[i]!;
      if (l.ok && r.ok) shares.push(l.ms / r.ms);
    }
    const ls = local.length > 0 ? summarize(local) : null;
    const rs = remote.length > 0 ? summarize(remote) : null;
    if (shares.length === 0 || !ls?.m.ok || !rs?.m.ok) {
      rows.push([STEP_LABEL[step], ls?.m.ok ? ls.m.ms.toFixed(0) : "—", rs?.m.ok ? rs.m.ms.toFixed(0) : "—", "", "", "", "no data"]);
      continue;
    }
    const share = median(shares);
    rows.push([
      STEP_LABEL[step],
      ls.m.ms.toFixed(0),
      rs.m.ms.toFixed(0),
      mbps(rs.m).toFixed(1),
      pct(share),
      shares.length > 1 ? shares.map(pct).join(" ") : "",
      share >= REMOTE_TARGET ? "met" : "MISSED",
    ]);
  }
  return formatTable(header, rows, header.map((_, i) => i >= 1 && i <= 4));
}

export function formatTable(header: string[], rows: string[][], rightAlign: boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    "| " +
    cells.map((c, i) => (rightAlign[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(" | ") +
    " |";
  const sep = "|" + widths.map((w, i) => (rightAlign[i] ? "-".repeat(w + 1) + ":" : "-".repeat(w + 2))).join("|") + "|";
  return [line(header), sep, ...rows.map(line)].join("\n");
}
