// The chunk store: <store>/.chunks/<first 2 hex>/<64 hex>, one blob per file
// (docs/format.md, "Chunk store"). Inserts are atomic: temp file, fdatasync, rename.
// An existing chunk is never rewritten; the digest names the content.
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { GordeError } from "../errors.ts";
import { magicKind, MAX_CHUNK_FILE_SIZE, SHARD_HEX } from "../format/magic.ts";
import { fsyncDir } from "../sys/atomic-write.ts";
import { flock, syncfs } from "../sys/posix.ts";
import { readRegularFileSync } from "../sys/bounded-read.ts";

/** Directory sync: shard directories fsynced at once; above SYNCFS_ABOVE of them, one syncfs instead. */
const FSYNC_AT_ONCE = 16;
const SYNCFS_ABOVE = 32;

const HEX64 = /^[0-9a-f]{64}$/;

export class ChunkStore {
  readonly dir: string;
  private shards = new Set<string>();
  /** shard directories that got new entries since the last sync() */
  private dirty = new Set<string>();
  private sweepLockFd: number | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  chunkPath(hex: string): string {
    return path.join(this.dir, hex.slice(0, SHARD_HEX), hex);
  }

  static isDigestHex(s: string): boolean {
    return HEX64.test(s);
  }

  exists(hex: string): boolean {
    return fs.existsSync(this.chunkPath(hex));
  }

  /** What is stored under `hex`: nothing, a plain blob or an encrypted one (by its magic). */
  storedKind(hex: string): StoredKind {
    return storedKindAt(this.chunkPath(hex));
  }

  /** Writes a chunk (the caller checked it is missing); a concurrent insert of the same digest is harmless. */
  insert(hex: string, blob: Uint8Array): void {
    this.markWritten(writeChunkFile(this.dir, hex, blob, this.shards));
  }

  /** Notes a shard directory that got a new chunk (worker threads write chunks too). */
  markWritten(shardDir: string): void {
    this.dirty.add(shardDir);
  }

  /**
   * Marks an existing chunk as used now, so a garbage collection running at the same
   * time keeps it. Returns false when the chunk is missing. Holds the sweep lock in
   * shared mode so it cannot interleave with a sweep deciding on the same file.
   */
  touch(hex: string): boolean {
    const fd = this.sweepLock();
    flock(fd, "sh", true);
    try {
      const file = this.chunkPath(hex);
      // A missing chunk is the common case for new data: no exception for it.
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st) return false;
      fs.utimesSync(file, new Date(), st.mtime);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    } finally {
      flock(fd, "un", false);
    }
  }

  /** File descriptor of .chunks/.sweep.lock (GC holds it exclusive while sweeping a shard). */
  sweepLock(): number {
    if (this.sweepLockFd === undefined) {
      this.sweepLockFd = fs.openSync(path.join(this.dir, ".sweep.lock"), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    }
    return this.sweepLockFd;
  }

  /**
   * Makes the names of chunks inserted since the last call durable (their contents
   * already are): a few shard directories are fsync'ed one by one, many with one syncfs.
   */
  async sync(): Promise<void> {
    const dirs = [...this.dirty];
    this.dirty.clear();
    if (dirs.length > SYNCFS_ABOVE) {
      const fd = fs.openSync(this.dir, "r");
      try {
        syncfs(fd);
      } finally {
        fs.closeSync(fd);
      }
      return;
    }
    for (let i = 0; i < dirs.length; i += FSYNC_AT_ONCE) {
      await Promise.all(dirs.slice(i, i + FSYNC_AT_ONCE).map((d) => fsyncDir(d)));
    }
    if (dirs.length > 0) await fsyncDir(this.dir); // new shard directories
  }

  close(): void {
    if (this.sweepLockFd !== undefined) fs.closeSync(this.sweepLockFd);
    this.sweepLockFd = undefined;
  }
}

/**
 * Writes one chunk file atomically: temp file, fdatasync, rename (synchronous).
 * Returns the shard directory, whose entry still needs an fsync. `shards` caches
 * the shard directories known to exist.
 */
