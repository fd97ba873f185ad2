// `gorde plan check <file> [--repo <url>]`: the plan checked whole (every problem with its
// line), each job's next runs, and with a repository each guest against its RPO: its last
// finished backup, that snapshot's age, what the backup job's retention keeps, and for a
// guest with `drill-every` its tested RPO: the newest passed restore drill (as the snapshots'
// drill state records it), within / late / never. Exit 1 when a guest is out of its RPO or
// its drills are late or never passed. `gorde plan apply <file> --node <url>`: shows what changes and
// applies it; applied twice, the second changes nothing.
import fs from "node:fs";
import { ROUTES, type SnapshotJson } from "../api/routes.ts";
import { RemoteRepository } from "../client/remote.ts";
import { latestUsable } from "../datastore/datastore.ts";
import { GordeError } from "../errors.ts";
import { parseGroup } from "../format/names.ts";
import { nextElapse } from "../schedule/calendar-event.ts";
import { type Plan, keepOptions, parsePlan, testedRpo } from "../schedule/plan.ts";
import { NodeClient } from "../client/node-client.ts";
import { type Command, type CommandContext, int, str, withRepo } from "./command.ts";

interface GuestCheck {
  guest: number;
  rpoHours: number;
  lastBackup: string | null;
  ageHours: number | null;
  withinRpo: boolean;
  kept: string[];
  /** `drill-every` in hours, null when the plan asks for no drill of the guest */
  drillEveryHours: number | null;
  /** the newest passed drill against `drill-every` (null without it) */
  tested: { state: "within" | "late" | "never"; snapshot: string | null; drillAgeHours: number | null; snapshotAgeHours: number | null } | null;
}

