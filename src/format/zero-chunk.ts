// All-zero chunks are recognised by a memcmp, not by hashing: their digest per size is cached.
import { type ChunkKey, chunkDigestHex } from "./crypt.ts";

let zeros = Buffer.alloc(0);
const digests = new Map<number, string>();

export function isZero(data: Uint8Array): boolean {
  if (zeros.length < data.length) zeros = Buffer.alloc(Math.max(data.length, 4 * 1024 * 1024));
  return Buffer.compare(data, zeros.subarray(0, data.length)) === 0;
}

const keyed = new WeakMap<ChunkKey, Map<number, string>>();

/** The digest of `size` zero bytes: SHA-256, or the keyed digest of an encrypted backup. */
export function zeroDigestHex(size: number, key?: ChunkKey): string {
  let cache = digests;
  if (key) {
    cache = keyed.get(key) ?? new Map<number, string>();
    keyed.set(key, cache);
  }
  let d = cache.get(size);
  if (d === undefined) {
    const zeros = Buffer.alloc(size);
    d = chunkDigestHex(zeros, key);
    cache.set(size, d);
  }
  return d;
}
