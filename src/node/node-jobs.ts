// A node's backup jobs: the guests of this node a job selects, each backed up (the first
// backup of a guest is full, later ones incremental) and its group pruned by the job's
// retention right after; and its restore drills, one guest after another (drills are heavy:
// one at a time per node). Prune, GC, verify and sync jobs run on the backup server.
import type { RemoteRepository } from "../client/remote.ts";
import { parseGroup } from "../format/names.ts";
import { parseRate } from "../format/units.ts";
import { withIoPriority } from "../sys/io-priority.ts";
import type { JobRunner, RunOutcome } from "../jobs/scheduler.ts";
import { type Plan, type PlanJob, keepOptions } from "../schedule/plan.ts";
import type { DrillRunner } from "./drill.ts";
import type { GuestManager } from "./guests.ts";

/** The guests of this node a job selects. */
export function selectedGuests(job: PlanJob, plan: Plan, guests: GuestManager, node: string): number[] {
  if (!("guests" in job)) return [];
  if (job.nodes && !job.nodes.includes(node)) return [];
  const wanted = job.guests === "all" || job.guests === undefined ? [...plan.rpo.keys()] : job.guests;
  const here = new Set(guests.ids());
  return wanted.filter((id) => here.has(id) && !job.exclude?.includes(id) && (plan.file.guests[String(id)]?.node ?? node) === node);
}

/** A drill job: each selected guest's newest good snapshot drilled in turn; the run fails when one did not pass. */
async function drillJob(job: PlanJob, plan: Plan, guests: GuestManager, node: string, drills: DrillRunner, ctx: Parameters<JobRunner>[1]): Promise<RunOutcome> {
  const ids = selectedGuests(job, plan, guests, node);
  ctx.log(`job ${job.name}: ${ids.length ? `restore drills of guests ${ids.join(", ")}` : "no guest of this node selected"}`);
  const failed: string[] = [];
  const passed: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    if (ctx.signal.aborted) break;
    try {
      const prepared = await drills.prepare({ guest: id });
      const r = await drills.run(prepared, drills.begin(prepared, job.name), { log: (l) => ctx.log(`guest ${id}: ${l}`), signal: ctx.signal });
      bytes += r.bytesRestored ?? 0;
      if (r.result === "passed") passed.push(`guest ${id} RTO ${r.rtoSeconds} s`);
      else failed.push(`guest ${id} (drill ${r.id}) ${r.result === "failed" ? `failed at check ${r.failedCheck}` : "could not run"}: ${r.error ?? "no reason given"}`);
    } catch (err) {
      failed.push(`guest ${id}: ${(err as Error).message.replace(/\.$/, "")}`);
      ctx.log(`guest ${id}: drill not started: ${(err as Error).message}`);
    }
  }
  if (failed.length) throw new Error(`${failed.length} of ${ids.length} drills did not pass: ${failed.join("; ")}`);
  return { bytes, message: ids.length ? `${ids.length} drill${ids.length === 1 ? "" : "s"} passed: ${passed.join(", ")}` : "no guest of this node selected" };
}

export function nodeJobRunner(plan: Plan, guests: GuestManager, node: string, repository: (rate?: number, store?: string) => Promise<RemoteRepository>, drills: DrillRunner): JobRunner {
  return async (job, ctx) => {
    if (job.type === "drill") return drillJob(job, plan, guests, node, drills, ctx);
    if (job.type !== "backup") throw new Error(`a ${job.type} job does not run on a node`);
    const ids = selectedGuests(job, plan, guests, node);
    ctx.log(`job ${job.name}: ${ids.length ? `guests ${ids.join(", ")}` : "no guest of this node selected"}`);
    const rate = job.rate === undefined ? undefined : parseRate(String(job.rate), `job ${job.name} rate`);
    let bytes = 0;
    let newBytes = 0;
    let reusedBytes = 0;
    const failed: string[] = [];
    const one = async (id: number): Promise<void> => {
      try {
        const notes = job.notes?.replaceAll("{{guest}}", String(id)).replaceAll("{{job}}", job.name).replaceAll("{{node}}", node);
        const r = await guests.backup(id, job.mode ?? "snapshot", { notes, rate, store: job.datastore, signal: ctx.signal });
        for (const l of r.log) ctx.log(l.replace(/^\S+ /, ""));
        newBytes += r.newBytes;
        reusedBytes += r.reusedBytes;
        bytes += r.newBytes + r.reusedBytes;
        if (job.keep) {
          const group = r.snapshot.split("/").slice(0, 2).join("/");
          const repo = await repository(undefined, job.datastore);
          try {
            const keep = keepOptions(job.keep);
            const { plan: decided } = await repo.prune([], parseGroup(group), keep, false);
            const inUse = decided.filter((d) => d.action === "in-use").length;
            ctx.log(`retention on ${group}: ${decided.filter((d) => d.action === "remove").length} removed, ${decided.filter((d) => d.action !== "remove" && d.action !== "in-use").length} kept${inUse ? `, ${inUse} in use on the server (the next run's retention removes them)` : ""}`);
          } catch (err) {
            // The backup is made: a retention that failed is tried again by the next run.
            ctx.log(`retention on ${group} not applied this time: ${(err as Error).message}`);
          } finally {
            repo.close();
          }
        }
      } catch (err) {
        failed.push(`guest ${id}: ${(err as Error).message}`);
        ctx.log(`guest ${id} failed: ${(err as Error).message}`);
      }
    };
    // At most max-parallel guests at once (default one), at a low I/O priority: the node's guests keep running smoothly.
    const queue = [...ids];
    const level = job["io-priority"] ?? 7;
    ctx.log(`I/O priority best-effort ${level}`);
    await withIoPriority(
      level,
      () =>
        Promise.all(
          Array.from({ length: Math.min(job["max-parallel"] ?? 1, queue.length) }, async () => {
            for (let id = queue.shift(); id !== undefined && !ctx.signal.aborted; id = queue.shift()) await one(id);
          }),
        ),
      ctx.log,
    );
    if (failed.length) throw new Error(`${failed.length} of ${ids.length} backups failed: ${failed.join("; ")}`);
    return { bytes, newBytes, reusedBytes, message: `${ids.length} guest${ids.length === 1 ? "" : "s"} backed up` };
  };
}
