// Sends chunks through the worker pool and into the chunk store (or up to a server), many
// in flight, and tells the caller each chunk's digest. Known chunks are neither compressed
// nor written.
import type { SnapshotWriter } from "../datastore/snapshot-writer.ts";
import { encodeBlob } from "../format/blob.ts";
import type { ChunkKey } from "../format/crypt.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { isZero, zeroDigestHex } from "../format/zero-chunk.ts";

/**
 * Where new chunks go: a local snapshot writer (the workers write temp files that it
 * names in batches), or a server (the workers hand back encoded chunks to upload).
 */
export type ChunkTarget =
  | { kind: "local"; writer: SnapshotWriter }
  | { kind: "remote"; upload(hex: string, blob: Buffer, size: number): Promise<void> };

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
  /** digests stored by this backup (local: written; remote: uploaded or being uploaded) */
  private written = new Set<string>();
  /** remote: each digest's one upload, shared by every equal chunk however they interleave */
  private uploads = new Map<string, Promise<void>>();
  private spare = new Map<number, Buffer[]>();
  private readonly target: ChunkTarget;
  private readonly pool: ChunkPool;
  private readonly maxInflight: number;
  private readonly key: ChunkKey | undefined;
  private readonly level: number;

  constructor(target: ChunkTarget, pool: ChunkPool, opts: { maxInflight?: number; key?: ChunkKey; level?: number } = {}) {
    this.target = target;
    this.pool = pool;
    this.maxInflight = opts.maxInflight ?? 12;
    this.key = opts.key;
    this.level = opts.level ?? 1;
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
    if (this.target.kind === "local") await this.target.writer.commit(this.pool);
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

  /** The digest of a zero chunk of `size` bytes in this backup (keyed when encrypted). */
  zeroHex(size: number): string {
    return zeroDigestHex(size, this.key);
  }

  /** A chunk known to be all zeros without reading it (a hole of a sparse file). */
  addZero(size: number, done: (hex: string) => void): void {
    this.stats.bytes += size;
    this.stats.zeroChunks++;
    done(this.storeZero(size));
  }

  private storeZero(size: number): string {
    const hex = zeroDigestHex(size, this.key);
    if (!this.written.has(hex)) {
      this.written.add(hex);
      const t = this.target;
      if (t.kind === "local") {
        // touch: a GC running now must not remove the zero chunk this snapshot uses
        if (!t.writer.chunks.touch(hex)) t.writer.chunks.insert(hex, encodeBlob(Buffer.alloc(size), this.level, this.key));
      } else {
        // Uploaded once per backup (the server keeps one copy); failures surface in drain().
        this.inflight++;
        this.uploadOnce(t, hex, encodeBlob(Buffer.alloc(size), this.level, this.key), size)
          .catch((e: unknown) => {
            this.error ??= e instanceof Error ? e : new Error(String(e));
          })
          .finally(() => {
            this.inflight--;
            this.waiters.shift()?.();
          });
      }
    }
    return hex;
  }

  /**
   * Uploads a chunk unless this backup already did or is doing so: one request per digest
   * however often the data occurs and however its encodings interleave. Resolves to true
   * for the call that sent it.
   */
  private async uploadOnce(t: Extract<ChunkTarget, { kind: "remote" }>, hex: string, blob: Buffer, size: number): Promise<boolean> {
    const sent = this.uploads.get(hex);
    if (sent) {
      await sent;
      return false;
    }
    const p = t.upload(hex, blob, size);
    this.uploads.set(hex, p);
    await p;
    return true;
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
    const t = this.target;
    let enc = await this.pool.encode(data);
    if (t.kind === "local" && enc.state === "exists" && !this.written.has(enc.hex) && !t.writer.chunks.touch(enc.hex)) {
      // Removed between the check and the touch (a concurrent GC): store it again.
      enc = await this.pool.encode(enc.data!, true);
    }
    this.recycle(enc.data);
    let first: boolean;
    if (enc.state === "new" && t.kind === "remote") {
      first = await this.uploadOnce(t, enc.hex, enc.blob!, size);
    } else if (enc.state === "new" && t.kind === "local") {
      // Two equal chunks written at once both get their name (equal files): counted once.
      await t.writer.stage(this.pool, [{ pending: enc.pending!, bytes: enc.stored! }]);
      first = !this.written.has(enc.hex);
      this.written.add(enc.hex);
    } else {
      first = false;
    }
    if (first) {
      this.stats.newChunks++;
      this.stats.newBytes += size;
      this.stats.storedBytes += enc.stored!;
    } else {
      this.stats.reusedChunks++;
      this.stats.reusedBytes += size;
    }
    return enc.hex;
  }
}
