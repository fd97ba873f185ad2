// A host's share of the plan: the plan as last applied (kept in a file), the job history,
// and the scheduler that carries out the jobs of the kinds this host runs (backups on a
// node; prune, GC, verify and sync on the backup server).
import fsp from "node:fs/promises";
import os from "node:os";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { type Plan, type PlanJob, parsePlan } from "../schedule/plan.ts";
import { busyReason, readLoad } from "../schedule/window.ts";
import { type JobOutcome, type JobRunner, Scheduler, planNotifier } from "./scheduler.ts";
import { TaskHistory } from "./task-history.ts";

/** Job runs older than this leave the history. */
const HISTORY_DAYS = 90;

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
}

export class PlanRunner {
  readonly history: TaskHistory;
  private readonly opts: PlanRunnerOptions;
  private scheduler: Scheduler | undefined;
  private text: string | undefined;
  private mine: Plan | undefined;

  private constructor(opts: PlanRunnerOptions) {
    this.opts = opts;
    this.history = TaskHistory.open(opts.historyFile);
  }

  static async open(opts: PlanRunnerOptions): Promise<PlanRunner> {
    const r = new PlanRunner(opts);
    r.history.prune(Date.now() - HISTORY_DAYS * 86_400_000);
    const text = await fsp.readFile(opts.planFile, "utf8").catch(() => undefined);
    if (text !== undefined) r.use(text);
    return r;
  }

  /** The plan's text as last applied and the jobs this host runs. */
  current(): { text: string | null; jobs: string[] } {
    return { text: this.text ?? null, jobs: this.mine?.jobs.map(({ job }) => job.name) ?? [] };
  }

  /** Checks and keeps a new plan (nothing changes when it is refused), then schedules it. */
  async apply(text: string): Promise<void> {
    parsePlan(text, "plan");
    await writeFileAtomic(this.opts.planFile, Buffer.from(text), { mode: 0o600 });
    await this.scheduler?.stop();
    this.use(text);
    this.opts.log(`plan applied: jobs ${this.current().jobs.join(", ") || "none"} scheduled here`);
  }

  private use(text: string): void {
    const plan = parsePlan(text, `plan ${this.opts.planFile}`);
    this.text = text;
    this.mine = { ...plan, jobs: plan.jobs.filter(({ job }) => this.opts.kinds.includes(job.type)) };
    this.scheduler = new Scheduler({
      plan: this.mine,
      history: this.history,
      run: this.opts.runner(plan),
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
    await this.scheduler?.stop();
    this.history.close();
  }
}
