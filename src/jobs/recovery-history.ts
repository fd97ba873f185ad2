// The guests a node brought back from backup after another node was lost, in an embedded
// SQLite database as its drills are: which guest, from which node, the snapshot used and its
// age at the failure (RPO), the time from the failure to its checks passing (RTO) split into
// detection, fence wait, restore and boot, the result and the log. A recovery still marked
// running when the node starts again was cut off and is recorded as failed.
import type { DatabaseSync } from "node:sqlite";
import type { Recovery } from "../api/ha-routes.ts";
import { GordeError } from "../errors.ts";
import { openHistoryDb } from "./history-db.ts";

const SCHEMA_VERSION = 1;
const MAX_LOG = 256 * 1024;
export const INTERRUPTED_RECOVERY = "interrupted: the node stopped during the recovery.";

export type RecoveryOutcome = Pick<Recovery, "end" | "result" | "error" | "log"> &
  Partial<Pick<Recovery, "snapshot" | "rpoSeconds" | "rtoSeconds" | "detectSeconds" | "fenceSeconds" | "restoreSeconds" | "bootSeconds">>;

export class RecoveryHistory {
  private readonly db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.db = db;
  }

  static open(file: string): RecoveryHistory {
    const db = openHistoryDb(file, "recovery history", SCHEMA_VERSION, `CREATE TABLE IF NOT EXISTS recoveries (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          guest INTEGER NOT NULL, sid TEXT NOT NULL, "from" TEXT NOT NULL, node TEXT NOT NULL, snapshot TEXT,
          failed_at INTEGER NOT NULL, "end" INTEGER,
          result TEXT NOT NULL CHECK (result IN ('running', 'recovered', 'failed')), error TEXT,
          rpo_s REAL, rto_s REAL, detect_s REAL, fence_s REAL, restore_s REAL, boot_s REAL,
          log TEXT NOT NULL DEFAULT '');
          CREATE INDEX IF NOT EXISTS recoveries_guest ON recoveries (guest, failed_at);`);
    const h = new RecoveryHistory(db);
    db.prepare(`UPDATE recoveries SET result = 'failed', "end" = ?, error = ? WHERE result = 'running'`).run(Date.now(), INTERRUPTED_RECOVERY);
    return h;
  }

  begin(r: { guest: number; sid: string; from: string; node: string; failedAt: number }): number {
    const row = this.db.prepare(`INSERT INTO recoveries (guest, sid, "from", node, failed_at, result) VALUES (?, ?, ?, ?, ?, 'running')`).run(r.guest, r.sid, r.from, r.node, r.failedAt);
    return Number(row.lastInsertRowid);
  }

  finish(id: number, o: RecoveryOutcome): void {
    if (o.result === "running") throw new GordeError("usage", "a recovery finishes recovered or failed.");
    const r = this.db
      .prepare(
        `UPDATE recoveries SET "end" = ?, result = ?, error = ?, log = ?, snapshot = coalesce(?, snapshot),
           rpo_s = ?, rto_s = ?, detect_s = ?, fence_s = ?, restore_s = ?, boot_s = ? WHERE id = ? AND result = 'running'`,
      )
      .run(
        o.end,
        o.result,
        o.error,
        o.log.slice(-MAX_LOG),
        o.snapshot ?? null,
        o.rpoSeconds ?? null,
        o.rtoSeconds ?? null,
        o.detectSeconds ?? null,
        o.fenceSeconds ?? null,
        o.restoreSeconds ?? null,
        o.bootSeconds ?? null,
        id,
      );
    if (r.changes !== 1) throw new GordeError("not-found", `no running recovery ${id} in the history.`);
  }

  /** Newest first. */
  list(limit = 100): Recovery[] {
    const rows = this.db.prepare("SELECT * FROM recoveries ORDER BY failed_at DESC, id DESC LIMIT ?").all(Math.min(Math.max(1, limit), 10_000)) as Record<string, unknown>[];
    return rows.map(toRecovery);
  }

  close(): void {
    this.db.close();
  }
}

function toRecovery(r: Record<string, unknown>): Recovery {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
  return {
    id: Number(r.id),
    guest: Number(r.guest),
    sid: String(r.sid),
    from: String(r.from),
    node: String(r.node),
    snapshot: str(r.snapshot),
    result: r.result as Recovery["result"],
    error: str(r.error),
    failedAt: Number(r.failed_at),
    end: num(r.end),
    rpoSeconds: num(r.rpo_s),
    rtoSeconds: num(r.rto_s),
    detectSeconds: num(r.detect_s),
    fenceSeconds: num(r.fence_s),
    restoreSeconds: num(r.restore_s),
    bootSeconds: num(r.boot_s),
    log: String(r.log),
  };
}
