import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeBlob, parseBlob } from "./blob.ts";
import { randomBytes } from "node:crypto";
import { type Manifest, checkManifestMac, decodeManifest, encodeManifest, sealManifest } from "./manifest.ts";

const plain: Manifest = {
  format: 1,
  type: "vm",
  id: "100",
  time: 1_700_000_000,
  archives: [],
  cryptMode: "none",
  keyFingerprint: null,
  unprotected: {},
};
const capture = { probe: "note", path: "/cgi-bin/note", state: "captured", time: 1_700_000_000, status: 200, digest: "ab".repeat(32), excerpt: "first note" } as const;

void test("a manifest is written at the lowest format version that holds its members", () => {
  assert.equal(decodeManifest(encodeManifest({ ...plain, format: 2 })).format, 1, "a manifest of format-1 members stays readable by older gorde");
  const captured = decodeManifest(encodeManifest({ ...plain, captures: [capture] }));
  assert.equal(captured.format, 2);
  assert.deepEqual(captured.captures, [capture]);
  const drilled = decodeManifest(encodeManifest({ ...plain, unprotected: { notes: "n", drill: { result: "passed", time: 1_700_000_100, rtoSeconds: 9.5, node: "node1" } } }));
  assert.equal(drilled.format, 2);
  assert.equal(drilled.unprotected.drill?.result, "passed");
});

void test("a manifest that says format 1 but holds format-2 members, or a malformed capture, is refused", () => {
  const raw = (m: object) => Buffer.from(JSON.stringify(m));
  assert.throws(() => decodeManifest(raw({ ...plain, captures: [capture] })), /has members of format 2 but says format 1/);
  assert.throws(() => decodeManifest(raw({ ...plain, format: 2, captures: [{ ...capture, digest: "xyz" }] })), /captures\.0\.digest/);
  assert.throws(() => decodeManifest(raw({ ...plain, format: 2, captures: [{ ...capture, command: "x" }] })), /captures\.0/);
  assert.throws(() => decodeManifest(raw({ ...plain, format: 2, unprotected: { drill: { result: "maybe", time: 1 } } })), /unprotected\.drill\.result/);
  assert.throws(() => decodeManifest(raw({ ...plain, format: 4 })), /written by a newer gorde \(format version 4\); this gorde reads up to version 3/);
});

void test("binary files keep their own layout version: a blob of version 2 is refused as newer", () => {
  const blob = encodeBlob(Buffer.from("data"), 1);
  assert.equal(parseBlob(blob).payload.toString(), "data");
  blob.writeUInt16BE(2, 6);
  assert.throws(() => parseBlob(blob), /written by a newer gorde \(format version 2\); this gorde reads up to version 1/);
});

void test("a sealed manifest (format 3): any change to its protected part is found; its unprotected part may change", () => {
  const m: Manifest = { ...plain, archives: [{ name: "disk0.img", kind: "img", size: 1 << 30, indexes: [{ file: "disk0.img.fidx", csum: "cd".repeat(32), size: 64 }] }], config: { kind: "vm", memoryMiB: 512 } };
  const sealed = sealManifest(m);
  assert.equal(sealed.format, 3);
  assert.match(sealed.csum!, /^[0-9a-f]{64}$/);
  assert.equal(sealed.mac, undefined);
  const bytes = encodeManifest(sealed);
  assert.deepEqual(decodeManifest(bytes), sealed);
  // The order of members is not part of it; the unprotected part is not either.
  const reordered = Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(sealed).reverse())));
  assert.equal(decodeManifest(reordered).csum, sealed.csum);
  assert.equal(decodeManifest(encodeManifest({ ...sealed, unprotected: { notes: "after the upgrade" } })).unprotected.notes, "after the upgrade");
  // One digit of a stored guest config, a size, an index checksum: each refused.
  for (const changed of [
    { ...sealed, config: { kind: "vm", memoryMiB: 513 } },
    { ...sealed, archives: [{ ...sealed.archives[0]!, size: (1 << 30) + 1 }] },
    { ...sealed, archives: [{ ...sealed.archives[0]!, indexes: [{ file: "disk0.img.fidx", csum: "ce".repeat(32), size: 64 }] }] },
    { ...sealed, time: sealed.time + 1 },
  ]) {
    assert.throws(() => decodeManifest(Buffer.from(JSON.stringify(changed))), /manifest does not match its checksum: its protected part was changed\./);
  }
  assert.throws(() => decodeManifest(Buffer.from(JSON.stringify({ ...sealed, csum: undefined }))), /a manifest of format 3 has a checksum/);
  assert.throws(() => decodeManifest(Buffer.from(JSON.stringify({ ...sealed, format: 2 }))), /has members of format 3 but says format 2/);
  // Older manifests, unsealed, still read.
  assert.equal(decodeManifest(encodeManifest(m)).format, 1);
});

void test("an encrypted manifest is signed under its key: a forged one with a recomputed checksum is refused by a reader with the key", () => {
  const master = randomBytes(32);
  const enc: Manifest = { ...plain, cryptMode: "encrypt", keyFingerprint: "aa:".repeat(31) + "aa", config: { kind: "ct", rootfs: "/var/lib/ct" } };
  assert.throws(() => sealManifest(enc), /signed with its key: no key was given/);
  const sealed = decodeManifest(encodeManifest(sealManifest(enc, master)));
  assert.match(sealed.mac!, /^[0-9a-f]{64}$/);
  checkManifestMac(sealed, master, "manifest of ct/101/x");
  // Someone with write access to the datastore but not the key: a changed config, the checksum recomputed.
  const forged = sealManifest({ ...sealed, config: { kind: "ct", rootfs: "/etc" }, mac: undefined }, randomBytes(32));
  assert.doesNotThrow(() => decodeManifest(encodeManifest(forged)), "it passes every check that needs no key");
  assert.throws(() => checkManifestMac(forged, master, "manifest of ct/101/x"), /manifest of ct\/101\/x is not signed by its key: its protected part was changed\./);
  assert.throws(() => decodeManifest(Buffer.from(JSON.stringify({ ...sealed, mac: undefined }))), /an encrypted manifest of format 3 is signed/);
});
