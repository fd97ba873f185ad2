// `npm run bench`: gorde, restic and borg on the same data in one run.
//
//   node bench/run.ts [--tools gorde,restic,borg] [--steps image,tree] [--runs N] [--quick] [--keep]
//
// See bench/README.md for what is measured and how.

import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join, relative } from "node:path";
import {
  applyImageWrites,
  BENCH_DIR,
  dataPaths,
  describeImage,
  describeTree,
  ensureImage,
  ensureTree,
  FULL,
  type ImageInfo,
  modifyTree,
  QUICK,
  type Sizes,
  type TreeInfo,
  type TreeModification,
  WORK_DIR,
} from "./data.ts";
import { apparentSize, compareFiles, compareTrees, describeTreeDiff, manifest, treeDiffOk } from "./fsutil.ts";
import { capture, type Cmd, dropCaches, errorLine, haveGnuTime, machineBusySeconds, must, run } from "./proc.ts";
import { datasetTable, mbps, type Measurement, record, REMOTE_TARGET, remoteTable, type Results, type Step, STEPS } from "./report.ts";
import { DATASETS, type DatasetName, ROOT, type ToolCtx, TOOL_NAMES, type ToolName, TOOLS } from "./tools.ts";

interface Options {
  tools: ToolName[];
  datasets: DatasetName[];
  runs: number;
  quick: boolean;
  keep: boolean;
}

const USAGE = `usage: node bench/run.ts [options]
  --tools LIST   comma-separated subset of ${TOOL_NAMES.join(",")} (default: all;
                 gorde-remote is gorde against a gorde server on 127.0.0.1)
  --steps LIST   comma-separated subset of image,tree (or 1,2) (default: both)
  --runs N       repeat every tool/data set N times and report the median (default 1)
  --quick        small data (256 MiB image, ~100 MiB tree); results.md is not written
  --keep         keep repositories and restored data under bench/work for inspection
`;

function parseArgs(argv: string[]): Options {
  const o: Options = { tools: [...TOOL_NAMES], datasets: [...DATASETS], runs: 1, quick: false, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--tools": {
        const list = value().split(",").map((s) => s.trim()).filter(Boolean);
        for (const t of list) if (!(TOOL_NAMES as readonly string[]).includes(t)) throw new Error(`unknown tool ${t}`);
        o.tools = TOOL_NAMES.filter((t) => list.includes(t));
        break;
      }
      case "--steps":
      case "--data": {
        const list = value()
          .split(",")
          .map((s) => ({ "1": "image", "2": "tree" })[s.trim()] ?? s.trim());
        for (const d of list) if (!(DATASETS as readonly string[]).includes(d)) throw new Error(`unknown step ${d}`);
        o.datasets = DATASETS.filter((d) => list.includes(d));
        break;
      }
      case "--runs":
        o.runs = Number(value());
        if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error("--runs needs a positive integer");
        break;
      case "--quick":
        o.quick = true;
        break;
      case "--keep":
        o.keep = true;
        break;
      case "-h":
      case "--help":
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${a}\n${USAGE}`);
    }
  }
  if (o.tools.length === 0 || o.datasets.length === 0) throw new Error("nothing to run");
  return o;
}

const log = (msg: string): void => {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`);
};

let interrupted = false;
let cacheNoteLogged = false;
class Interrupted extends Error {}
function checkInterrupt(): void {
  if (interrupted) throw new Interrupted("interrupted");
}

let aptUpdated = false;
function aptInstall(pkg: string): string | null {
  if (process.getuid?.() !== 0) return "not root, cannot apt-get install";
  try {
    if (!aptUpdated) {
      log("apt-get update ...");
      must(["apt-get", "update", "-q"]);
      aptUpdated = true;
    }
    log(`apt-get install -y ${pkg} ...`);
    must(["apt-get", "install", "-y", "-q", pkg], { env: { DEBIAN_FRONTEND: "noninteractive" } });
    return null;
  } catch (e) {
    return (e as Error).message.split("\n")[0] ?? "apt-get failed";
  }
}

