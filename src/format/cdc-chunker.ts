// Content-defined chunking: FastCDC (Xia et al., USENIX ATC 2016) with normalized
// chunking, on a 32-bit gear hash.
//
// For every chunk: the first minSize bytes are skipped without hashing; from there the
// gear hash h = (h << 1) + GEAR[byte] (mod 2^32) runs over the bytes, starting from 0.
// After hashing the byte at chunk offset i (0-based), the chunk ends there, with length
// i + 1, when (h & mask) == 0, where mask is MASK_HARD (bits + 2 one bits) while
// i < avgSize and MASK_EASY (bits - 2 one bits) from there on, bits = log2(avgSize).
// The masks take the top bits of h: bit k of h depends on the last k + 1 bytes, so the
// top bits carry the longest window (32 bytes). A chunk reaching maxSize bytes ends
// there. So every chunk but the last of a stream has minSize < length <= maxSize.
//
// The gear table, the masks and the rules above decide where chunks end, so they are
// part of the on-disk behaviour: deduplication between versions of a file relies on the
// same content being cut at the same places.

import { GordeError } from "../errors.ts";
import { MAX_CHUNK_SIZE } from "./magic.ts";

export interface CdcParams {
  avgSize: number;
  minSize: number;
  maxSize: number;
}

export const MIN_CDC_AVG_SIZE = 64 * 1024;
export const MAX_CDC_AVG_SIZE = 8 * 1024 * 1024;

/**
 * Parameters for an average chunk size: minSize = avg / 4, maxSize = avg * 4 (capped at
 * the format's MAX_CHUNK_SIZE, so 2 × avg for 8 MiB).
 */
export function cdcParams(avgSize: number): CdcParams {
  checkAvgSize(avgSize);
  return { avgSize, minSize: avgSize / 4, maxSize: Math.min(avgSize * 4, MAX_CHUNK_SIZE) };
}

function checkAvgSize(avgSize: number): void {
  if (
    !Number.isSafeInteger(avgSize) ||
    avgSize < MIN_CDC_AVG_SIZE ||
    avgSize > MAX_CDC_AVG_SIZE ||
    (avgSize & (avgSize - 1)) !== 0
  ) {
    throw new GordeError(
      "usage",
      `Average chunk size must be a power of two from 64 KiB to 8 MiB, got ${String(avgSize)}.`,
    );
  }
}

// Do not change: changes chunk boundaries for every existing datastore.
// GEAR[i] is the high 32 bits of the (i + 1)-th output of SplitMix64 seeded with
// GEAR_SEED (the ASCII bytes "gordeCDC"). SplitMix64, all arithmetic mod 2^64:
//   state += 0x9e3779b97f4a7c15; z = state;
//   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
//   output z ^ (z >> 31)
// The table is held as signed 32-bit integers so the hash stays in int32 arithmetic.
const GEAR_SEED = 0x676f7264_65434443n;
const GEAR: Int32Array = (() => {
  const M = (1n << 64n) - 1n;
  const table = new Int32Array(256);
  let state = GEAR_SEED;
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & M;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    z ^= z >> 31n;
    table[i] = Number(z >> 32n) | 0;
  }
  return table;
})();

/** A copy of the gear table as unsigned values, for tests that pin it. */
export function gearTable(): Uint32Array {
  return new Uint32Array(GEAR);
}

/** A mask of the top `ones` bits of a 32-bit word, as a signed 32-bit integer. */
function topBits(ones: number): number {
  return ~((1 << (32 - ones)) - 1) | 0;
}

export class CdcChunker {
  readonly params: CdcParams;
  private readonly minSize: number;
  private readonly avgSize: number;
  private readonly maxSize: number;
  private readonly maskHard: number;
  private readonly maskEasy: number;
  /** Bytes of the current chunk seen so far. */
  private pos = 0;
  /** Gear hash over the hashed bytes of the current chunk. */
  private hash = 0;

  constructor(params: CdcParams) {
    const { avgSize, minSize, maxSize } = params;
    checkAvgSize(avgSize);
    if (!Number.isSafeInteger(minSize) || minSize < 0 || minSize >= avgSize) {
      throw new GordeError(
        "usage",
        `Minimum chunk size must be an integer from 0 to below the average ${avgSize}, got ${String(minSize)}.`,
      );
    }
    if (!Number.isSafeInteger(maxSize) || maxSize <= avgSize || maxSize > MAX_CHUNK_SIZE) {
      throw new GordeError(
        "usage",
        `Maximum chunk size must be an integer above the average ${avgSize} ` +
          `and at most ${MAX_CHUNK_SIZE}, got ${String(maxSize)}.`,
      );
    }
    this.params = { avgSize, minSize, maxSize };
    this.minSize = minSize;
    this.avgSize = avgSize;
    this.maxSize = maxSize;
    const bits = Math.log2(avgSize);
    this.maskHard = topBits(bits + 2);
    this.maskEasy = topBits(bits - 2);
  }

  /**
   * Scans data[start..end). Returns the index just past the next chunk boundary within
   * that range, or -1 if the current chunk continues past `end` (the consumed bytes count
   * toward the chunk). After a boundary the next chunk starts at the returned index.
   */
  next(data: Uint8Array, start: number, end: number = data.length): number {
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= data.length)) {
      throw new GordeError("usage", `Chunker range ${start}..${end} is outside the buffer of ${data.length} bytes.`);
    }
    const gear = GEAR;
    let pos = this.pos;
    let i = start;

    // Skip the first minSize bytes of the chunk.
    if (pos < this.minSize) {
      const skip = Math.min(this.minSize - pos, end - i);
      i += skip;
      pos += skip;
      if (pos < this.minSize) {
        this.pos = pos;
        return -1;
      }
    }

    let h = this.hash;
    // Up to the average size: the harder mask.
    if (pos < this.avgSize) {
      const mask = this.maskHard;
      const stop = i + Math.min(this.avgSize - pos, end - i);
      const first = i;
      while (i < stop) {
        h = ((h << 1) + gear[data[i]!]!) | 0;
        i++;
        if ((h & mask) === 0) {
          this.pos = 0;
          this.hash = 0;
          return i;
        }
      }
      pos += i - first;
      if (pos < this.avgSize) {
        this.pos = pos;
        this.hash = h;
        return -1;
      }
    }

    // From the average to the maximum size: the easier mask.
    {
      const mask = this.maskEasy;
      const stop = i + Math.min(this.maxSize - pos, end - i);
      const first = i;
      while (i < stop) {
        h = ((h << 1) + gear[data[i]!]!) | 0;
        i++;
        if ((h & mask) === 0) {
          this.pos = 0;
          this.hash = 0;
          return i;
        }
      }
      pos += i - first;
    }
    if (pos >= this.maxSize) {
      this.pos = 0;
      this.hash = 0;
      return i;
    }
    this.pos = pos;
    this.hash = h;
    return -1;
  }

  /** Starts a new chunk: call after a cut the chunker did not choose (end of stream, reused chunks). */
  reset(): void {
    this.pos = 0;
    this.hash = 0;
  }

  /** Bytes of the current, unfinished chunk seen so far. */
  get pending(): number {
    return this.pos;
  }
}