function readPlan(file: string): Plan {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new GordeError("usage", `cannot read plan ${file}: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
  return parsePlan(text, `plan ${file}`);
}

function hours(ms: number): number {
  return Math.round((ms / 3_600_000) * 10) / 10;
}

/** What applying `next` over `prev` changes, a line each; empty when nothing. */
export function planChanges(prev: Plan | undefined, next: Plan): string[] {
  const out: string[] = [];
  const before = new Map(prev?.file.jobs.map((j) => [j.name, JSON.stringify(j)]));
  const after = new Map(next.file.jobs.map((j) => [j.name, JSON.stringify(j)]));
  for (const [name, j] of after) {
    if (!before.has(name)) out.push(`+ job ${name}`);
    else if (before.get(name) !== j) out.push(`~ job ${name}`);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push(`- job ${name}`);
  if (JSON.stringify(prev?.file.guests ?? null) !== JSON.stringify(next.file.guests)) out.push("~ guests, their RPO and drill interval");
  if (JSON.stringify(prev?.file.notifications ?? null) !== JSON.stringify(next.file.notifications ?? null)) out.push("~ notifications");
  return out;
}

const PLAN_USAGE = "usage: gorde plan check <file> [--repo <repository>] [--iterations N] [--json] | gorde plan apply <file> --node <url> | --server <url> | gorde plan status --node <url> | --server <url>";

/** The host a plan command talks to: a node (`--node`, GORDE_NODE) or the backup server (`--server`). */
async function hostClient(ctx: CommandContext): Promise<{ client: NodeClient | RemoteRepository; where: string }> {
  const nodeUrl = str(ctx, "node") ?? (str(ctx, "server") === undefined ? process.env.GORDE_NODE : undefined);
  const serverUrl = str(ctx, "server");
  if ((nodeUrl === undefined) === (serverUrl === undefined)) throw new GordeError("usage", "name the host with --node https://<user>@<host>[:8006] (or GORDE_NODE) or --server https://<user>@<host>[:8007].");
  const opts = { secret: process.env.GORDE_PASSWORD, fingerprint: str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT, signal: ctx.signal };
  const client = nodeUrl !== undefined ? await NodeClient.connect(nodeUrl, opts) : await RemoteRepository.connect(serverUrl!, opts, true);
  return { client, where: (nodeUrl ?? serverUrl!).replace(/\/\/[^@]*@/, "//") };
}

/** Applies the plan to a node (`--node`: its backup jobs run there) or to the backup server (`--server`: prune, GC, verify). */
async function applyPlan(ctx: CommandContext, file: string): Promise<number> {
  const plan = readPlan(file);
  const { client, where } = await hostClient(ctx);
  try {
    const cur = await client.conn.call(ROUTES, "getPlan");
    const changes = planChanges(cur.text === null ? undefined : parsePlan(cur.text, "the plan applied before"), plan);
    if (changes.length === 0) {
      ctx.out(`plan ${file}: no change on ${where}\n`);
      return 0;
    }
    for (const c of changes) ctx.out(`${c}\n`);
    const r = await client.conn.call(ROUTES, "applyPlan", { json: { text: fs.readFileSync(file, "utf8") } });
    ctx.out(r.cluster ? `applied to cluster ${r.cluster} through ${where}: its nodes run it, each for the guests it owns (jobs ${r.jobs.join(", ") || "none"})\n` : `applied on ${where}: jobs ${r.jobs.join(", ") || "none"} scheduled there\n`);
    return 0;
  } finally {
    client.close();
  }
}

/** `plan status`: each job this host runs, its last run and result, its next elapse. */
async function planStatus(ctx: CommandContext): Promise<number> {
  const { client } = await hostClient(ctx);
  try {
    const cur = await client.conn.call(ROUTES, "getPlan");
    const runs = await client.conn.call(ROUTES, "listRuns", { query: { limit: 1000 } });
    const plan = cur.text === null ? undefined : parsePlan(cur.text, "the applied plan");
    const rows = cur.jobs.map((job) => {
      const last = runs.find((r) => r.job === job && r.result !== "running");
      const event = plan?.jobs.find((j) => j.job.name === job)?.event;
      const next = event && nextElapse(event, new Date(), "local");
      return {
        job,
        running: runs.some((r) => r.job === job && r.result === "running"),
        last: last ? { start: new Date(last.start).toISOString(), result: last.result, error: last.error } : null,
        next: next ? next.toISOString().replace(/\.\d{3}Z$/, "Z") : null,
      };
    });
    if (ctx.values.json === true) ctx.out(JSON.stringify(rows, null, 2) + "\n");
    else if (!rows.length) ctx.out("no plan applied here, or none of its jobs runs here\n");
    else
      for (const r of rows) {
        const last = r.last ? `last ${r.last.start} ${r.last.result}${r.last.error ? ` (${r.last.error})` : ""}` : "never ran";
        ctx.out(`${r.job}: ${r.running ? "running; " : ""}${last}; next ${r.next ?? "never"}\n`);
      }
    return 0;
  } finally {
    client.close();
  }
}

export const planCommand: Command = {
  options: { repo: { type: "string" }, node: { type: "string" }, server: { type: "string" }, fingerprint: { type: "string" }, json: { type: "boolean" }, iterations: { type: "string" } },
  async run(ctx) {
    const [sub, file, ...rest] = ctx.positionals;
    if (sub === "status" && file === undefined) return planStatus(ctx);
    if (!file || rest.length || (sub !== "check" && sub !== "apply")) throw new GordeError("usage", PLAN_USAGE);
    if (sub === "apply") return applyPlan(ctx, file);
    const plan = readPlan(file);
    const now = Date.now();
    const n = int(ctx, "iterations") ?? 3;
    const jobs = plan.jobs.map(({ job, event }) => {
      const next: string[] = [];
      for (let t: Date | null = new Date(now), i = 0; i < n && (t = nextElapse(event, t, "local")); i++) next.push(t.toISOString().replace(/\.\d{3}Z$/, "Z"));
      return { job: job.name, type: job.type, schedule: job.schedule, window: job.window ?? null, next };
    });
    const repo = str(ctx, "repo");
    const guests: GuestCheck[] = [];
    if (repo) {
      await withRepo(ctx, repo, async (r) => {
        for (const [guest, rpo] of plan.rpo) {
          const snaps: SnapshotJson[] = [];
          for (const type of ["vm", "ct"] as const) {
            const group = { type, id: String(guest) };
            snaps.push(...(await r.snapshots([], group)));
          }
          const last = latestUsable(snaps.sort((a, b) => a.time.localeCompare(b.time)));
          const age = last ? now - Date.parse(last.time) : null;
          // What the retention of the guest's backup job keeps, as the repository would decide it (a dry run).
          const job = plan.jobs.map((j) => j.job).find((j) => j.type === "backup" && j.keep && (j.guests === "all" || j.guests?.includes(guest)) && !j.exclude?.includes(guest));
          let kept: string[] = [];
          if (job && job.type === "backup" && job.keep && last) {
            const keep = keepOptions(job.keep);
            kept = (await r.prune([], parseGroup(last.snapshot.split("/").slice(0, 2).join("/")), keep, true)).plan.filter((p) => p.action !== "remove").map((p) => p.snapshot);
          }
          const every = plan.drillEvery.get(guest);
          const t = every === undefined ? null : testedRpo(snaps, every, now);
          const tested = t && { state: t.state, snapshot: t.snapshot, drillAgeHours: t.drillAgeMs === null ? null : hours(t.drillAgeMs), snapshotAgeHours: t.snapshotAgeMs === null ? null : hours(t.snapshotAgeMs) };
          guests.push({ guest, rpoHours: hours(rpo), lastBackup: last?.snapshot ?? null, ageHours: age === null ? null : hours(age), withinRpo: age !== null && age <= rpo, kept, drillEveryHours: every === undefined ? null : hours(every), tested });
        }
      });
    }
    const out = guests.filter((g) => !g.withinRpo || (g.tested !== null && g.tested.state !== "within"));
    if (ctx.values.json === true) ctx.out(JSON.stringify({ ok: out.length === 0, jobs, guests }, null, 2) + "\n");
    else {
      ctx.out(`plan ${file}: ${plan.jobs.length} jobs, ${plan.rpo.size} guests — valid\n`);
      for (const j of jobs) ctx.out(`  job ${j.job} (${j.type}) "${j.schedule}"${j.window ? ` in ${j.window}` : ""}: next ${j.next.join(", ") || "never"}\n`);
      for (const g of guests) {
        const state = g.lastBackup ? `last backup ${g.lastBackup}, ${g.ageHours} h old` : "no finished backup";
        ctx.out(`  guest ${g.guest}: ${state}, RPO ${g.rpoHours} h: ${g.withinRpo ? "ok" : "OUT OF RPO"}${g.kept.length ? `; retention keeps ${g.kept.length}` : ""}\n`);
        const t = g.tested;
        if (t)
          ctx.out(
            t.state === "never"
              ? `    tested RPO: no drill passed, drill every ${g.drillEveryHours} h: NEVER TESTED\n`
              : `    tested RPO: ${t.snapshotAgeHours} h (${t.snapshot} passed its drill ${t.drillAgeHours} h ago), drill every ${g.drillEveryHours} h: ${t.state === "within" ? "ok" : "LATE"}\n`,
          );
      }
    }
    return out.length ? 1 : 0;
  },
};
