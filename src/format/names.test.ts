import assert from "node:assert/strict";
import { test } from "node:test";
import { parseArchiveName, parseGroup, parseNamespace, parseSnapshotRef, parseSnapshotTime, parseTimeOption } from "./names.ts";

void test("groups, archives and namespaces accept only safe names", () => {
  assert.deepEqual(parseGroup("vm/100"), { type: "vm", id: "100" });
  assert.deepEqual(parseGroup("host/web-1.example"), { type: "host", id: "web-1.example" });
  for (const bad of ["vm", "vm/", "vm/../x", "vm/a/b", "vm/.hidden", "vm/a b", "disk/1", "vm/-x", "ct/ä"]) {
    assert.throws(() => parseGroup(bad), /not a backup group|not a valid backup id/, bad);
  }
  assert.equal(parseArchiveName("disk.img").kind, "img");
  assert.equal(parseArchiveName("root.tree").kind, "tree");
  for (const bad of [".img", "x.zip", "a/b.img", "../x.img", "a b.tree", "x.img/"]) {
    assert.throws(() => parseArchiveName(bad), /not a valid archive name/, bad);
  }
  assert.deepEqual(parseNamespace("a/b"), ["a", "b"]);
  assert.throws(() => parseNamespace("a/../b"), /not a valid namespace/);
});

void test("snapshot times are exact UTC seconds", () => {
  assert.equal(parseSnapshotTime("2026-01-02T03:04:05Z"), Date.UTC(2026, 0, 2, 3, 4, 5) / 1000);
  assert.equal(parseSnapshotTime("2026-02-30T00:00:00Z"), undefined);
  assert.equal(parseSnapshotTime("2026-01-02 03:04:05"), undefined);
  assert.deepEqual(parseSnapshotRef("vm/100/latest"), { type: "vm", id: "100", time: "latest" });
  assert.throws(() => parseSnapshotRef("vm/100/yesterday"), /not a snapshot time/);
  assert.equal(parseTimeOption("2026-01-02T03:04:05+01:00"), Date.UTC(2026, 0, 2, 2, 4, 5) / 1000);
  assert.throws(() => parseTimeOption("soon"), /not an ISO 8601/);
  assert.throws(() => parseTimeOption("2026-01-02T03:04:05.5Z"), /fractions/);
});