export function writeChunkFile(chunkDir: string, hex: string, blob: Uint8Array, shards: Set<string>): string {
  const pending = writeChunkTemp(chunkDir, hex, blob, shards, { sync: true, replace: true });
  // rename replaces a chunk that appeared meanwhile; both hold the same content.
  fs.renameSync(pending.tmp, pending.final);
  return path.dirname(pending.final);
}

/** A chunk written to its temp file, not yet under its name. */
export interface PendingChunk {
  tmp: string;
  final: string;
  /**
   * The writer checked the chunk's digest against its plain data (every unencrypted chunk):
   * it may replace what is stored under that name. An encrypted chunk, whose digest nobody
   * without the key can check, never replaces a stored chunk (docs/format.md, section 5).
   */
  replace: boolean;
}

/** What a chunk file holds, told by its magic: absent, plain (BP, BZ), encrypted (BE, BX) or unknown. */
export type StoredKind = "absent" | "plain" | "encrypted" | "unknown";

/** Reads the 8-byte magic of the chunk file at `file`. */
export function storedKindAt(file: string): StoredKind {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    throw err;
  }
  try {
    const head = Buffer.alloc(8);
    const n = fs.readSync(fd, head, 0, 8, 0);
    const kind = magicKind(head.subarray(0, n))?.kind;
    return kind === "BP" || kind === "BZ" ? "plain" : kind === "BE" || kind === "BX" ? "encrypted" : "unknown";
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes a chunk's temp file in its shard directory. Without `sync`, the caller makes
 * it durable (one syncfs for a batch) before `commitChunks` renames it: a chunk under
 * its final name is always complete on disk.
 */
export function writeChunkTemp(chunkDir: string, hex: string, blob: Uint8Array, shards: Set<string>, opts: { sync: boolean; replace: boolean }): PendingChunk {
  const shard = hex.slice(0, SHARD_HEX);
  const dir = path.join(chunkDir, shard);
  if (!shards.has(shard)) {
    fs.mkdirSync(dir, { recursive: true });
    shards.add(shard);
  }
  const final = path.join(dir, hex);
  const tmp = `${final}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = fs.openSync(tmp, "wx", 0o644);
  try {
    let off = 0;
    while (off < blob.length) off += fs.writeSync(fd, blob, off, blob.length - off, off);
    if (opts.sync) fs.fdatasyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw storeError(err, hex);
  }
  fs.closeSync(fd);
  return { tmp, final, replace: opts.replace };
}

/**
 * Makes a batch of temp chunk files durable with one syncfs, then gives them their names:
 * a rename for a chunk that may replace (two copies of checked plain data are equal), a
 * link that fails on an existing name for one that may not (the stored chunk stays).
 */
export function commitChunks(chunkDir: string, batch: PendingChunk[]): void {
  if (batch.length === 0) return;
  const fd = fs.openSync(chunkDir, "r");
  try {
    syncfs(fd);
  } finally {
    fs.closeSync(fd);
  }
  for (const c of batch) {
    if (c.replace) {
      fs.renameSync(c.tmp, c.final);
      continue;
    }
    try {
      fs.linkSync(c.tmp, c.final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    fs.unlinkSync(c.tmp);
  }
}

/** Reads a chunk file synchronously (worker threads); a missing chunk is named. */
export function readChunkFile(chunkDir: string, hex: string): Buffer {
  try {
    return readRegularFileSync(path.join(chunkDir, hex.slice(0, SHARD_HEX), hex), MAX_CHUNK_FILE_SIZE, `chunk ${hex}`);
  } catch (err) {
    throw readError(err, hex);
  }
}

function readError(err: unknown, hex: string): Error {
  if ((err as NodeJS.ErrnoException).code === "ENOENT") {
    return new GordeError("corrupt", `chunk ${hex} is missing from the datastore.`, { cause: err });
  }
  return err as Error;
}

function storeError(err: unknown, hex: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new GordeError("io", `the datastore is full: chunk ${hex.slice(0, 16)}… could not be written.`, { cause: err });
  }
  return err as Error;
}
