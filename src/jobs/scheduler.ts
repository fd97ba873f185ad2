// The scheduler: on every tick it asks `decide` about each job of the plan, runs what is
// due (at most `maxParallel` at once), records every run and skip in the task history,
// keeps each job's clock there (so a restart knows what was due), and hands each outcome
// to `notify`. The clock, the node's load and the work itself are injected.
import type { Plan, PlanJob } from "../schedule/plan.ts";
import { nextElapse } from "../schedule/calendar-event.ts";
import { decide } from "../schedule/due.ts";
import { type NotifyResult, type NotifyTarget, notify, severityFor } from "./notify.ts";
import type { TaskHistory } from "./task-history.ts";

export interface RunOutcome {
  bytes?: number;
  newBytes?: number;
  reusedBytes?: number;
  message?: string;
}

/** Thrown by a runner for a run it cannot do now: recorded and told as skipped, not failed. */
export class RunSkipped extends Error {}

export type JobRunner = (job: PlanJob, ctx: { due: number; log: (line: string) => void; signal: AbortSignal }) => Promise<RunOutcome>;

export interface JobOutcome {
  job: string;
  kind: string;
  result: "ok" | "failed" | "skipped";
  start: number;
  end: number;
  message: string;
  due: number;
  runId: number;
  bytes?: number;
  newBytes?: number;
  reusedBytes?: number;
  log?: string;
}

export interface SchedulerOptions {
  plan: Plan;
  history: TaskHistory;
  run: JobRunner;
  now?: () => number;
  /** why the node is too busy to start a job now (undefined: it is not) */
  busy?: () => string | undefined;
  notify?: (o: JobOutcome) => Promise<void> | void;
  maxParallel?: number;
  tz?: "UTC" | "local";
  /** told each job's clock when it is read at the start and whenever it moves (a cluster keeps a copy) */
  onClock?: (job: string, clock: JobClock) => void;
}

/** A job's clock: since when it is scheduled, the elapse it last ran (or was skipped) for. */
export interface JobClock {
  since: number;
  lastDue?: number;
}

