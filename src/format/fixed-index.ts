// Fixed index: the chunk list of a block image (docs/format.md, "Fixed index").
//   header (64): magic(8) ctime(i64) imageSize(u64) chunkSize(u64) sha256(digests)(32)
//   body: one 32-byte digest per chunk, ceil(imageSize / chunkSize) of them
import { createHash } from "node:crypto";
import { corrupt } from "../errors.ts";
import {
  DIGEST_SIZE,
  INDEX_HEADER_SIZE,
  MAGIC,
  MAX_FIXED_CHUNK_SIZE,
  MIN_FIXED_CHUNK_SIZE,
} from "./magic.ts";
import { checkMagic } from "./index-header.ts";

export interface FixedIndex {
  ctime: number;
  size: number;
  chunkSize: number;
  /** count × 32 bytes */
  digests: Buffer;
}

export function fixedChunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

export function isValidFixedChunkSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_FIXED_CHUNK_SIZE && n <= MAX_FIXED_CHUNK_SIZE && (n & (n - 1)) === 0;
}

export function encodeFixedIndex(index: FixedIndex): Buffer {
  const head = Buffer.alloc(INDEX_HEADER_SIZE);
  MAGIC.fixedIndex.copy(head, 0);
  head.writeBigInt64LE(BigInt(index.ctime), 8);
  head.writeBigUInt64LE(BigInt(index.size), 16);
  head.writeBigUInt64LE(BigInt(index.chunkSize), 24);
  createHash("sha256").update(index.digests).digest().copy(head, 32);
  return Buffer.concat([head, index.digests]);
}

export function decodeFixedIndex(buf: Buffer, what = "fixed index"): FixedIndex {
  checkMagic(buf, "FI", what);
  const size = Number(buf.readBigUInt64LE(16));
  const chunkSize = Number(buf.readBigUInt64LE(24));
  if (!isValidFixedChunkSize(chunkSize)) throw corrupt(`${what} has an invalid chunk size ${chunkSize}.`);
  if (!Number.isSafeInteger(size)) throw corrupt(`${what} has an invalid image size.`);
  const count = fixedChunkCount(size, chunkSize);
  if (buf.length !== INDEX_HEADER_SIZE + count * DIGEST_SIZE) {
    throw corrupt(`${what} is ${buf.length} bytes but its header describes ${count} chunks.`);
  }
  const digests = buf.subarray(INDEX_HEADER_SIZE);
  if (!createHash("sha256").update(digests).digest().equals(buf.subarray(32, 64))) {
    throw corrupt(`${what} fails its checksum.`);
  }
  return { ctime: Number(buf.readBigInt64LE(8)), size, chunkSize, digests };
}
