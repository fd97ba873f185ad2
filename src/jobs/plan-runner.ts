// A host's share of the plan: the plan as last applied (kept in a file), the job history,
// and the scheduler that carries out the jobs of the kinds this host runs (backups on a
// node; prune, GC, verify and sync on the backup server). On a cluster the plan is the
// cluster's, one for every node (kept in etcd; the file is this node's copy of it): a plan
// applied on one node runs on each, and each backs up the guests it owns, so a node that
// recovered a guest backs it up from then on.
import fsp from "node:fs/promises";
import os from "node:os";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { GordeError } from "../errors.ts";
import { type Plan, type PlanJob, parsePlan, planPins } from "../schedule/plan.ts";
import { busyReason, readLoad } from "../schedule/load.ts";
import { type JobClock, type JobOutcome, type JobRunner, Scheduler, planNotifier } from "./scheduler.ts";
import { TaskHistory } from "./task-history.ts";

/** Job runs older than this leave the history. */
const HISTORY_DAYS = 90;
/** How often a node of a cluster looks for a plan applied on another. */
const SHARED_PLAN_POLL_MS = 3000;

/** The cluster's plan, as the cluster keeps it. */
export interface SharedPlan {
  /** the cluster's name, for messages */
  readonly cluster: string;
  /** the plan's text; null: the cluster has none yet */
  read(): Promise<string | null>;
  write(text: string): Promise<void>;
  /** writes `text` only if the cluster has no plan yet; answers whether it did */
  create(text: string): Promise<boolean>;
  /** this node's job clocks as the cluster keeps them */
  readClocks(): Promise<Map<string, JobClock>>;
  writeClock(job: string, clock: JobClock): Promise<void>;
}

export interface PlanRunnerOptions {
  /** where the applied plan is kept */
  planFile: string;
  historyFile: string;
  /** the host's name in notifications */
  host: string;
  /** the job kinds this host runs */
  kinds: readonly PlanJob["type"][];
  runner: (plan: Plan) => JobRunner;
  log: (line: string) => void;
  tickMs?: number;
  /** the cluster's plan while the host is in a cluster (asked anew each time: a node joins one while it runs) */
  shared?: () => SharedPlan | undefined;
}

export class PlanRunner {
  readonly history: TaskHistory;
  private readonly opts: PlanRunnerOptions;
  private scheduler: Scheduler | undefined;
  private text: string | undefined;
  /** the plan applied, whole, and the part of it this host runs */
  private plan: Plan | undefined;
  private mine: Plan | undefined;
  /** the cluster whose plan runs here; undefined: the host's own */
  private cluster: string | undefined;
  /** apply and the look at the cluster's plan, one at a time */
  private queue: Promise<unknown> = Promise.resolve();
  private poller: NodeJS.Timeout | undefined;
  private told = "";
  /** clocks to copy to the cluster, and whether a copy is under way */
  private readonly clockCopies = new Map<string, JobClock>();
  private copying = false;
  /** whether the cluster's copy of the clocks was read since this scheduler started */
  private clocksRead = false;

  private constructor(opts: PlanRunnerOptions) {
    this.opts = opts;
    this.history = TaskHistory.open(opts.historyFile);
  }

  static async open(opts: PlanRunnerOptions): Promise<PlanRunner> {
    const r = new PlanRunner(opts);
    r.history.prune(Date.now() - HISTORY_DAYS * 86_400_000);
    const text = await fsp.readFile(opts.planFile, "utf8").catch(() => undefined);
    if (text !== undefined) r.use(text);
    // Whose plan the file is: the cluster's (its copy), or this host's own.
    r.cluster = (await fsp.readFile(`${opts.planFile}.cluster`, "utf8").catch(() => "")).trim() || undefined;
    if (opts.shared) {
      const poll = (): void => {
        r.poller = setTimeout(() => void r.serial(() => r.follow()).finally(() => r.poller && poll()), SHARED_PLAN_POLL_MS);
      };
      await r.serial(() => r.follow());
      poll();
    }
    return r;
  }