export class Scheduler {
  private readonly opts: SchedulerOptions;
  private readonly now: () => number;
  private readonly running = new Map<string, Promise<void>>();
  /** due elapses seen in time and waited on (a busy node): not missed ones */
  private readonly seen = new Map<string, number>();
  private readonly abort = new AbortController();
  /** each job's clock, read from the history once and written through */
  private readonly clocks = new Map<string, JobClock>();
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: SchedulerOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    // A run still marked running belongs to a process that is gone.
    opts.history.markInterrupted(this.now());
    // Every job's clock is read (and a new job's written) now: an idle tick touches no file.
    for (const { job } of opts.plan.jobs) {
      const clock = opts.history.clock(job.name, this.now());
      this.clocks.set(job.name, clock);
      opts.onClock?.(job.name, { ...clock });
    }
  }

  /**
   * Takes the clock a copy kept elsewhere has of a job, when this host's history knows the
   * job only since after that copy did and never ran it (the history was lost): so a
   * missed elapse is seen as missed. Answers whether it took it.
   */
  adoptClock(job: string, theirs: JobClock): boolean {
    const clock = this.clocks.get(job);
    if (!clock || clock.lastDue !== undefined || theirs.since >= clock.since || this.running.has(job)) return false;
    clock.since = theirs.since;
    clock.lastDue = theirs.lastDue;
    this.opts.history.setClock(job, clock);
    this.opts.onClock?.(job, { ...clock });
    return true;
  }

  /**
   * One pass over the plan: records what is skipped, then starts what is due, the longest due
   * first while slots are free. Taken in plan order instead, a job whose runs outlast its
   * interval would be due again at every free slot and keep a later job waiting for ever.
   */
  async tick(): Promise<void> {
    const { history, plan } = this.opts;
    const ready: { job: PlanJob; due: number; missed: boolean; firstDue: number }[] = [];
    for (const { job, event, window } of plan.jobs) {
      const now = this.now();
      const stored = this.clocks.get(job.name)!;
      if (this.running.has(job.name)) {
        // An elapse that goes by while the job still runs is seen, not missed: one run right after covers it.
        const next = nextElapse(event, new Date(stored.lastDue ?? stored.since), this.opts.tz)?.getTime();
        if (!this.seen.has(job.name) && next !== undefined && next <= now) this.seen.set(job.name, next);
        continue;
      }
      const firstDue = nextElapse(event, new Date(stored.lastDue ?? stored.since), this.opts.tz)?.getTime();
      const clock = { ...stored, seen: this.seen.get(job.name) };
      const d = decide({ name: job.name, event, window, repeatMissed: job["repeat-missed"] }, clock, now, this.opts.busy?.(), this.opts.tz);
      if (d.action === "idle") continue;
      if (d.action === "run") {
        ready.push({ job, due: d.due, missed: d.missed, firstDue: firstDue ?? d.due });
        continue;
      }
      if (d.action === "wait") {
        this.seen.set(job.name, d.due);
        continue;
      }
      this.seen.delete(job.name);
      this.setLastDue(job.name, d.due);
      const id = history.begin({ job: job.name, kind: job.type, start: now });
      history.finish(id, { end: now, result: "skipped", error: d.reason, log: `skipped: ${d.reason}\n` });
      await this.opts.notify?.({ job: job.name, kind: job.type, result: "skipped", start: now, end: now, message: d.reason, due: d.due, runId: id });
    }
    ready.sort((a, b) => a.firstDue - b.firstDue);
    for (const { job, due, missed, firstDue } of ready) {
      if (this.running.size >= (this.opts.maxParallel ?? 1)) {
        // No slot now: the job stays due (its clock untouched, its elapse seen) and is looked at again next tick.
        this.seen.set(job.name, firstDue);
        continue;
      }
      this.seen.delete(job.name);
      this.setLastDue(job.name, due);
      const p = this.runOne(job, due, missed).finally(() => this.running.delete(job.name));
      this.running.set(job.name, p);
    }
  }

  private setLastDue(job: string, due: number): void {
    const clock = this.clocks.get(job)!;
    clock.lastDue = due;
    this.opts.history.setLastDue(job, due);
    this.opts.onClock?.(job, { ...clock });
  }

  /** Resolves when no job is running. */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running.values()]);
  }

  private async runOne(job: PlanJob, due: number, missed: boolean): Promise<void> {
    const { history } = this.opts;
    const start = this.now();
    const id = history.begin({ job: job.name, kind: job.type, start });
    const log: string[] = [];
    const say = (line: string): void => void log.push(`${new Date(this.now()).toISOString()} ${line}`);
    // The elapse a run is for, not its start (a tick, a busy node or a long previous run delays it), tells one run per elapse.
    say(missed ? `a missed run (due ${new Date(due).toISOString()}), taken now: repeat-missed is on` : `due ${new Date(due).toISOString()}`);
    let outcome: JobOutcome;
    try {
      const r = await this.opts.run(job, { due, log: say, signal: this.abort.signal });
      const end = this.now();
      history.finish(id, { end, result: "ok", bytes: r.bytes, newBytes: r.newBytes, reusedBytes: r.reusedBytes, log: log.join("\n") + "\n" });
      outcome = { job: job.name, kind: job.type, result: "ok", start, end, message: r.message ?? "ok", due, runId: id, bytes: r.bytes, newBytes: r.newBytes, reusedBytes: r.reusedBytes, log: log.join("\n") };
    } catch (err) {
      const end = this.now();
      const message = (err as Error).message;
      const result = err instanceof RunSkipped ? "skipped" : "failed";
      say(`${result}: ${message}`);
      history.finish(id, { end, result, error: message, log: log.join("\n") + "\n" });
      outcome = { job: job.name, kind: job.type, result, start, end, message, due, runId: id, log: log.join("\n") };
    }
    try {
      await this.opts.notify?.(outcome);
    } catch {
      // A notification that cannot be sent does not change the run's result.
    }
  }

  /** Ticks every `intervalMs` until `stop`. */
  start(intervalMs = 1000): void {
    const loop = (): void => {
      this.timer = setTimeout(() => {
        void this.tick().finally(() => {
          if (!this.abort.signal.aborted) loop();
        });
      }, intervalMs);
    };
    loop();
  }

  /** Stops ticking and asks running jobs to stop; resolves when they have. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.abort.abort();
    await Promise.allSettled([...this.running.values()]);
  }
}

/**
 * The plan's notifications as a scheduler's `notify`: each outcome to the targets its
 * matchers select (a mail password comes from the environment variable the plan names).
 */
export function planNotifier(plan: Plan, node: string | undefined, report: (job: string, results: NotifyResult[]) => void = () => undefined): (o: JobOutcome) => Promise<void> {
  const n = plan.file.notifications;
  if (!n) return () => Promise.resolve();
  const targets: NotifyTarget[] = n.targets.map((t) =>
    t.type === "webhook"
      ? { type: "webhook", name: t.name, url: t.url, headers: t.headers }
      : {
          type: "smtp",
          name: t.name,
          host: t.host,
          port: t.port,
          secure: t.secure,
          starttls: t.starttls,
          user: t.user,
          password: t["password-env"] ? process.env[t["password-env"]] : undefined,
          from: t.from,
          to: t.to,
        },
  );
  const matchers = (n.matchers ?? []).map((m) => ({ target: m.target, minSeverity: m["min-severity"], jobs: m.jobs, results: m.results }));
  return async (o) => {
    const results = await notify(
      { job: o.job, kind: o.kind, result: o.result, severity: severityFor(o.result), start: o.start, end: o.end, message: o.message, node, bytes: o.bytes, newBytes: o.newBytes, reusedBytes: o.reusedBytes, log: o.log },
      targets,
      matchers,
    );
    report(o.job, results);
  };
}
