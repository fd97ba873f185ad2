// All-zero chunks are recognised by a memcmp, not by hashing: their digest per size is cached.
import { createHash } from "node:crypto";

let zeros = Buffer.alloc(0);
const digests = new Map<number, string>();

export function isZero(data: Uint8Array): boolean {
  if (zeros.length < data.length) zeros = Buffer.alloc(Math.max(data.length, 4 * 1024 * 1024));
  return Buffer.compare(data, zeros.subarray(0, data.length)) === 0;
}

export function zeroDigestHex(size: number): string {
  let d = digests.get(size);
  if (d === undefined) {
    d = createHash("sha256").update(Buffer.alloc(size)).digest("hex");
    digests.set(size, d);
  }
  return d;
}