  /** The RPO the plan asks of guest `id` (ms), if it names the guest. */
  rpoTarget(id: number): number | undefined {
    return this.plan?.rpo.get(id);
  }

  /** The plan's text as last applied and the jobs this host runs. */
  current(): { text: string | null; jobs: string[]; cluster: string | null } {
    return { text: this.text ?? null, jobs: this.mine?.jobs.map(({ job }) => job.name) ?? [], cluster: this.cluster ?? null };
  }

  /**
   * Checks and keeps a new plan (nothing changes when it is refused), then schedules it. On a
   * cluster it becomes the cluster's plan, and a plan that ties guests to nodes is refused.
   */
  async apply(text: string): Promise<void> {
    await this.serial(async () => {
      const plan = parsePlan(text, "plan");
      const shared = this.opts.shared?.();
      if (shared) {
        const pins = planPins(plan);
        if (pins.length) throw new GordeError("usage", `on cluster ${shared.cluster} each guest is backed up by the node that owns it, so the plan may not tie guests to nodes: remove ${pins.join(", ")}.`);
        await shared.write(text);
      }
      await this.keep(text, shared?.cluster);
      this.opts.log(`plan applied${shared ? ` to cluster ${shared.cluster}` : ""}: jobs ${this.current().jobs.join(", ") || "none"} scheduled here`);
    });
  }

  /** Runs `fn` after whatever apply or look at the cluster is under way. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Keeps `text` as this host's plan, or its copy of cluster `cluster`'s, and schedules it. */
  private async keep(text: string, cluster: string | undefined): Promise<void> {
    await writeFileAtomic(this.opts.planFile, Buffer.from(text), { mode: 0o600 });
    if (cluster) await writeFileAtomic(`${this.opts.planFile}.cluster`, `${cluster}\n`);
    else await fsp.rm(`${this.opts.planFile}.cluster`, { force: true });
    this.cluster = cluster;
    if (text === this.text) return; // the same jobs: a run under way goes on
    await this.scheduler?.stop();
    this.use(text);
  }

  /**
   * On a cluster, runs the cluster's plan: one applied on another node replaces this one. A
   * cluster without a plan takes this node's (the first node's plan in is the cluster's);
   * a node that joins a cluster with a plan keeps its own beside it, as `<plan file>.local`.
   */
  private async follow(): Promise<void> {
    const shared = this.opts.shared?.();
    if (!shared) return;
    let text: string | null;
    try {
      text = await shared.read();
      const pins = this.plan ? planPins(this.plan) : [];
      if (text === null && pins.length) {
        this.logOnce(`this node's plan does not become the plan of cluster ${shared.cluster}: it ties guests to nodes (${pins.join(", ")}); apply one without`);
        return;
      }
      if (text === null && this.text !== undefined && (await shared.create(this.text))) {
        await this.keep(this.text, shared.cluster);
        this.opts.log(`this node's plan is now the plan of cluster ${shared.cluster}`);
        return;
      }
    } catch (err) {
      // Without the cluster the node goes on with the plan it has.
      this.logOnce(`the plan of cluster ${shared.cluster} could not be read: ${(err as Error).message}`);
      return;
    }
    this.told = "";
    await this.readClocks(shared);
    if (text === null) return;
    if (text === this.text) {
      if (this.cluster !== shared.cluster) await this.keep(text, shared.cluster);
      return;
    }
    try {
      parsePlan(text, `the plan of cluster ${shared.cluster}`);
    } catch (err) {
      this.logOnce(`the plan of cluster ${shared.cluster} is not used here: ${(err as Error).message}`);
      return;
    }
    // A plan of this node's own is kept beside the cluster's, never lost.
    if (this.text !== undefined && this.cluster === undefined) await fsp.copyFile(this.opts.planFile, `${this.opts.planFile}.local`);
    await this.keep(text, shared.cluster);
    this.opts.log(`the plan of cluster ${shared.cluster} runs here: jobs ${this.current().jobs.join(", ") || "none"} scheduled here`);
  }

