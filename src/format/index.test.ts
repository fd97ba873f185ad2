import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { DynamicIndex, DynamicIndexBuilder, decodeDynamicIndex, encodeDynamicIndex } from "./dynamic-index.ts";
import { decodeFixedIndex, encodeFixedIndex } from "./fixed-index.ts";

void test("fixed index round trip and validation", () => {
  const chunkSize = 256 * 1024;
  const size = 3 * chunkSize + 17;
  const digests = randomBytes(4 * 32);
  const bytes = encodeFixedIndex({ ctime: 1, size, chunkSize, digests });
  const back = decodeFixedIndex(bytes);
  assert.equal(back.size, size);
  assert.ok(back.digests.equals(digests));
  assert.throws(() => decodeFixedIndex(bytes.subarray(0, bytes.length - 1)), /header describes 4 chunks/);
  const bad = Buffer.from(bytes);
  bad[100]! ^= 1;
  assert.throws(() => decodeFixedIndex(bad), /checksum/);
  const lie = Buffer.from(bytes);
  lie.writeBigUInt64LE(BigInt(size * 2), 16);
  assert.throws(() => decodeFixedIndex(lie), /describes/);
  const odd = Buffer.from(bytes);
  odd.writeBigUInt64LE(1000n, 24);
  assert.throws(() => decodeFixedIndex(odd), /invalid chunk size/);
});

void test("dynamic index round trip, lookup and validation", () => {
  const b = new DynamicIndexBuilder();
  const sizes = [100, 5000, 1, 70000];
  for (const s of sizes) b.add(s, randomBytes(32));
  const idx = b.build(5);
  const back = decodeDynamicIndex(encodeDynamicIndex(idx));
  assert.equal(back.size, 75101);
  assert.equal(back.find(0), 0);
  assert.equal(back.find(99), 0);
  assert.equal(back.find(100), 1);
  assert.equal(back.find(5100), 2);
  assert.equal(back.find(75100), 3);
  const bytes = encodeDynamicIndex(idx);
  assert.throws(() => decodeDynamicIndex(bytes.subarray(0, 70)), /header describes/);
  // non-increasing offsets with a recomputed checksum are still refused
  const forged = new DynamicIndexBuilder();
  forged.add(10, randomBytes(32));
  const e = Buffer.from(forged.build(0).entries);
  const two = Buffer.concat([e, e]);
  assert.throws(() => decodeDynamicIndex(encodeDynamicIndex(new DynamicIndex(0, two))), /invalid chunk boundary/);
});