interface Ready {
  tools: ToolName[];
  versions: Map<ToolName, string>;
  notes: string[];
}

function prepareTools(wanted: ToolName[]): Ready {
  const notes: string[] = [];
  if (!haveGnuTime()) {
    const err = aptInstall("time");
    if (err !== null || !haveGnuTime()) notes.push(`GNU time unavailable (${err ?? "install failed"}): peak RSS and CPU not measured`);
  }
  const versions = new Map<ToolName, string>();
  const tools: ToolName[] = [];
  for (const name of wanted) {
    let p = TOOLS[name].probe();
    if (!p.ok && p.aptPackage) {
      const err = aptInstall(p.aptPackage);
      if (err === null) p = TOOLS[name].probe();
      else notes.push(`${name}: ${p.problem}; apt-get install ${p.aptPackage} failed: ${err}`);
    }
    if (p.ok) {
      versions.set(name, p.version);
      tools.push(name);
    } else {
      const msg = `${name} skipped: ${p.problem}${p.aptPackage ? ` (install with: apt-get install ${p.aptPackage})` : ""}`;
      log(msg);
      notes.push(msg);
    }
  }
  return { tools, versions, notes };
}

const WORK_IMAGE = join(WORK_DIR, "disk.img");
const WORK_TREE = join(WORK_DIR, "tree");
const LOG_DIR = join(WORK_DIR, "logs");

function resetSource(d: DatasetName, sizes: Sizes): void {
  const p = dataPaths(sizes);
  if (d === "image") {
    rmSync(WORK_IMAGE, { force: true });
    must(["cp", "--reflink=never", p.image, WORK_IMAGE]);
  } else {
    rmSync(WORK_TREE, { recursive: true, force: true });
    must(["cp", "-a", "--reflink=never", p.tree, WORK_TREE]);
  }
}

function sourceBytes(d: DatasetName, sizes: Sizes): number {
  return d === "image" ? sizes.imageBytes : apparentSize(WORK_TREE);
}

interface DatasetRunInfo {
  treeMod?: TreeModification;
}

