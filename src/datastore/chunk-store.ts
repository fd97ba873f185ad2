// The chunk store: <store>/.chunks/<first 4 hex>/<64 hex>, one blob per file
// (docs/format.md, "Chunk store"). Inserts are atomic: temp file, fdatasync, rename.
// An existing chunk is never rewritten; the digest names the content.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { GordeError } from "../errors.ts";
import { flock, syncfs } from "../sys/posix.ts";

const HEX64 = /^[0-9a-f]{64}$/;

export class ChunkStore {
  readonly dir: string;
  private shards = new Set<string>();
  /** shard directories that got new entries since the last sync() */
  private dirty = new Set<string>();
  private sweepLockFd: number | undefined;
  /** Durable once `sync()` has run: every inserted chunk is fdatasync'ed before its rename. */
  private tmpSuffix = `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;

  constructor(dir: string) {
    this.dir = dir;
  }

  chunkPath(hex: string): string {
    return path.join(this.dir, hex.slice(0, 4), hex);
  }

  static isDigestHex(s: string): boolean {
    return HEX64.test(s);
  }

  exists(hex: string): boolean {
    return fs.existsSync(this.chunkPath(hex));
  }

  /** Writes a chunk (the caller checked it is missing); a concurrent insert of the same digest is harmless. */
  async insert(hex: string, blob: Uint8Array): Promise<void> {
    const shard = hex.slice(0, 4);
    const dir = path.join(this.dir, shard);
    if (!this.shards.has(shard)) {
      await fsp.mkdir(dir, { recursive: true });
      this.shards.add(shard);
    }
    const final = path.join(dir, hex);
    const tmp = final + this.tmpSuffix;
    const fh = await fsp.open(tmp, "wx", 0o644);
    try {
      await fh.write(blob, 0, blob.length, 0);
      await fh.datasync();
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw storeError(err, hex);
    }
    await fh.close();
    // rename replaces a chunk that appeared meanwhile; both hold the same content.
    await fsp.rename(tmp, final);
    this.dirty.add(dir);
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
      const now = new Date();
      fs.utimesSync(this.chunkPath(hex), now, fs.statSync(this.chunkPath(hex)).mtime);
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
   * already are): a few directories are fsync'ed one by one, many with one syncfs.
   */
  async sync(): Promise<void> {
    const dirs = [...this.dirty];
    this.dirty.clear();
    if (dirs.length > 256) {
      const fd = fs.openSync(this.dir, "r");
      try {
        syncfs(fd);
      } finally {
        fs.closeSync(fd);
      }
      return;
    }
    for (let i = 0; i < dirs.length; i += 16) {
      await Promise.all(dirs.slice(i, i + 16).map((d) => fsyncDir(d)));
    }
    if (dirs.length > 0) await fsyncDir(this.dir); // new shard directories
  }

  async read(hex: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.chunkPath(hex));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new GordeError("corrupt", `chunk ${hex} is missing from the datastore.`, { cause: err });
      }
      throw err;
    }
  }

  close(): void {
    if (this.sweepLockFd !== undefined) fs.closeSync(this.sweepLockFd);
    this.sweepLockFd = undefined;
  }
}

function storeError(err: unknown, hex: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new GordeError("io", `the datastore is full: chunk ${hex.slice(0, 16)}… could not be written.`, { cause: err });
  }
  return err as Error;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
