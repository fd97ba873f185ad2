import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import zlib from "node:zlib";
import { GordeError } from "../errors.ts";
import { DEFAULT_ZSTD_LEVEL, checkBlob, decodeBlob, encodeBlob, parseBlob } from "./blob.ts";
import { deriveChunkKey } from "./crypt.ts";
import { ENCRYPTED_BLOB_HEADER_SIZE, MAGIC } from "./magic.ts";

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

const key = deriveChunkKey(randomBytes(32));
const otherKey = deriveChunkKey(randomBytes(32));

void test("with a key: compressible data is BX, random data BE, both round trip", () => {
  const text = Buffer.alloc(256 * 1024, "gorde ");
  const x = encodeBlob(text, DEFAULT_ZSTD_LEVEL, key);
  assert.ok(x.subarray(0, 8).equals(MAGIC.blobEncryptedZstd));
  assert.ok(x.length < text.length / 10);
  assert.ok(decodeBlob(x, "chunk", undefined, key).equals(text));
  const rnd = randomBytes(100_000);
  const e = encodeBlob(rnd, DEFAULT_ZSTD_LEVEL, key);
  assert.ok(e.subarray(0, 8).equals(MAGIC.blobEncrypted));
  assert.equal(e.length, rnd.length + ENCRYPTED_BLOB_HEADER_SIZE);
  assert.ok(decodeBlob(e, "chunk", undefined, key).equals(rnd));
  const empty = encodeBlob(Buffer.alloc(0), DEFAULT_ZSTD_LEVEL, key);
  assert.equal(empty.length, ENCRYPTED_BLOB_HEADER_SIZE);
  assert.equal(decodeBlob(empty, "chunk", undefined, key).length, 0);
  // Level 0 encrypts without compressing.
  assert.ok(encodeBlob(text, 0, key).subarray(0, 8).equals(MAGIC.blobEncrypted));
  // The same data encrypts differently each time (random IV).
  assert.ok(!encodeBlob(rnd, 1, key).equals(e));
});

void test("ciphertext does not contain the plain data", () => {
  const marker = "gorde-secret-marker-0123456789";
  const data = Buffer.concat([randomBytes(5000), Buffer.from(marker), randomBytes(5000)]);
  for (const level of [0, 1]) {
    const blob = encodeBlob(data, level, key);
    assert.equal(blob.indexOf(marker), -1);
    assert.ok(decodeBlob(blob, "chunk", undefined, key).equals(data));
  }
  const text = Buffer.from(marker.repeat(1000));
  assert.equal(encodeBlob(text, 0, key).indexOf(marker), -1);
  assert.equal(encodeBlob(text, 1, key).indexOf(marker), -1);
});

void test("a wrong key is refused as corrupt; no key as unsupported", () => {
  const blob = encodeBlob(Buffer.alloc(10_000, 7), 1, key);
  assert.throws(
    () => decodeBlob(blob, "chunk ab", undefined, otherKey),
    (e: unknown) =>
      e instanceof GordeError && e.code === "corrupt" && /chunk ab cannot be decrypted with this key \(wrong key or damaged data\)/.test(e.message),
  );
  assert.throws(() => decodeBlob(blob, "chunk ab"), (e: unknown) => e instanceof GordeError && e.code === "unsupported" && /has no key/.test(e.message));
  assert.throws(() => parseBlob(blob), (e: unknown) => e instanceof GordeError && e.code === "unsupported");
});

void test("damage to an encrypted blob is caught: by the CRC, and by the tag when the CRC is fixed", () => {
  const blob = encodeBlob(randomBytes(4096), 1, key);
  for (const at of [12, 30, 44, blob.length - 1]) {
    const bad = Buffer.from(blob);
    bad[at]! ^= 1;
    assert.throws(() => checkBlob(bad, "chunk"), (e: unknown) => e instanceof GordeError && e.code === "corrupt" && /CRC/.test(e.message));
    assert.throws(() => decodeBlob(bad, "chunk", undefined, key), /CRC/);
    // Someone who recomputes the CRC still cannot get past the GCM tag.
    bad.writeUInt32LE(zlib.crc32(bad.subarray(12)), 8);
    assert.deepEqual(checkBlob(bad), { encrypted: true, compressed: false });
    assert.throws(() => decodeBlob(bad, "chunk", undefined, key), (e: unknown) => e instanceof GordeError && e.code === "corrupt");
  }
  // The magic is authenticated: turning BE into BX (CRC fixed) fails the tag.
  const relabelled = Buffer.from(blob);
  MAGIC.blobEncryptedZstd.copy(relabelled, 0);
  assert.throws(() => decodeBlob(relabelled, "chunk", undefined, key), /cannot be decrypted/);
  assert.throws(() => checkBlob(blob.subarray(0, 40)), /truncated \(40 bytes\)/);
});

void test("checkBlob needs no key and reports the kind", () => {
  const text = Buffer.alloc(64 * 1024, "x");
  assert.deepEqual(checkBlob(encodeBlob(text, 1, key)), { encrypted: true, compressed: true });
  assert.deepEqual(checkBlob(encodeBlob(randomBytes(100), 1, key)), { encrypted: true, compressed: false });
  assert.deepEqual(checkBlob(encodeBlob(text)), { encrypted: false, compressed: true });
  assert.deepEqual(checkBlob(encodeBlob(randomBytes(100))), { encrypted: false, compressed: false });
  assert.throws(() => checkBlob(Buffer.from("GRDEQQ\x00\x01xxxxxxxx", "latin1")), /unknown blob kind "QQ"/);
  const newer = encodeBlob(text, 1, key);
  newer.writeUInt16BE(9, 6);
  assert.throws(() => checkBlob(newer, "chunk"), (e: unknown) => e instanceof GordeError && e.code === "unsupported");
});

void test("an unencrypted blob decodes with a key given", () => {
  const text = Buffer.alloc(64 * 1024, "z");
  assert.ok(decodeBlob(encodeBlob(text), "chunk", undefined, key).equals(text));
  const rnd = randomBytes(1000);
  assert.ok(decodeBlob(encodeBlob(rnd), "chunk", undefined, key).equals(rnd));
});

void test("with a key, sizes that lie are refused", () => {
  const zeros = encodeBlob(Buffer.alloc(2 * 1024 * 1024), 1, key);
  assert.throws(() => decodeBlob(zeros, "chunk", 1024 * 1024, key), /does not decompress/);
  const rnd = encodeBlob(randomBytes(2000), 1, key);
  assert.throws(() => decodeBlob(rnd, "chunk", 1000, key), /larger than 1000 bytes/);
});
