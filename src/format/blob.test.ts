import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { decodeBlob, encodeBlob, parseBlob } from "./blob.ts";
import { MAGIC } from "./magic.ts";

void test("compressible data is stored compressed, random data plain, both decode", () => {
  const text = Buffer.alloc(256 * 1024, "gorde ");
  const z = encodeBlob(text);
  assert.ok(z.subarray(0, 8).equals(MAGIC.blobZstd));
  assert.ok(z.length < text.length / 10);
  assert.ok(decodeBlob(z).equals(text));
  const rnd = randomBytes(100_000);
  const p = encodeBlob(rnd);
  assert.ok(p.subarray(0, 8).equals(MAGIC.blobPlain));
  assert.equal(p.length, rnd.length + 12);
  assert.ok(decodeBlob(p).equals(rnd));
});

void test("a flipped bit, a truncation or a foreign file is refused", () => {
  const blob = encodeBlob(Buffer.alloc(10_000, 7));
  const flipped = Buffer.from(blob);
  flipped[flipped.length - 1]! ^= 1;
  assert.throws(() => decodeBlob(flipped), /CRC/);
  assert.throws(() => decodeBlob(blob.subarray(0, 10)), /truncated/);
  assert.throws(() => decodeBlob(Buffer.from("not a blob at all")), /magic/);
  const newer = Buffer.from(blob);
  newer.writeUInt16BE(9, 6);
  assert.throws(() => parseBlob(newer), /newer gorde \(format version 9\)/);
});

void test("a size that lies is refused: output is bounded", () => {
  const big = encodeBlob(Buffer.alloc(2 * 1024 * 1024));
  assert.throws(() => decodeBlob(big, "chunk", 1024 * 1024), /does not decompress/);
});
