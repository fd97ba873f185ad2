// Reads chunks back through a small cache: from the store (a worker reads, decodes and
// checks each against its digest) or from a server.

/** Where chunks come from: a ChunkPool on a local store, or a remote reader. */
export interface ChunkLoader {
  load(hex: string): Promise<Buffer>;
}

export class ChunkReader {
  private readonly pool: ChunkLoader;
  private cache = new Map<string, Promise<Buffer>>();
  private readonly cacheSize: number;

  constructor(pool: ChunkLoader, cacheSize = 8) {
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
