// Sends chunks through the worker pool and into the chunk store, many in flight,
// and tells the caller each chunk's digest. Known chunks are neither compressed nor written.
import path from "node:path";
import type { ChunkStore, PendingChunk } from "../datastore/chunk-store.ts";
import { encodeBlob } from "../format/blob.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { isZero, zeroDigestHex } from "../format/zero-chunk.ts";

/** Written chunks are made durable and named in batches of this many files or bytes. */
const COMMIT_FILES = 1024;
const COMMIT_BYTES = 64 * 1024 * 1024;

export interface WriteStats {
  /** plain bytes submitted */
  bytes: number;
  /** plain bytes of chunks that had to be stored */
  newBytes: number;
  /** bytes written to the store (encoded) */
  storedBytes: number;
  newChunks: number;
  reusedChunks: number;
  reusedBytes: number;
  zeroChunks: number;
}

export class ChunkWriter {
  readonly stats: WriteStats = {
    bytes: 0,
    newBytes: 0,
    storedBytes: 0,
    newChunks: 0,
    reusedChunks: 0,
    reusedBytes: 0,
    zeroChunks: 0,
  };
  private inflight = 0;
  private waiters: (() => void)[] = [];
  private error: Error | undefined;
  private written = new Set<string>();
  private pending: PendingChunk[] = [];
  private spare = new Map<number, Buffer[]>();
  private pendingBytes = 0;
  private readonly store: ChunkStore;
  private readonly pool: ChunkPool;
  private readonly maxInflight: number;

  constructor(store: ChunkStore, pool: ChunkPool, maxInflight = 12) {
    this.store = store;
    this.pool = pool;
    this.maxInflight = maxInflight;
  }

  /** Resolves once the chunk is admitted; `done` gets its digest later. `data` is handed over. */
  async add(data: Buffer, done: (hex: string) => void): Promise<void> {
    while (this.inflight >= this.maxInflight && this.error === undefined) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.error !== undefined) throw this.error;
    this.inflight++;
    this.process(data)
      .then(done, (e: unknown) => {
        this.error ??= e instanceof Error ? e : new Error(String(e));
      })
      .finally(() => {
        this.inflight--;
        this.waiters.shift()?.();
      });
  }

  /** Waits for every admitted chunk and names every written one; throws the first error. */
  async drain(): Promise<void> {
    while (this.inflight > 0) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error !== undefined) throw this.error;
    await this.commit();
  }

  /** One syncfs for the chunks written since the last commit, then their renames. */
  private async commit(): Promise<void> {
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    this.pendingBytes = 0;
    await this.pool.commit(batch);
    for (const c of batch) this.store.markWritten(path.dirname(c.final));
  }

  /**
   * A buffer of `size` bytes for the next chunk, reusing the memory of chunks already
   * processed: fresh memory costs page faults, which here cost more than hashing.
   */
  buffer(size: number): Buffer {
    let list = this.spare.get(size);
    if (!list) this.spare.set(size, (list = []));
    return list.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  /** Keeps a chunk's memory for `buffer()`: only sizes asked for, a few of each. */
  private recycle(b: Buffer | undefined): void {
    const list = b && this.spare.get(b.length);
    if (list && list.length < this.maxInflight + 8) list.push(b);
  }

  /** A chunk known to be all zeros without reading it (a hole of a sparse file). */
  addZero(size: number, done: (hex: string) => void): void {
    this.stats.bytes += size;
    this.stats.zeroChunks++;
    done(this.storeZero(size));
  }

  private storeZero(size: number): string {
    const hex = zeroDigestHex(size);
    if (!this.written.has(hex)) {
      this.written.add(hex);
      // touch: a GC running now must not remove the zero chunk this snapshot uses
      if (!this.store.touch(hex)) this.store.insert(hex, encodeBlob(Buffer.alloc(size)));
    }
    return hex;
  }

  /** Counts a chunk reused without reading it (a file whose metadata did not change). */
  reuse(size: number): void {
    this.stats.bytes += size;
    this.stats.reusedBytes += size;
    this.stats.reusedChunks++;
  }

  private async process(data: Buffer): Promise<string> {
    const size = data.length;
    this.stats.bytes += size;
    if (isZero(data)) {
      this.stats.zeroChunks++;
      this.recycle(data);
      return this.storeZero(size);
    }
    let enc = await this.pool.encode(data);
    if (enc.state === "exists" && !this.written.has(enc.hex) && !this.store.touch(enc.hex)) {
      // Removed between the check and the touch (a concurrent GC): store it again.
      enc = await this.pool.encode(enc.data!, true);
    }
    this.recycle(enc.data);
    if (enc.state === "new") {
      // Two equal chunks in flight at once are both written: harmless, counted once.
      this.pending.push(enc.pending!);
      this.pendingBytes += enc.stored!;
      if (this.pending.length >= COMMIT_FILES || this.pendingBytes >= COMMIT_BYTES) await this.commit();
      if (!this.written.has(enc.hex)) {
        this.written.add(enc.hex);
        this.stats.newChunks++;
        this.stats.newBytes += size;
        this.stats.storedBytes += enc.stored!;
      }
    } else {
      this.stats.reusedChunks++;
      this.stats.reusedBytes += size;
    }
    return enc.hex;
  }
}
