// The plan on a node: kept in the node's data directory, its backup jobs run by the node's
// scheduler for the guests on this node (the first backup of a guest is full, later ones
// incremental), each group pruned by the job's retention after its backup. Prune, GC,
// verify and sync jobs belong to the backup server; restore drills come with the cluster.
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { RemoteRepository } from "../client/remote.ts";
import { writeFileAtomic } from "../datastore/datastore.ts";
import { parseRate } from "../format/units.ts";
import { type JobRunner, Scheduler, planNotifier } from "../jobs/scheduler.ts";
import { TaskHistory } from "../jobs/task-history.ts";
import { type Plan, type PlanJob, parsePlan } from "../schedule/plan.ts";
import { busyReason, readLoad } from "../schedule/window.ts";
import type { GuestManager } from "./guests.ts";

const KEEP = { last: "keepLast", hourly: "keepHourly", daily: "keepDaily", weekly: "keepWeekly", monthly: "keepMonthly", yearly: "keepYearly" } as const;

/** The guests of this node a job selects. */
export function selectedGuests(job: PlanJob, plan: Plan, guests: GuestManager, node: string): number[] {
  if (!("guests" in job)) return [];
  if (job.nodes && !job.nodes.includes(node)) return [];
  const wanted = job.guests === "all" || job.guests === undefined ? [...plan.rpo.keys()] : job.guests;
  const here = new Set(guests.ids());
  return wanted.filter((id) => here.has(id) && !job.exclude?.includes(id) && (plan.file.guests[String(id)]?.node ?? node) === node);
}

function backupRunner(plan: Plan, guests: GuestManager, node: string, repository: (rate?: number) => Promise<RemoteRepository>): JobRunner {
  return async (job, ctx) => {
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
        const r = await guests.backup(id, job.mode ?? "snapshot", { notes, rate, signal: ctx.signal });
        for (const l of r.log) ctx.log(l.replace(/^\S+ /, ""));
        newBytes += r.newBytes;
        reusedBytes += r.reusedBytes;
        bytes += r.newBytes + r.reusedBytes;
        if (job.keep) {
          const repo = await repository();
          try {
            const keep = Object.fromEntries(Object.entries(job.keep).map(([k, v]) => [KEEP[k as keyof typeof KEEP], v]));
            const group = r.snapshot.split("/").slice(0, 2).join("/");
            const decided = await repo.prune([], group, keep, false);
            ctx.log(`retention on ${group}: ${decided.filter((d) => d.action === "remove").length} removed, ${decided.filter((d) => d.action !== "remove").length} kept`);
          } finally {
            repo.close();
          }
        }
      } catch (err) {
        failed.push(`guest ${id}: ${(err as Error).message}`);
        ctx.log(`guest ${id} failed: ${(err as Error).message}`);
      }
    };
    // At most max-parallel guests at once (default one): backups keep the node's guests running smoothly.
    const queue = [...ids];
    const workers = Array.from({ length: Math.min(job["max-parallel"] ?? 1, queue.length) }, async () => {
      for (let id = queue.shift(); id !== undefined && !ctx.signal.aborted; id = queue.shift()) await one(id);
    });
    await Promise.all(workers);
    if (failed.length) throw new Error(`${failed.length} of ${ids.length} backups failed: ${failed.join("; ")}`);
    return { bytes, newBytes, reusedBytes, message: `${ids.length} guest${ids.length === 1 ? "" : "s"} backed up` };
  };
}

/** The node's plan and the scheduler that carries out its backup jobs. */
export class NodeJobs {
  private scheduler: Scheduler | undefined;
  private text: string | undefined;
  private plan: Plan | undefined;
  readonly history: TaskHistory;
  private readonly file: string;
  private readonly opts: { dataDir: string; node: string; guests: GuestManager; repository: (rate?: number) => Promise<RemoteRepository>; log: (line: string) => void; tickMs?: number };

  private constructor(opts: NodeJobs["opts"]) {
    this.opts = opts;
    this.file = path.join(opts.dataDir, "plan.yaml");
    this.history = TaskHistory.open(path.join(opts.dataDir, "state", "history.db"));
  }

  static async open(opts: NodeJobs["opts"]): Promise<NodeJobs> {
    const jobs = new NodeJobs(opts);
    const text = await fsp.readFile(jobs.file, "utf8").catch(() => undefined);
    if (text !== undefined) jobs.use(text);
    // Runs older than 90 days leave the history.
    jobs.history.prune(Date.now() - 90 * 86_400_000);
    return jobs;
  }

  current(): { text: string | null; jobs: string[] } {
    return { text: this.text ?? null, jobs: this.plan?.jobs.filter(({ job }) => job.type === "backup").map(({ job }) => job.name) ?? [] };
  }

  /** Checks and keeps a new plan, and schedules its backup jobs. */
  async apply(text: string): Promise<void> {
    parsePlan(text, "plan");
    await writeFileAtomic(this.file, Buffer.from(text), { mode: 0o600 });
    await this.scheduler?.stop();
    this.use(text);
    this.opts.log(`plan applied: backup jobs ${this.current().jobs.join(", ") || "none"}`);
  }

  private use(text: string): void {
    const plan = parsePlan(text, `plan ${this.file}`);
    const mine: Plan = { ...plan, jobs: plan.jobs.filter(({ job }) => job.type === "backup") };
    const { guests, node, repository } = this.opts;
    this.text = text;
    this.plan = plan;
    this.scheduler = new Scheduler({
      plan: mine,
      history: this.history,
      run: backupRunner(plan, guests, node, repository),
      busy: () => busyReason(readLoad(os.availableParallelism())),
      notify: planNotifier(plan, node, (job, results) => {
        for (const r of results) if (!r.ok) this.opts.log(`job ${job}: notification to ${r.target} failed: ${r.error}`);
      }),
    });
    this.scheduler.start(this.opts.tickMs ?? 1000);
  }

  async close(): Promise<void> {
    await this.scheduler?.stop();
    this.history.close();
  }
}
