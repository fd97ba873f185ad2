// The datastore's long operations as tasks: garbage collection, verify and sync, asked
// for over the API or run by the plan's jobs.
import type { SyncResult } from "../api/routes.ts";
import { GordeError } from "../errors.ts";
import type { SnapshotInfo } from "../datastore/datastore.ts";
import { type GcResult, garbageCollect } from "../datastore/gc.ts";
import { type VerifyReport, verifyAll, verifySnapshots } from "../datastore/verify.ts";
import { type StartedTask, throttledProgress } from "../host/tasks.ts";
import type { Remote } from "./remotes.ts";
import type { ServerContext, StoreEntry } from "./server-context.ts";
import { syncDatastore } from "./sync.ts";

export interface LongTasks {
  startGc(authId: string, e: StoreEntry, cutoffMs: number | undefined): StartedTask<GcResult>;
  startVerify(authId: string, e: StoreEntry, v: { ns: string[]; snaps?: SnapshotInfo[]; target?: string; outdatedDays?: number }): StartedTask<VerifyReport>;
  startSync(authId: string, e: StoreEntry, b: { remote: Remote; ns: string[]; groups?: string[]; last?: number }): StartedTask<SyncResult>;
}

export function longTasks(ctx: ServerContext): LongTasks {
  const { tasks, poolOf } = ctx;
  const startGc = (authId: string, e: StoreEntry, cutoffMs: number | undefined) =>
    tasks.start({ type: "gc", authId, store: e.name }, async (task) => {
      const r = await garbageCollect(e.store, { cutoffMs, signal: task.signal, progress: throttledProgress(task) });
      task.log(`removed ${r.removedChunks} chunks (${r.removedBytes} bytes), ${r.pendingChunks} pending, dedup factor ${r.dedupFactor.toFixed(2)}`);
      for (const w of r.warnings) task.log(`warning: ${w}`);
      return r;
    });
  const startVerify = (authId: string, e: StoreEntry, v: { ns: string[]; snaps?: SnapshotInfo[]; target?: string; outdatedDays?: number }) =>
    tasks.start({ type: "verify", authId, store: e.name, target: v.target }, async (task) => {
      const progress = throttledProgress(task);
      const pool = await poolOf(e);
      const r = v.snaps
        ? await verifySnapshots(e.store, v.snaps, { pool, signal: task.signal, progress })
        : await verifyAll(e.store, { ns: v.ns, pool, signal: task.signal, progress, skipVerifiedWithinDays: v.outdatedDays });
      for (const s of r.snapshots) task.log(`${s.snapshot}: ${s.state}${s.errors.length ? ` (${s.errors.join("; ")})` : ""}`);
      if (!r.ok) throw new GordeError("corrupt", `verification found damage: ${r.badChunks.length} bad and ${r.missingChunks.length} missing chunks.`);
      return r;
    });
  const startSync = (authId: string, e: StoreEntry, b: { remote: Remote; ns: string[]; groups?: string[]; last?: number }) =>
    tasks.start({ type: "sync", authId, store: e.name, target: `remote ${b.remote.name}` }, (task) => syncDatastore({ ...b, store: e.store, pool: () => poolOf(e), owner: authId, task }));
  return { startGc, startVerify, startSync };
}
