// A datastore's usage over time, as PBS keeps its RRD data: sampled every few minutes into
// an embedded SQLite table bounded per datastore (the oldest samples go first), for the
// web interface's charts of used space and dedup factor.
import type { DatabaseSync } from "node:sqlite";
import { openHistoryDb } from "./history-db.ts";

const SCHEMA_VERSION = 1;
/** Samples kept per datastore: 30 days at one every 5 minutes. */
export const MAX_SAMPLES = 8640;

export interface UsageSample {
  /** unix seconds */
  time: number;
  used: number;
  total: number;
  logicalBytes: number;
  chunkBytes: number;
  dedupFactor: number;
}

export class UsageHistory {
  private readonly db: DatabaseSync;
  private readonly max: number;

  private constructor(db: DatabaseSync, max: number) {
    this.db = db;
    this.max = max;
  }

  static open(file: string, max = MAX_SAMPLES): UsageHistory {
    const db = openHistoryDb(file, "usage history", SCHEMA_VERSION, `CREATE TABLE IF NOT EXISTS usage (
          store TEXT NOT NULL, time INTEGER NOT NULL, used INTEGER NOT NULL, total INTEGER NOT NULL,
          logical INTEGER NOT NULL, stored INTEGER NOT NULL, dedup REAL NOT NULL, PRIMARY KEY (store, time));`);
    return new UsageHistory(db, max);
  }

  add(store: string, s: UsageSample): void {
    this.db.prepare("INSERT OR REPLACE INTO usage (store, time, used, total, logical, stored, dedup) VALUES (?, ?, ?, ?, ?, ?, ?)").run(store, s.time, s.used, s.total, s.logicalBytes, s.chunkBytes, s.dedupFactor);
    this.db.prepare("DELETE FROM usage WHERE store = ? AND time <= (SELECT time FROM usage WHERE store = ? ORDER BY time DESC LIMIT 1 OFFSET ?)").run(store, store, this.max);
  }

  /** The samples of a datastore, oldest first. */
  list(store: string): UsageSample[] {
    const rows = this.db.prepare("SELECT time, used, total, logical, stored, dedup FROM usage WHERE store = ? ORDER BY time").all(store) as {
      time: number;
      used: number;
      total: number;
      logical: number;
      stored: number;
      dedup: number;
    }[];
    return rows.map((r) => ({ time: r.time, used: r.used, total: r.total, logicalBytes: r.logical, chunkBytes: r.stored, dedupFactor: r.dedup }));
  }

  close(): void {
    this.db.close();
  }
}
