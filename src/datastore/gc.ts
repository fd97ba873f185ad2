// Garbage collection: removes chunks no index references any more, in two phases as
// Proxmox Backup Server does (docs/format.md, "Garbage collection").
//
// 1. Mark: every index file of every snapshot (finished or not, in every namespace) is
//    decoded and each chunk it references gets its atime set to now. An index that
//    cannot be read stops the collection: with the mark incomplete nothing may be swept.
// 2. Sweep: a chunk whose atime is older than the cutoff is removed. The cutoff is the
//    start of the mark minus `cutoffMs`, and no later than 5 minutes before the start of
//    the oldest backup still running: a backup touches every existing chunk it reuses
//    (under a shared lock on .chunks/.sweep.lock, which the sweep holds exclusively one
//    shard at a time) and writes new ones with a fresh atime, so whatever a running
//    backup relies on is newer than the cutoff.
//
// Chunks this collection marked are never removed, whatever their atime says. `.bad`
// files (chunks a verification found corrupt) stay while their chunk is referenced and
// missing, so the data is kept until a backup stores the chunk anew.
import { DIGEST_SIZE, DYNAMIC_ENTRY_SIZE, MAX_INDEX_FILE_SIZE, SHARD_HEX } from "../format/magic.ts";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { GordeError } from "../errors.ts";
import { decodeDynamicIndex } from "../format/dynamic-index.ts";
import { decodeFixedIndex } from "../format/fixed-index.ts";
import { BACKUP_TYPES } from "../format/names.ts";
import { flock } from "../sys/posix.ts";
import type { Datastore } from "./datastore.ts";
import { readRegularFile } from "../sys/bounded-read.ts";

/** Default age below which an unreferenced chunk is kept: 24 h 5 min, as PBS. */
export const DEFAULT_GC_CUTOFF_MS = (24 * 60 + 5) * 60 * 1000;
/** How far before the start of the oldest running backup the cutoff is moved. */
export const RUNNING_BACKUP_MARGIN_MS = 5 * 60 * 1000;
/** Names of the lock files GC uses. */
export const GC_LOCK_FILE = ".gc.lock";
export const SWEEP_LOCK_FILE = ".sweep.lock";
/** `<hex>.<n>.bad`: n runs from 0 to MAX_BAD_INDEX (verify reuses the last one). */
export const MAX_BAD_INDEX = 9;

const HEX64 = /^[0-9a-f]{64}$/;
const SHARD = new RegExp(`^[0-9a-f]{${SHARD_HEX}}$`);
const BAD = /^[0-9a-f]{64}\.\d+\.bad$/;
const MAX_WARNINGS = 100;
const YIELD_EVERY = 4096;

export interface GcProgress {
  phase: "mark" | "sweep";
  /** index files (mark) or chunk shards (sweep) processed so far, of `total` */
  done: number;
  total: number;
}

export interface GcOptions {
  /** unreferenced chunks used less than this long ago are kept (default 24 h 5 min) */
  cutoffMs?: number;
  signal?: AbortSignal;
  progress?: (e: GcProgress) => void;
}

export interface GcResult {
  /** index files read in the mark phase */
  indexFiles: number;
  /** distinct chunks the indexes reference and the store holds */
  markedChunks: number;
  /** distinct chunks the indexes reference that the store lacks */
  missingChunks: number;
  removedChunks: number;
  /** disk bytes freed: removed chunks, `.bad` and temporary files */
  removedBytes: number;
  removedBad: number;
  removedTmp: number;
  /** unreferenced chunks kept because they were used after the cutoff */
  pendingChunks: number;
  pendingBytes: number;
  /** referenced chunks (disk bytes) */
  keptChunks: number;
  keptBytes: number;
  /** plain bytes the indexes describe (image sizes and stream sizes) */
  logicalBytes: number;
  /** logicalBytes / keptBytes (1 when nothing is kept) */
  dedupFactor: number;
  /** unix ms: unreferenced chunks with an older atime were removed */
  cutoff: number;
  durationMs: number;
  /** missing chunks and the index naming them (at most 100 lines) */
  warnings: string[];
}

/** Runs one garbage collection; refused while another one runs on the same datastore. */
export async function garbageCollect(store: Datastore, opts: GcOptions = {}): Promise<GcResult> {
  const cutoffMs = opts.cutoffMs ?? DEFAULT_GC_CUTOFF_MS;
  if (!Number.isFinite(cutoffMs) || cutoffMs < 0) {
    throw new GordeError("usage", `the garbage collection cutoff must be a non-negative number of milliseconds, got ${cutoffMs}.`);
  }
  // Taken before the first await: a second call in the same tick is refused too.
  const gcLock = lockGc(store.dir);
  try {
    return await collect(store, cutoffMs, opts);
  } finally {
    fs.closeSync(gcLock);
  }
}

