// Dynamic index: the chunk list of a variable-size stream (docs/format.md, "Dynamic index").
//   header (64): magic(8) ctime(i64) streamSize(u64) count(u64) sha256(entries)(32)
//   body: count × { end offset u64 LE, digest(32) }, end offsets strictly increasing
import { createHash } from "node:crypto";
import { corrupt } from "../errors.ts";
import { DIGEST_SIZE, DYNAMIC_ENTRY_SIZE, INDEX_HEADER_SIZE, MAGIC, MAX_CHUNK_SIZE } from "./magic.ts";
import { checkMagic } from "./index-header.ts";

export class DynamicIndex {
  readonly ctime: number;
  /** count × 40 bytes: end offset u64 LE, digest */
  readonly entries: Buffer;
  readonly count: number;
  readonly size: number;

  constructor(ctime: number, entries: Buffer) {
    this.ctime = ctime;
    this.entries = entries;
    this.count = entries.length / DYNAMIC_ENTRY_SIZE;
    this.size = this.count === 0 ? 0 : this.end(this.count - 1);
  }

  end(i: number): number {
    return Number(this.entries.readBigUInt64LE(i * DYNAMIC_ENTRY_SIZE));
  }

  start(i: number): number {
    return i === 0 ? 0 : this.end(i - 1);
  }

  digest(i: number): Buffer {
    const o = i * DYNAMIC_ENTRY_SIZE + 8;
    return this.entries.subarray(o, o + DIGEST_SIZE);
  }

  /** Index of the chunk holding stream offset `pos` (0 ≤ pos < size). */
  find(pos: number): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.end(mid) <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Accumulates (size, digest) pairs in stream order. */
export class DynamicIndexBuilder {
  private parts: Buffer[] = [];
  private cur = Buffer.alloc(64 * 1024 * DYNAMIC_ENTRY_SIZE);
  private used = 0;
  size = 0;
  count = 0;

  add(chunkSize: number, digest: Uint8Array): void {
    if (this.used === this.cur.length) {
      this.parts.push(this.cur);
      this.cur = Buffer.alloc(this.cur.length);
      this.used = 0;
    }
    this.size += chunkSize;
    this.cur.writeBigUInt64LE(BigInt(this.size), this.used);
    this.cur.set(digest, this.used + 8);
    this.used += DYNAMIC_ENTRY_SIZE;
    this.count++;
  }

  build(ctime: number): DynamicIndex {
    return new DynamicIndex(ctime, Buffer.concat([...this.parts, this.cur.subarray(0, this.used)]));
  }
}

export function encodeDynamicIndex(index: DynamicIndex): Buffer {
  const head = Buffer.alloc(INDEX_HEADER_SIZE);
  MAGIC.dynamicIndex.copy(head, 0);
  head.writeBigInt64LE(BigInt(index.ctime), 8);
  head.writeBigUInt64LE(BigInt(index.size), 16);
  head.writeBigUInt64LE(BigInt(index.count), 24);
  createHash("sha256").update(index.entries).digest().copy(head, 32);
  return Buffer.concat([head, index.entries]);
}

export function decodeDynamicIndex(buf: Buffer, what = "dynamic index"): DynamicIndex {
  checkMagic(buf, "DI", what);
  const size = buf.readBigUInt64LE(16);
  const count = buf.readBigUInt64LE(24);
  if (BigInt(buf.length) !== BigInt(INDEX_HEADER_SIZE) + count * BigInt(DYNAMIC_ENTRY_SIZE)) {
    throw corrupt(`${what} is ${buf.length} bytes but its header describes ${count} chunks.`);
  }
  const entries = buf.subarray(INDEX_HEADER_SIZE);
  if (!createHash("sha256").update(entries).digest().equals(buf.subarray(32, 64))) {
    throw corrupt(`${what} fails its checksum.`);
  }
  let prev = 0n;
  for (let o = 0; o < entries.length; o += DYNAMIC_ENTRY_SIZE) {
    const end = entries.readBigUInt64LE(o);
    if (end <= prev || end - prev > BigInt(MAX_CHUNK_SIZE)) {
      throw corrupt(`${what} has an invalid chunk boundary at entry ${o / DYNAMIC_ENTRY_SIZE}.`);
    }
    prev = end;
  }
  if (prev !== size || size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw corrupt(`${what} says its stream is ${size} bytes but its chunks add up to ${prev}.`);
  }
  return new DynamicIndex(Number(buf.readBigInt64LE(8)), entries);
}
