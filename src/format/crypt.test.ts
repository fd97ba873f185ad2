import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { GordeError } from "../errors.ts";
import { deriveChunkKey, formatFingerprint, keyedDigest } from "./crypt.ts";

void test("a master key yields distinct encryption and digest keys, deterministically", () => {
  const master = randomBytes(32);
  const a = deriveChunkKey(master);
  const b = deriveChunkKey(Buffer.from(master));
  assert.equal(a.encKey.length, 32);
  assert.equal(a.idKey.length, 32);
  assert.ok(!a.encKey.equals(a.idKey));
  assert.ok(!a.encKey.equals(master) && !a.idKey.equals(master));
  assert.ok(a.encKey.equals(b.encKey) && a.idKey.equals(b.idKey));
  assert.equal(a.fingerprint, b.fingerprint);
  assert.match(a.fingerprint, /^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  assert.notEqual(deriveChunkKey(randomBytes(32)).fingerprint, a.fingerprint);
  // The fingerprint reveals neither key.
  const hex = a.fingerprint.replaceAll(":", "");
  assert.notEqual(hex, a.encKey.toString("hex"));
  assert.notEqual(hex, a.idKey.toString("hex"));
});

void test("derivation is fixed: a known master key gives known keys", () => {
  // Pinned values (docs/format.md has them too): changing the derivation would orphan
  // every encrypted datastore.
  const k = deriveChunkKey(Buffer.alloc(32, 1));
  assert.equal(k.encKey.toString("hex"), "2d4d59deedf643402b9fd15a73162cda6ee578aa9911128552b05e7860d21644");
  assert.equal(k.idKey.toString("hex"), "900f35d94a689c7228c44bac83efca9363e1019347b8052fe0a16ab1788edc51");
  assert.equal(k.fingerprint, "d1:30:d6:d4:29:fb:0e:c3:bb:a2:ba:59:4f:40:b0:f9:78:fd:0b:b2:7f:97:4b:75:a6:73:ea:c6:14:73:2d:69");
  assert.equal(keyedDigest(k, Buffer.from("gorde")).toString("hex"), "d7d9c6d6fce30eb54e54e518eab7bca9660ae0f9359d38f211f42e66c99564c2");
});

void test("keyed digests differ between keys and from SHA-256", () => {
  const data = Buffer.from("the same chunk data");
  const k1 = deriveChunkKey(randomBytes(32));
  const k2 = deriveChunkKey(randomBytes(32));
  const d1 = keyedDigest(k1, data);
  assert.equal(d1.length, 32);
  assert.ok(d1.equals(keyedDigest(k1, Buffer.from(data))));
  assert.ok(!d1.equals(keyedDigest(k2, data)));
  assert.ok(!d1.equals(createHash("sha256").update(data).digest()));
  assert.ok(!d1.equals(keyedDigest(k1, Buffer.from("other chunk data"))));
});

void test("a master key of the wrong size is refused", () => {
  assert.throws(() => deriveChunkKey(randomBytes(16)), (e: unknown) => e instanceof GordeError && e.code === "invalid");
});

void test("fingerprints are lower-case hex pairs joined by colons", () => {
  assert.equal(formatFingerprint(Buffer.from([0, 0xab, 0x0f, 0xff])), "00:ab:0f:ff");
  assert.equal(formatFingerprint(new Uint8Array(0)), "");
});