/** One tool, one data set, one run: init, three backups, restore, verify. */
async function runDataset(
  res: Results,
  tool: ToolName,
  d: DatasetName,
  sizes: Sizes,
  runNo: number,
  opts: Options,
  info: DatasetRunInfo,
): Promise<void> {
  const t = TOOLS[tool];
  const base = join(WORK_DIR, `${tool}-${d}`);
  const c: ToolCtx = {
    dataset: d,
    base,
    repo: join(base, "repo"),
    aux: join(base, "aux"),
    restoreDir: join(base, "restore"),
    workDir: WORK_DIR,
    source: d === "image" ? WORK_IMAGE : WORK_TREE,
  };
  rmSync(base, { recursive: true, force: true });
  mkdirSync(c.aux, { recursive: true });

  const logFile = (step: string): string => join(LOG_DIR, `run${runNo}-${d}-${tool}-${step}.log`);
  let failed: string | null = null;
  const skipRest = (from: Step): void => {
    for (const s of STEPS.slice(STEPS.indexOf(from))) record(res, d, tool, s, { ok: false, error: failed ?? "failed" });
  };
  const measured = async (step: string, cmd: Cmd, srcBytes: number): Promise<Measurement> => {
    checkInterrupt();
    const note = dropCaches();
    if (note !== null && !cacheNoteLogged) {
      log(note);
      cacheNoteLogged = true;
    }
    c.server?.resetPeak();
    const server0 = c.server?.usage() ?? null;
    const busy0 = machineBusySeconds();
    const r = await run(cmd, { logFile: logFile(step) });
    const busy1 = machineBusySeconds();
    const server1 = c.server?.usage() ?? null;
    checkInterrupt();
    if (r.code !== 0) {
      const error = `failed: ${errorLine(r)}`;
      log(`[${d}] ${tool} ${step}: ${error} (log: ${relative(ROOT, logFile(step))})`);
      return { ok: false, error };
    }
    const s0 = process.hrtime.bigint();
    spawnSync("sync", { stdio: "ignore" });
    const syncMs = Number(process.hrtime.bigint() - s0) / 1e6;
    const m: Measurement = {
      ok: true,
      ms: r.ms,
      syncMs,
      srcBytes,
      maxRssKiB: r.maxRssKiB,
      cpuS: r.userS !== null && r.sysS !== null ? r.userS + r.sysS : null,
      otherLoad: null,
      repoBytes: apparentSize(c.repo),
    };
    if (server0 !== null && server1 !== null) {
      m.server = { cpuS: server1.cpuS - server0.cpuS, maxRssKiB: server1.maxRssKiB };
      // The tool's CPU is client + server (also keeps the server out of "other load").
      if (m.cpuS !== null) m.cpuS += m.server.cpuS;
    }
    if (busy0 !== null && busy1 !== null && m.cpuS !== null) {
      m.otherLoad = Math.max(0, busy1 - busy0 - m.cpuS) / (r.ms / 1000);
    }
    log(
      `[${d}] ${tool} ${step}: ${(r.ms / 1000).toFixed(1)} s, ${mbps(m).toFixed(1)} MB/s, ` +
        `rss ${m.maxRssKiB === null ? "?" : (m.maxRssKiB / 1024).toFixed(0)} MiB, repo ${(m.repoBytes / 1e6).toFixed(1)} MB` +
        (m.server ? `, server CPU ${m.server.cpuS.toFixed(1)} s rss ${(m.server.maxRssKiB / 1024).toFixed(0)} MiB` : "") +
        (m.otherLoad === null ? "" : `, other load ${m.otherLoad.toFixed(2)}`),
    );
    return m;
  };

  try {
    if (t.start) {
      checkInterrupt();
      try {
        c.server = await t.start(c, logFile("server"));
        log(`[${d}] ${tool}: server ready at ${c.server.repo}`);
      } catch (e) {
        failed = `failed: ${(e as Error).message}`;
        log(`[${d}] ${tool}: ${failed} (log: ${relative(ROOT, logFile("server"))})`);
        skipRest("backup-1");
        return;
      }
    }
    const init = t.init ? await measured("init", t.init(c), 0) : null;
    if (init && !init.ok) {
      failed = init.error.replace(/^failed: /, "failed: init: ");
      skipRest("backup-1");
      return;
    }
    resetSource(d, sizes);
    const srcV1 = sourceBytes(d, sizes);
    const b1 = await measured("backup-1", t.backup(c, 1), srcV1);
    record(res, d, tool, "backup-1", b1);
    if (!b1.ok) {
      failed = `skipped (1st backup ${b1.error})`;
      skipRest("backup-2");
      return;
    }

    if (d === "image") applyImageWrites(WORK_IMAGE, sizes.imageBytes);
    else info.treeMod = modifyTree(WORK_TREE);
    const srcV2 = sourceBytes(d, sizes);

    for (const n of [2, 3] as const) {
      const step: Step = n === 2 ? "backup-2" : "backup-3";
      const b = await measured(step, t.backup(c, n), srcV2);
      record(res, d, tool, step, b);
      if (!b.ok) {
        failed = `skipped (${step} ${b.error})`;
        skipRest(n === 2 ? "backup-3" : "restore");
        return;
      }
    }

    mkdirSync(c.restoreDir, { recursive: true });
    const { cmd, restored } = t.restore(c, 3);
    const r = await measured("restore", cmd, srcV2);
    if (r.ok) {
      log(`[${d}] ${tool} verifying restore ...`);
      if (d === "image") {
        const diff = compareFiles(WORK_IMAGE, restored);
        r.check = diff === null ? { ok: true, text: "ok, identical (cmp)" } : { ok: false, text: `MISMATCH: ${diff}` };
      } else {
        const diff = compareTrees(manifest(WORK_TREE), manifest(restored));
        r.check = { ok: treeDiffOk(diff), text: describeTreeDiff(diff), detail: diff.examples.join("; ") };
      }
      if (!r.check.ok) {
        log(`!!!!!!!! [${d}] ${tool} RESTORE ${r.check.text} ${r.check.detail ?? ""}`);
      } else {
        log(`[${d}] ${tool} restore check: ${r.check.text}`);
      }
    }
    record(res, d, tool, "restore", r);
  } finally {
    await c.server?.stop();
    if (!opts.keep) rmSync(base, { recursive: true, force: true });
  }
}


