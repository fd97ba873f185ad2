// The history of job runs (backup, prune, GC, verify, sync, drill) in an embedded SQLite
// database: start, end, bytes, new and reused, result, log. A run still marked running when
// the process starts again was cut off: it is recorded failed ("interrupted"), never left
// running forever. Old runs are pruned by age.
import type { DatabaseSync } from "node:sqlite";
import { GordeError } from "../errors.ts";
import { openHistoryDb } from "./history-db.ts";

export type RunResult = "running" | "ok" | "failed" | "skipped";

export interface TaskRun {
  id: number;
  job: string;
  kind: string;
  target: string | null;
  /** unix milliseconds */
  start: number;
  end: number | null;
  result: RunResult;
  error: string | null;
  bytes: number | null;
  newBytes: number | null;
  reusedBytes: number | null;
  log: string;
}

const SCHEMA_VERSION = 1;
/** a run's log is kept up to this many characters (its end, where the outcome is) */
const MAX_LOG = 256 * 1024;

export class TaskHistory {
  private readonly db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.db = db;
  }

  /** Opens (or creates) the database at `file`. */
  static open(file: string): TaskHistory {
    const db = openHistoryDb(file, "task history", SCHEMA_VERSION, `CREATE TABLE IF NOT EXISTS runs (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          job TEXT NOT NULL, kind TEXT NOT NULL, target TEXT,
          start INTEGER NOT NULL, "end" INTEGER,
          result TEXT NOT NULL CHECK (result IN ('running', 'ok', 'failed', 'skipped')),
          error TEXT, bytes INTEGER, new_bytes INTEGER, reused_bytes INTEGER,
          log TEXT NOT NULL DEFAULT '');
          CREATE INDEX IF NOT EXISTS runs_job_start ON runs (job, start);`);
    db.exec("CREATE TABLE IF NOT EXISTS job_clock (job TEXT PRIMARY KEY, since INTEGER NOT NULL, last_due INTEGER)");
    return new TaskHistory(db);
  }

  /** Records the start of a run; its id finishes it. */
  begin(run: { job: string; kind: string; target?: string; start: number }): number {
    const r = this.db.prepare("INSERT INTO runs (job, kind, target, start, result) VALUES (?, ?, ?, ?, 'running')").run(run.job, run.kind, run.target ?? null, run.start);
    return Number(r.lastInsertRowid);
  }

  finish(id: number, outcome: { end: number; result: Exclude<RunResult, "running">; error?: string; bytes?: number; newBytes?: number; reusedBytes?: number; log?: string }): void {
    const log = (outcome.log ?? "").slice(-MAX_LOG);
    const r = this.db
      .prepare(`UPDATE runs SET "end" = ?, result = ?, error = ?, bytes = ?, new_bytes = ?, reused_bytes = ?, log = ? WHERE id = ? AND result = 'running'`)
      .run(outcome.end, outcome.result, outcome.error ?? null, outcome.bytes ?? null, outcome.newBytes ?? null, outcome.reusedBytes ?? null, log, id);
    if (r.changes !== 1) throw new GordeError("not-found", `no running task run ${id} in the history.`);
  }

  /** Runs left running by a process that is gone: failed, "interrupted". Returns how many. */
  markInterrupted(now: number): number {
    const r = this.db.prepare(`UPDATE runs SET result = 'failed', "end" = ?, error = 'interrupted: the process running it stopped' WHERE result = 'running'`).run(now);
    return Number(r.changes);
  }

  list(opts: { job?: string; limit?: number } = {}): TaskRun[] {
    const limit = Math.min(Math.max(1, opts.limit ?? 100), 10_000);
    const rows = (
      opts.job === undefined
        ? this.db.prepare("SELECT * FROM runs ORDER BY start DESC, id DESC LIMIT ?").all(limit)
        : this.db.prepare("SELECT * FROM runs WHERE job = ? ORDER BY start DESC, id DESC LIMIT ?").all(opts.job, limit)
    ) as Record<string, unknown>[];
    return rows.map(toRun);
  }

  /** The newest run of a job that ended with `result` (any ended run when absent). */
  last(job: string, result?: Exclude<RunResult, "running">): TaskRun | undefined {
    const row =
      result === undefined
        ? this.db.prepare(`SELECT * FROM runs WHERE job = ? AND result != 'running' ORDER BY start DESC, id DESC LIMIT 1`).get(job)
        : this.db.prepare("SELECT * FROM runs WHERE job = ? AND result = ? ORDER BY start DESC, id DESC LIMIT 1").get(job, result);
    return row ? toRun(row as Record<string, unknown>) : undefined;
  }

  /** Removes ended runs that started before `before` (unix ms); returns how many. */
  prune(before: number): number {
    return Number(this.db.prepare("DELETE FROM runs WHERE start < ? AND result != 'running'").run(before).changes);
  }

  /** The scheduler's clock of a job: since when it is scheduled, the elapse it was last due at. */
  clock(job: string, now: number): { since: number; lastDue?: number } {
    let r = this.db.prepare("SELECT since, last_due FROM job_clock WHERE job = ?").get(job) as { since: number; last_due: number | null } | undefined;
    if (!r) {
      this.db.prepare("INSERT INTO job_clock (job, since) VALUES (?, ?)").run(job, now);
      r = { since: now, last_due: null };
    }
    return { since: Number(r.since), ...(r.last_due === null ? {} : { lastDue: Number(r.last_due) }) };
  }

  setLastDue(job: string, due: number): void {
    this.db.prepare("UPDATE job_clock SET last_due = ? WHERE job = ?").run(due, job);
  }

  /** Sets a job's whole clock (one kept elsewhere, when this history lost its own). */
  setClock(job: string, clock: { since: number; lastDue?: number }): void {
    this.db.prepare("INSERT INTO job_clock (job, since, last_due) VALUES (?, ?, ?) ON CONFLICT (job) DO UPDATE SET since = excluded.since, last_due = excluded.last_due").run(job, clock.since, clock.lastDue ?? null);
  }

  close(): void {
    this.db.close();
  }
}

function toRun(r: Record<string, unknown>): TaskRun {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  return {
    id: Number(r.id),
    job: String(r.job),
    kind: String(r.kind),
    target: (r.target as string | null) ?? null,
    start: Number(r.start),
    end: num(r.end),
    result: r.result as RunResult,
    error: (r.error as string | null) ?? null,
    bytes: num(r.bytes),
    newBytes: num(r.new_bytes),
    reusedBytes: num(r.reused_bytes),
    log: String(r.log),
  };
}
