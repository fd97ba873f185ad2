import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeBlob, parseBlob } from "./blob.ts";
import { type Manifest, decodeManifest, encodeManifest } from "./manifest.ts";

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
  assert.throws(() => decodeManifest(raw({ ...plain, format: 3 })), /written by a newer gorde \(format version 3\); this gorde reads up to version 2/);
});

void test("binary files keep their own layout version: a blob of version 2 is refused as newer", () => {
  const blob = encodeBlob(Buffer.from("data"), 1);
  assert.equal(parseBlob(blob).payload.toString(), "data");
  blob.writeUInt16BE(2, 6);
  assert.throws(() => parseBlob(blob), /written by a newer gorde \(format version 2\); this gorde reads up to version 1/);
});