function machineLines(ready: Ready, cacheNote: string | null): string[] {
  const fs = capture(["findmnt", "-no", "FSTYPE", "-T", WORK_DIR]);
  const nproc = capture(["nproc"]);
  return [
    `- Machine: nproc ${nproc.ok ? nproc.out : "?"}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
      `${cpus()[0]?.model ?? "?"}, Linux ${release()}, bench/work on ${fs.ok ? fs.out : "?"}`,
    `- Tools: ${[...ready.versions.values()].join("; ")}`,
    `- Page cache: ${cacheNote ?? "dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every step"}`,
  ];
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const sizes = opts.quick ? QUICK : FULL;
  const started = Date.now();
  process.on("SIGINT", () => {
    interrupted = true;
  });
  process.on("SIGTERM", () => {
    interrupted = true;
  });

  const ready = prepareTools(opts.tools);
  if (ready.tools.length === 0) throw new Error("no tool available");

  mkdirSync(WORK_DIR, { recursive: true });
  const free = (() => {
    const s = statfsSync(WORK_DIR);
    return s.bavail * s.bsize;
  })();
  const need = sizes.imageBytes * 4 + sizes.treeBudget * 3;
  if (free < need) log(`warning: only ${(free / 1e9).toFixed(1)} GB free under bench/, about ${(need / 1e9).toFixed(1)} GB needed`);

  let imageInfo: ImageInfo | undefined;
  let treeInfo: TreeInfo | undefined;
  if (opts.datasets.includes("image")) imageInfo = ensureImage(sizes, log);
  if (opts.datasets.includes("tree")) treeInfo = ensureTree(sizes, log);

  rmSync(LOG_DIR, { recursive: true, force: true });
  mkdirSync(LOG_DIR, { recursive: true });
  const cacheNote = dropCaches();

  const res: Results = new Map();
  const runInfo: DatasetRunInfo = {};
  const dataStarted = Date.now();
  try {
    for (let runNo = 1; runNo <= opts.runs; runNo++) {
      for (const d of opts.datasets) {
        for (const tool of ready.tools) {
          log(`--- run ${runNo}/${opts.runs}: ${d} with ${tool}`);
          await runDataset(res, tool, d, sizes, runNo, opts, runInfo);
        }
      }
    }
  } catch (e) {
    if (!(e instanceof Interrupted)) throw e;
    log("interrupted; reporting what was measured");
  } finally {
    if (!opts.keep) {
      rmSync(WORK_IMAGE, { force: true });
      rmSync(WORK_TREE, { recursive: true, force: true });
    }
  }
  const benchMs = Date.now() - dataStarted;
  const totalMs = Date.now() - started;

  const out: string[] = [];
  out.push(`# gorde benchmark${opts.quick ? " (quick, small data)" : ""}`, "");
  out.push(`- Date: ${new Date().toISOString()}`);
  out.push(`- Command: node bench/run.ts ${process.argv.slice(2).join(" ")}`.trimEnd());
  out.push(...machineLines(ready, cacheNote));
  out.push(
    `- Runs: ${opts.runs}${opts.runs > 1 ? " (median of each value)" : ""}; ` +
      `wall time of the measured part ${(benchMs / 60000).toFixed(1)} min, whole run ${(totalMs / 60000).toFixed(1)} min`,
  );
  for (const n of ready.notes) out.push(`- Note: ${n}`);
  out.push("");
  out.push("## Data", "");
  if (imageInfo) out.push(`- image: ${describeImage(imageInfo)}`);
  if (treeInfo) out.push(`- tree: ${describeTree(treeInfo, runInfo.treeMod)}`);
  out.push(
    "- Every tool backs up the same path (bench/work/disk.img or bench/work/tree), rewritten by the harness " +
      "between steps: 1st backup, change, 2nd backup, 3rd backup without change, full restore into an empty " +
      "directory, byte comparison with the source.",
  );
  out.push("");
  out.push("## Settings", "");
  out.push("- gorde: `init`, `backup <repo> host/bench disk.img=<file> | data.tree=<dir> --json`, `restore <repo> host/bench/latest <archive> <target>`");
  if (ready.tools.includes("gorde-remote")) {
    out.push(
      "- gorde-remote: the same gorde commands against `gorde server --listen 127.0.0.1:0 --datastore bench=<repo>` " +
        "(repo `https://admin@127.0.0.1:<port>/bench`, TLS with a pinned fingerprint, HTTP/2); the server runs " +
        "for the whole data set on the same machine (client and server share the cores); datastore = the server's " +
        "directory; CPU = client + server, the server's share and peak RSS in the note column",
    );
  }
  out.push("- restic: `init --repository-version 2`, `backup --compression auto` (cache under bench/work), `restore latest --target`");
  out.push("- borg: `init --encryption none`, `create --compression zstd,3` (image: `--chunker-params fixed,4194304`, tree: default buzhash), `extract`");
  out.push(
    "- Columns: time = wall time of the command; then sync = duration of a `sync` run right after it " +
      "(writeback of what the command left dirty in the page cache; not part of time, MB/s or ratios); MB/s = full source size (10^6 B) / time, also for the " +
      "2nd and 3rd backups; peak RSS = GNU time %M; CPU = user+sys; datastore = sum of file sizes in the " +
      "repository directory after the step; speed vs peer = peer time / gorde time (>1: gorde faster); " +
      "size vs peer = gorde datastore / peer datastore (<1: gorde smaller); other load = average number of " +
      "cores kept busy by other processes during the step (from /proc/stat minus the tool's CPU time; the " +
      "machine is shared, values well above 0 mean the timing is disturbed).",
  );
  for (const d of opts.datasets) {
    out.push("", `## ${d}`, "", datasetTable(res, d, ready.tools));
    const remote = remoteTable(res, d, ready.tools);
    if (remote !== null) {
      out.push(
        "",
        `gorde-remote vs local gorde (${d}): remote throughput as a share of local = local time / remote time, ` +
          `within each run, median over runs; target ≥ ${REMOTE_TARGET * 100}%.`,
        "",
        remote,
      );
    }
  }
  const mismatches: string[] = [];
  for (const [d, byTool] of res) {
    for (const [tool, bySteps] of byTool) {
      for (const m of bySteps.get("restore") ?? []) {
        if (m.ok && m.check && !m.check.ok) mismatches.push(`${d} / ${tool}: ${m.check.text}${m.check.detail ? ` (${m.check.detail})` : ""}`);
      }
    }
  }
  if (mismatches.length > 0) {
    out.push("", "## !!! RESTORE MISMATCH !!!", "", ...mismatches.map((m) => `- ${m}`));
  }
  out.push("");
  const text = out.join("\n");
  process.stdout.write("\n" + text);
  if (!opts.quick && !interrupted) {
    const file = join(BENCH_DIR, "results.md");
    writeFileSync(file, text);
    log(`wrote ${relative(ROOT, file)}`);
  }
  if (mismatches.length > 0) process.exitCode = 2;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
