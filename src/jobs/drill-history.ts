// The history of a node's restore drills in an embedded SQLite database, kept as job runs
// are: the guest and snapshot, the snapshot's age at the drill (RPO), each check with its
// result, time and message, the times from the drill's start to restored, to booted and to
// every probe passing (RTO), the bytes restored, and the result with the failing check. A
// drill still marked running when the node starts again was cut off: it is recorded as an
// error ("interrupted"), never left running forever. Old drills are pruned by age.
import type { DatabaseSync } from "node:sqlite";
import type { DrillCheck, DrillRecord } from "../api/node-routes.ts";
import { GordeError } from "../errors.ts";
import { openHistoryDb } from "./history-db.ts";

const SCHEMA_VERSION = 1;
/** a drill's log is kept up to this many characters (its end, where the outcome is) */
const MAX_LOG = 256 * 1024;
export const INTERRUPTED_DRILL = "interrupted: the node stopped during the drill.";

export type DrillOutcome = Pick<DrillRecord, "end" | "result" | "failedCheck" | "error" | "checks" | "log"> &
  Partial<Pick<DrillRecord, "snapshot" | "sandbox" | "rpoSeconds" | "restoredSeconds" | "bootedSeconds" | "rtoSeconds" | "bytesRestored">>;

export class DrillHistory {
  private readonly db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.db = db;
  }

  static open(file: string): DrillHistory {
    const db = openHistoryDb(file, "drill history", SCHEMA_VERSION, `CREATE TABLE IF NOT EXISTS drills (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          guest INTEGER NOT NULL, snapshot TEXT, node TEXT NOT NULL, sandbox INTEGER, job TEXT,
          start INTEGER NOT NULL, "end" INTEGER,
          rpo_s REAL, restored_s REAL, booted_s REAL, rto_s REAL, bytes_restored INTEGER,
          result TEXT NOT NULL CHECK (result IN ('running', 'passed', 'failed', 'error')),
          failed_check TEXT, error TEXT,
          checks TEXT NOT NULL DEFAULT '[]', log TEXT NOT NULL DEFAULT '');
          CREATE INDEX IF NOT EXISTS drills_guest_start ON drills (guest, start);`);
    return new DrillHistory(db);
  }

  /** Records the start of a drill; its id finishes it. */
  begin(d: { guest: number; node: string; start: number; snapshot?: string; job?: string }): number {
    const r = this.db
      .prepare("INSERT INTO drills (guest, snapshot, node, job, start, result) VALUES (?, ?, ?, ?, ?, 'running')")
      .run(d.guest, d.snapshot ?? null, d.node, d.job ?? null, d.start);
    return Number(r.lastInsertRowid);
  }

  finish(id: number, o: DrillOutcome): void {
    if (o.result === "running") throw new GordeError("usage", "a drill finishes passed, failed or error.");
    const r = this.db
      .prepare(
        `UPDATE drills SET "end" = ?, result = ?, failed_check = ?, error = ?, checks = ?, log = ?,
           snapshot = coalesce(?, snapshot), sandbox = coalesce(?, sandbox), rpo_s = ?, restored_s = ?, booted_s = ?, rto_s = ?, bytes_restored = ?
         WHERE id = ? AND result = 'running'`,
      )
      .run(
        o.end,
        o.result,
        o.failedCheck,
        o.error,
        JSON.stringify(o.checks),
        o.log.slice(-MAX_LOG),
        o.snapshot ?? null,
        o.sandbox ?? null,
        o.rpoSeconds ?? null,
        o.restoredSeconds ?? null,
        o.bootedSeconds ?? null,
        o.rtoSeconds ?? null,
        o.bytesRestored ?? null,
        id,
      );
    if (r.changes !== 1) throw new GordeError("not-found", `no running drill ${id} in the history.`);
  }

  /** Drills left running by a node that stopped: errors, "interrupted". Returns how many. */
  markInterrupted(now: number): number {
    const r = this.db.prepare(`UPDATE drills SET result = 'error', "end" = ?, error = ? WHERE result = 'running'`).run(now, INTERRUPTED_DRILL);
    return Number(r.changes);
  }

  get(id: number): DrillRecord | undefined {
    const row = this.db.prepare("SELECT * FROM drills WHERE id = ?").get(id);
    return row ? toRecord(row as Record<string, unknown>) : undefined;
  }

  /** Newest first. */
  list(opts: { guest?: number; limit?: number } = {}): DrillRecord[] {
    const limit = Math.min(Math.max(1, opts.limit ?? 100), 10_000);
    const rows = (
      opts.guest === undefined
        ? this.db.prepare("SELECT * FROM drills ORDER BY start DESC, id DESC LIMIT ?").all(limit)
        : this.db.prepare("SELECT * FROM drills WHERE guest = ? ORDER BY start DESC, id DESC LIMIT ?").all(opts.guest, limit)
    ) as Record<string, unknown>[];
    return rows.map(toRecord);
  }

  /** Removes ended drills that started before `before` (unix ms); returns how many. */
  prune(before: number): number {
    return Number(this.db.prepare("DELETE FROM drills WHERE start < ? AND result != 'running'").run(before).changes);
  }

  close(): void {
    this.db.close();
  }
}

function toRecord(r: Record<string, unknown>): DrillRecord {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
  return {
    id: Number(r.id),
    guest: Number(r.guest),
    snapshot: str(r.snapshot),
    node: String(r.node),
    sandbox: num(r.sandbox),
    job: str(r.job),
    start: Number(r.start),
    end: num(r.end),
    rpoSeconds: num(r.rpo_s),
    restoredSeconds: num(r.restored_s),
    bootedSeconds: num(r.booted_s),
    rtoSeconds: num(r.rto_s),
    bytesRestored: num(r.bytes_restored),
    result: r.result as DrillRecord["result"],
    failedCheck: str(r.failed_check),
    error: str(r.error),
    checks: JSON.parse(String(r.checks)) as DrillCheck[],
    log: String(r.log),
  };
}
