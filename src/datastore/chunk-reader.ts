// Reads chunks back: blob from the store, decoded and checked against its digest in a worker.
import type { ChunkPool } from "./chunk-pool.ts";

export class ChunkReader {
  private readonly pool: ChunkPool;
  private cache = new Map<string, Promise<Buffer>>();
  private readonly cacheSize: number;

  constructor(pool: ChunkPool, cacheSize = 8) {
    this.pool = pool;
    this.cacheSize = cacheSize;
  }

  /** The plain data of a chunk; a missing or corrupt chunk throws, naming it. */
  read(hex: string): Promise<Buffer> {
    let p = this.cache.get(hex);
    if (p) {
      this.cache.delete(hex);
      this.cache.set(hex, p);
      return p;
    }
    p = this.pool.load(hex);
    this.cache.set(hex, p);
    p.catch(() => this.cache.delete(hex));
    if (this.cache.size > this.cacheSize) {
      const oldest = this.cache.keys().next().value!;
      this.cache.delete(oldest);
    }
    return p;
  }
}
