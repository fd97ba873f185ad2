// Sends chunks through the worker pool and into the chunk store, many in flight,
// and tells the caller each chunk's digest. Known chunks are neither compressed nor written.
import type { ChunkStore } from "../datastore/chunk-store.ts";
import { encodeBlob } from "../format/blob.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { isZero, zeroDigestHex } from "../format/zero-chunk.ts";

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
  private readonly store: ChunkStore;
  private readonly pool: ChunkPool;
  private readonly maxInflight: number;

  constructor(store: ChunkStore, pool: ChunkPool, maxInflight = 8) {
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

  /** Waits for every admitted chunk; throws the first error. */
  async drain(): Promise<void> {
    while (this.inflight > 0) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error !== undefined) throw this.error;
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
      const hex = zeroDigestHex(size);
      this.stats.zeroChunks++;
      if (!this.written.has(hex)) {
        this.written.add(hex);
        // touch: a GC running now must not remove the zero chunk this snapshot uses
        if (!this.store.touch(hex)) await this.store.insert(hex, encodeBlob(data));
      }
      return hex;
    }
    let enc = await this.pool.encode(data);
    if (enc.state === "exists" && !this.written.has(enc.hex) && !this.store.touch(enc.hex)) {
      // Removed between the check and the touch (a concurrent GC): store it again.
      enc = await this.pool.encode(enc.data!, true);
    }
    if (enc.state === "new" && !this.written.has(enc.hex)) {
      this.written.add(enc.hex);
      const blob = enc.blob!;
      await this.store.insert(enc.hex, blob);
      this.stats.newChunks++;
      this.stats.newBytes += size;
      this.stats.storedBytes += blob.length;
    } else {
      this.stats.reusedChunks++;
      this.stats.reusedBytes += size;
    }
    return enc.hex;
  }
}
