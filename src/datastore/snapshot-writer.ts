// One snapshot being written into a datastore, from the group lock to the manifest: the
// steps of docs/format.md section 5 ("Backup") in one place, for a local backup, a
// server's backup session and a sync alike.
//   open:   lock the group; choose the time and the base (locked shared); register in
//           .running/; mkdir the snapshot directory and lock it (shared) until the end
//   stage:  chunks that workers wrote to temp files, committed in batches (one syncfs,
//           the renames, their shard directories recorded for the directory sync)
//   writeIndex, then finish: the last batch, the directory sync, the manifest last
//   abort:  staged temp chunks, the snapshot directory and a group left empty go
import fs from "node:fs";
import fsp from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { type Manifest, encodeManifest } from "../format/manifest.ts";
import { type Group, type SnapshotRef, formatSnapshot, formatTime } from "../format/names.ts";
import type { ChunkPool } from "./chunk-pool.ts";
import type { ChunkStore, PendingChunk } from "./chunk-store.ts";
import { type Datastore, type Lock, MANIFEST_FILE, OWNER_FILE, type SnapshotInfo, latestUsable, lockDir } from "./datastore.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";

/** Staged chunks are committed in batches of this many files or (encoded) bytes. */
const COMMIT_FILES = 1024;
const COMMIT_BYTES = 64 * 1024 * 1024;

export interface SnapshotWriterOptions {
  ns: string[];
  group: Group;
  /**
   * Unix seconds; must be newer than the group's newest snapshot. Without it: now, or one
   * second after that snapshot (two backups within one second).
   */
  time?: number;
  /** A copy of another datastore's snapshot (sync): `time` is kept as given, no base is taken. */
  copy?: boolean;
  /** when the backup started (ms), for GC's cutoff; now by default */
  startedMs?: number;
  /**
   * Given for a new group: runs first, under the group lock (a server records the group's
   * owner there), and a snapshot that is not finished removes the group again, owner and all.
   */
  claimGroup?: () => Promise<void>;
}

/** A chunk a worker wrote to its temp file, and its encoded size. */
export interface StagedChunk {
  pending: PendingChunk;
  bytes: number;
}

export class SnapshotWriter {
  readonly store: Datastore;
  readonly ns: string[];
  readonly ref: SnapshotRef;
  /** the snapshot directory, invisible as a finished snapshot until the manifest is in it */
  readonly dir: string;
  /** the snapshot this one is incremental to: the group's newest usable one, locked shared */
  readonly base: SnapshotInfo | undefined;
  private staged: PendingChunk[] = [];
  private stagedBytes = 0;
  private readonly locks: Lock[];
  private readonly newGroup: boolean;
  private done = false;
  /** the commit of finish() under way: an abort waits for it instead of removing what it writes */
  private finishing: Promise<void> | undefined;

  private constructor(store: Datastore, init: { ns: string[]; ref: SnapshotRef; base: SnapshotInfo | undefined; locks: Lock[]; newGroup: boolean }) {
    this.store = store;
    this.ns = init.ns;
    this.ref = init.ref;
    this.dir = store.snapshotDir(init.ns, init.ref);
    this.base = init.base;
    this.locks = init.locks;
    this.newGroup = init.newGroup;
  }