function lockGc(dir: string): number {
  const fd = fs.openSync(path.join(dir, GC_LOCK_FILE), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  let locked: boolean;
  try {
    locked = flock(fd, "ex", false);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (!locked) {
    fs.closeSync(fd);
    throw new GordeError("locked", "a garbage collection is already running on this datastore.");
  }
  return fd;
}

interface Mark {
  marked: Set<string>;
  missing: Set<string>;
  /** `.bad` file names to keep: their chunk is referenced and missing */
  keepBad: Set<string>;
  indexFiles: number;
  logicalBytes: number;
  warnings: string[];
  missingNotWarned: number;
}

async function collect(store: Datastore, cutoffMs: number, opts: GcOptions): Promise<GcResult> {
  const t0 = Date.now();
  // Backups running when the mark starts (one may finish a snapshot the mark has already
  // passed) and when the sweep starts (a backup registers a moment after its start time).
  const running = store.runningBackups();

  const mark = await markPhase(store, opts);

  running.push(...store.runningBackups());
  let cutoff = t0 - cutoffMs;
  if (running.length > 0) cutoff = Math.min(cutoff, Math.min(...running) - RUNNING_BACKUP_MARGIN_MS);

  const sweep = await sweepPhase(store, mark, cutoff, opts);
  const warnings = mark.warnings;
  if (mark.missingNotWarned > 0) warnings.push(`${mark.missingNotWarned} more referenced chunks are missing.`);
  return {
    indexFiles: mark.indexFiles,
    markedChunks: mark.marked.size,
    missingChunks: mark.missing.size,
    ...sweep,
    logicalBytes: mark.logicalBytes,
    dedupFactor: sweep.keptBytes > 0 ? mark.logicalBytes / sweep.keptBytes : 1,
    cutoff,
    durationMs: Date.now() - t0,
    warnings,
  };
}

// ---- mark ----

async function markPhase(store: Datastore, opts: GcOptions): Promise<Mark> {
  const files = await listIndexFiles(store.dir);
  const m: Mark = {
    marked: new Set(),
    missing: new Set(),
    keepBad: new Set(),
    indexFiles: 0,
    logicalBytes: 0,
    warnings: [],
    missingNotWarned: 0,
  };
  opts.progress?.({ phase: "mark", done: 0, total: files.length });
  let sinceYield = 0;
  for (const [i, file] of files.entries()) {
    opts.signal?.throwIfAborted();
    const rel = path.relative(store.dir, file);
    let bytes: Buffer;
    try {
      bytes = await readRegularFile(file, MAX_INDEX_FILE_SIZE, `index ${rel}`);
    } catch (err) {
      // Its snapshot was removed since the walk: its chunks need no mark.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new GordeError("io", `index ${rel} could not be read (${(err as Error).message}); garbage collection stopped without removing any chunk.`, {
        cause: err,
      });
    }
    // Digests as offsets into `body`, `stride` bytes apart, each DIGEST_SIZE long at `skip`.
    let body: Buffer;
    let stride: number;
    let skip: number;
    try {
      if (file.endsWith(".fidx")) {
        const idx = decodeFixedIndex(bytes, `index ${rel}`);
        m.logicalBytes += idx.size;
        body = idx.digests;
        stride = DIGEST_SIZE;
        skip = 0;
      } else {
        const idx = decodeDynamicIndex(bytes, `index ${rel}`);
        m.logicalBytes += idx.size;
        body = idx.entries;
        stride = DYNAMIC_ENTRY_SIZE;
        skip = 8;
      }
    } catch (err) {
      const e = err as Error;
      const code = err instanceof GordeError ? err.code : "corrupt";
      throw new GordeError(code, `${e.message.replace(/\.$/, "")}; garbage collection stopped without removing any chunk.`, { cause: err });
    }
    m.indexFiles++;
    const now = new Date();
    for (let o = skip; o + DIGEST_SIZE <= body.length; o += stride) {
      const hex = body.toString("hex", o, o + DIGEST_SIZE);
      if (m.marked.has(hex) || m.missing.has(hex)) continue;
      if (touchFile(store.chunks.chunkPath(hex), now)) {
        m.marked.add(hex);
      } else {
        m.missing.add(hex);
        if (m.warnings.length < MAX_WARNINGS) m.warnings.push(`chunk ${hex} referenced by ${rel} is missing.`);
        else m.missingNotWarned++;
        keepBadCopies(store, hex, now, m.keepBad);
      }
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await yieldToLoop();
        opts.signal?.throwIfAborted();
      }
    }
    opts.progress?.({ phase: "mark", done: i + 1, total: files.length });
  }
  return m;
}