  /**
   * Once per scheduler on a cluster: a job this node's history knows only since after the
   * cluster's copy did (the history was lost) takes the copy's clock, and every clock of this
   * node is copied to the cluster.
   */
  private async readClocks(shared: SharedPlan): Promise<void> {
    if (this.clocksRead || !this.scheduler || !this.mine) return;
    const theirs = await shared.readClocks().catch(() => undefined);
    if (!theirs) return;
    this.clocksRead = true;
    for (const { job } of this.mine.jobs) {
      const clock = theirs.get(job.name);
      if (clock && this.scheduler.adoptClock(job.name, clock)) {
        this.opts.log(`job ${job.name}: this node's history knew it only since now; its clock is the cluster's copy (scheduled since ${new Date(clock.since).toISOString()}, last due ${clock.lastDue === undefined ? "never" : new Date(clock.lastDue).toISOString()})`);
      }
      this.copyClock(shared, job.name, this.history.clock(job.name, Date.now()));
    }
  }

  /** Copies a job's clock to the cluster, one write at a time, the newest of each job. */
  private copyClock(shared: SharedPlan | undefined, job: string, clock: JobClock): void {
    if (!shared) return;
    this.clockCopies.set(job, clock);
    if (this.copying) return;
    this.copying = true;
    void (async () => {
      for (let next = this.clockCopies.entries().next(); !next.done; next = this.clockCopies.entries().next()) {
        const [name, c] = next.value;
        this.clockCopies.delete(name);
        await shared.writeClock(name, c).catch((err: unknown) => this.logOnce(`the clock of job ${name} was not copied to cluster ${shared.cluster}: ${(err as Error).message}`));
      }
      this.copying = false;
    })();
  }

  /** Logs a problem once, until it changes or goes. */
  private logOnce(line: string): void {
    if (line !== this.told) this.opts.log(line);
    this.told = line;
  }

  private use(text: string): void {
    const plan = parsePlan(text, `plan ${this.opts.planFile}`);
    this.plan = plan;
    this.text = text;
    this.clocksRead = false;
    this.mine = { ...plan, jobs: plan.jobs.filter(({ job }) => this.opts.kinds.includes(job.type)) };
    this.scheduler = new Scheduler({
      plan: this.mine,
      history: this.history,
      run: this.opts.runner(plan),
      // Copied only once the cluster's copy was read: a history that was lost must not overwrite it first.
      onClock: (job, clock) => this.clocksRead && this.copyClock(this.opts.shared?.(), job, clock),
      busy: () => {
        const l = plan.file.load;
        return busyReason(readLoad(os.availableParallelism()), { maxLoadPerCpu: l?.["max-load-per-cpu"], maxCpuPressure: l?.["max-cpu-pressure"], maxIoPressure: l?.["max-io-pressure"] });
      },
      notify: planNotifier(plan, this.opts.host, (job, results) => {
        for (const r of results) if (!r.ok) this.opts.log(`job ${job}: notification to ${r.target} failed: ${r.error}`);
      }),
    });
    this.scheduler.start(this.opts.tickMs ?? 1000);
  }

  /** Tells the plan's notification targets of an event that is no job's run (a guest recovered after a node was lost). */
  async tell(o: Pick<JobOutcome, "job" | "kind" | "result" | "start" | "end" | "message" | "log">): Promise<void> {
    if (this.text === undefined) return;
    const plan = parsePlan(this.text, `plan ${this.opts.planFile}`);
    await planNotifier(plan, this.opts.host, (job, results) => {
      for (const r of results) if (!r.ok) this.opts.log(`${job}: notification to ${r.target} failed: ${r.error}`);
    })({ ...o, due: o.start, runId: 0 });
  }

  async close(): Promise<void> {
    clearTimeout(this.poller);
    this.poller = undefined;
    await this.queue;
    await this.scheduler?.stop();
    this.history.close();
  }
}