  /** Locks the group, chooses the time and the base, creates the (unfinished) snapshot directory. */
  static async open(store: Datastore, o: SnapshotWriterOptions): Promise<SnapshotWriter> {
    const { ns, group } = o;
    const locks: Lock[] = [store.lockGroup(ns, group)];
    const newGroup = o.claimGroup !== undefined;
    let dir: string | undefined;
    let created = false;
    try {
      await o.claimGroup?.();
      const { time, base } = o.copy ? { time: o.time!, base: undefined } : await chooseTimeAndBase(store, o);
      if (base) locks.push(lockDir(base.dir, "sh", `snapshot ${formatSnapshot(base)}`));
      locks.push(store.registerBackup(o.startedMs ?? Date.now()));
      const ref: SnapshotRef = { ...group, time };
      const target = store.snapshotDir(ns, ref);
      if (o.copy) await removeUnfinishedCopy(target);
      dir = target;
      await fsp.mkdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "EEXIST") throw new GordeError("exists", `snapshot ${formatSnapshot(ref)} already exists.`);
        throw err;
      });
      created = true;
      // Held until the end: forget and prune cannot remove a snapshot being written.
      locks.push(lockDir(dir, "sh", `snapshot ${formatSnapshot(ref)}`));
      return new SnapshotWriter(store, { ns, ref, base, locks, newGroup });
    } catch (err) {
      try {
        if (created) await fsp.rm(dir!, { recursive: true, force: true });
        if (dir !== undefined || newGroup) await removeEmptyGroup(store.groupDir(ns, group), newGroup);
      } finally {
        release(locks);
      }
      throw err;
    }
  }

  get chunks(): ChunkStore {
    return this.store.chunks;
  }

  /**
   * Takes chunks that workers wrote to temp files; they get their names with the next
   * commit, which runs here once a batch is full (and at the latest in `finish`).
   */
  async stage(pool: ChunkPool, chunks: readonly StagedChunk[]): Promise<void> {
    for (const c of chunks) {
      this.staged.push(c.pending);
      this.stagedBytes += c.bytes;
    }
    if (this.staged.length >= COMMIT_FILES || this.stagedBytes >= COMMIT_BYTES) await this.commit(pool);
  }

  /**
   * Commits the staged chunks: one syncfs, then their names; the shard directories they
   * went into are recorded for the directory sync before the manifest.
   */
  async commit(pool: ChunkPool): Promise<void> {
    const batch = this.staged;
    if (batch.length === 0) return;
    this.staged = [];
    this.stagedBytes = 0;
    await pool.commit(batch);
    for (const c of batch) this.store.chunks.markWritten(path.dirname(c.final));
  }

  /** An index file of the snapshot, by atomic file write. */
  async writeIndex(file: string, bytes: Buffer): Promise<void> {
    await writeFileAtomic(path.join(this.dir, file), bytes);
  }

  /**
   * Commits what is still staged (through `pool`; none is needed when nothing is), makes
   * every chunk name durable, then writes the manifest: the snapshot is finished.
   */
  async finish(manifest: Manifest, pool?: ChunkPool): Promise<void> {
    if (this.done || this.finishing) throw new GordeError("usage", `snapshot ${formatSnapshot(this.ref)} is already finished or aborted.`);
    if (this.staged.length > 0 && !pool) throw new Error("staged chunks need a worker pool to be committed");
    this.finishing = (async () => {
      if (pool) await this.commit(pool);
      // Chunk files were made durable in batches; this makes their directory entries
      // durable before the manifest can name them.
      await this.store.chunks.sync();
      await writeFileAtomic(path.join(this.dir, MANIFEST_FILE), encodeManifest(manifest));
      this.done = true;
      release(this.locks);
    })();
    try {
      await this.finishing;
    } finally {
      // A failed finish leaves the snapshot to an abort (or to another try).
      if (!this.done) this.finishing = undefined;
    }
  }

  /** Removes everything of an unfinished snapshot; after a finish that got through, nothing. */
  async abort(): Promise<void> {
    // A finish that got this far completes (the snapshot is whole) or fails (then this cleans up).
    await this.finishing?.catch(() => undefined);
    if (this.done) return;
    this.done = true;
    // Chunks not yet named go too: on a full disk their space is what the next backup needs.
    const staged = this.staged;
    this.staged = [];
    this.stagedBytes = 0;
    try {
      await Promise.all(staged.map((c) => fsp.rm(c.tmp, { force: true })));
      await fsp.rm(this.dir, { recursive: true, force: true });
      // Still under the group lock: a backup starting next must not lose its directory.
      await removeEmptyGroup(this.store.groupDir(this.ns, this.ref), this.newGroup);
    } finally {
      // Even when removal failed (the next prune removes an unfinished snapshot): never a held group.
      release(this.locks);
    }
  }
}

/** The snapshot's time (see `SnapshotWriterOptions.time`) and its base, by the group's snapshots. */
async function chooseTimeAndBase(store: Datastore, o: SnapshotWriterOptions): Promise<{ time: number; base: SnapshotInfo | undefined }> {
  const existing = await store.listSnapshots(o.ns, o.group);
  const last = existing.at(-1);
  let time = o.time ?? Math.floor(Date.now() / 1000);
  if (last && time <= last.time) {
    if (o.time !== undefined) {
      throw new GordeError("usage", `snapshot time ${formatTime(time)} is not newer than the group's last snapshot ${formatTime(last.time)}.`);
    }
    time = last.time + 1; // two backups within one second
  }
  return { time, base: latestUsable(existing) };
}

/**
 * A group whose first backup failed leaves no directory behind: an empty one goes, and a
 * new group's also when it holds nothing but the owner this backup recorded.
 */
async function removeEmptyGroup(dir: string, newGroup: boolean): Promise<void> {
  if (!newGroup) {
    await fsp.rmdir(dir).catch(() => undefined);
    return;
  }
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  if (names.every((n) => n === OWNER_FILE || n.startsWith(".lock"))) {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function release(locks: Lock[]): void {
  for (const l of locks.reverse()) l.release();
  locks.length = 0;
}

/**
 * A copy's snapshot that a sync left unfinished when it died (no manifest) is removed, so
 * that the copy starts over instead of failing on it for ever. The caller holds the group's
 * lock: no backup or sync is writing it.
 */
async function removeUnfinishedCopy(dir: string): Promise<void> {
  if (!fs.existsSync(dir) || fs.existsSync(path.join(dir, MANIFEST_FILE))) return;
  const lock = lockDir(dir, "ex", `snapshot ${path.basename(dir)}`);
  try {
    const doomed = path.join(path.dirname(dir), `.removing-${path.basename(dir)}-${randomBytes(4).toString("hex")}`);
    await fsp.rename(dir, doomed);
    await fsp.rm(doomed, { recursive: true, force: true });
  } finally {
    lock.release();
  }
}