/** Sets the atime of a file to `now`, keeping its mtime; false when it does not exist. */
function touchFile(file: string, now: Date): boolean {
  try {
    const st = fs.statSync(file);
    fs.utimesSync(file, now, st.mtime);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** A referenced chunk is missing: its `.bad` copies are the only data left, keep them. */
function keepBadCopies(store: Datastore, hex: string, now: Date, keep: Set<string>): void {
  const base = store.chunks.chunkPath(hex);
  for (let n = 0; n <= MAX_BAD_INDEX; n++) {
    if (touchFile(`${base}.${n}.bad`, now)) keep.add(`${hex}.${n}.bad`);
  }
}

/** Every `*.fidx` / `*.didx` under every snapshot directory, in every namespace. */
async function listIndexFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walkNs = async (nsDir: string): Promise<void> => {
    for (const type of BACKUP_TYPES) {
      for (const id of await subdirs(path.join(nsDir, type))) {
        const groupDir = path.join(nsDir, type, id);
        await removeForgottenLeftovers(groupDir);
        for (const snap of await subdirs(groupDir)) {
          const snapDir = path.join(groupDir, snap);
          for (const e of await readdir(snapDir)) {
            if (e.name.startsWith(".") || !e.isFile()) continue;
            if (e.name.endsWith(".fidx") || e.name.endsWith(".didx")) out.push(path.join(snapDir, e.name));
          }
        }
      }
    }
    for (const child of await subdirs(path.join(nsDir, "ns"))) await walkNs(path.join(nsDir, "ns", child));
  };
  await walkNs(root);
  return out;
}

/** How old a `.removing-*` directory must be before GC finishes its removal. */
const LEFTOVER_AGE_MS = 60 * 60 * 1000;

/**
 * A forget that crashed leaves its snapshot renamed to `.removing-*` (never read by
 * anything). Once it has not changed for an hour, no forget is still removing it.
 */
async function removeForgottenLeftovers(groupDir: string): Promise<void> {
  for (const e of await readdir(groupDir)) {
    if (!e.isDirectory() || !e.name.startsWith(".removing-")) continue;
    const p = path.join(groupDir, e.name);
    const st = await fsp.lstat(p).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > LEFTOVER_AGE_MS) await fsp.rm(p, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Names of the subdirectories of `dir` that do not start with a dot (so not `.removing-*`). */
async function subdirs(dir: string): Promise<string[]> {
  return (await readdir(dir))
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
}

async function readdir(dir: string): Promise<fs.Dirent[]> {
  try {
    return await fsp.readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return [];
    throw err;
  }
}

// ---- sweep ----

type SweepCounts = Pick<
  GcResult,
  | "removedChunks"
  | "removedBytes"
  | "removedBad"
  | "removedTmp"
  | "pendingChunks"
  | "pendingBytes"
  | "keptChunks"
  | "keptBytes"
>;

async function sweepPhase(store: Datastore, mark: Mark, cutoff: number, opts: GcOptions): Promise<SweepCounts> {
  const c: SweepCounts = {
    removedChunks: 0,
    removedBytes: 0,
    removedBad: 0,
    removedTmp: 0,
    pendingChunks: 0,
    pendingBytes: 0,
    keptChunks: 0,
    keptBytes: 0,
  };
  const chunksDir = store.chunks.dir;
  const shards = (await readdir(chunksDir))
    .filter((e) => e.isDirectory() && SHARD.test(e.name))
    .map((e) => e.name)
    .sort();
  opts.progress?.({ phase: "sweep", done: 0, total: shards.length });
  // Our own descriptor: flock is per open file, so a backup sharing this process (and the
  // store's descriptor) still waits for the sweep.
  const lockFd = fs.openSync(path.join(chunksDir, SWEEP_LOCK_FILE), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  try {
    for (const [i, shard] of shards.entries()) {
      opts.signal?.throwIfAborted();
      // Everything under the lock is synchronous: a backup in this process blocks in
      // flock, so awaiting here would never let it release.
      flock(lockFd, "ex", true);
      try {
        sweepShard(path.join(chunksDir, shard), mark, cutoff, c);
      } finally {
        flock(lockFd, "un", false);
      }
      opts.progress?.({ phase: "sweep", done: i + 1, total: shards.length });
      await yieldToLoop();
    }
  } finally {
    fs.closeSync(lockFd);
  }
  return c;
}

function sweepShard(dir: string, mark: Mark, cutoff: number, c: SweepCounts): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const name of names) {
    const kind = HEX64.test(name) ? "chunk" : BAD.test(name) ? "bad" : name.includes(".tmp-") ? "tmp" : undefined;
    if (kind === undefined) continue;
    const file = path.join(dir, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    if (!st.isFile()) continue;
    switch (kind) {
      case "chunk":
        if (mark.marked.has(name)) {
          c.keptChunks++;
          c.keptBytes += st.size;
        } else if (st.atimeMs < cutoff) {
          if (unlink(file)) {
            c.removedChunks++;
            c.removedBytes += st.size;
          }
        } else {
          c.pendingChunks++;
          c.pendingBytes += st.size;
        }
        break;
      case "bad":
        if (!mark.keepBad.has(name) && st.atimeMs < cutoff && unlink(file)) {
          c.removedBad++;
          c.removedBytes += st.size;
        }
        break;
      case "tmp":
        // A chunk being written: its mtime moves while it is written.
        if (Math.max(st.atimeMs, st.mtimeMs) < cutoff && unlink(file)) {
          c.removedTmp++;
          c.removedBytes += st.size;
        }
        break;
    }
  }
}

function unlink(file: string): boolean {
  try {
    fs.unlinkSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
