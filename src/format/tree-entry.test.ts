import assert from "node:assert/strict";
import { test } from "node:test";
import { entryStream, treeEntry } from "../../test/helpers.ts";
import { type TreeEntry, comparePaths, decodeEntries, isSafeRelativePath } from "./tree-entry.ts";

const entry = treeEntry;

const stream = entryStream;

void test("entries round trip", () => {
  const list = [
    entry("dir", ""),
    entry("dir", "a"),
    entry("file", "a/f", { size: 4, offset: 3, xattrs: [{ name: Buffer.from("user.x"), value: Buffer.from([0, 1]) }] }),
    entry("file", "a/g", { size: 2, offset: 8 }),
    entry("symlink", "a/l", { link: Buffer.from("../x") }),
    entry("hardlink", "b", { link: Buffer.from("a/f") }),
  ];
  const back = decodeEntries(stream(list), 10);
  assert.deepEqual(back, list);
});

void test("hostile entry streams are refused", () => {
  const root = entry("dir", "");
  const cases: [TreeEntry[], RegExp, number?][] = [
    [[root, entry("file", "../evil")], /unsafe path/],
    [[root, entry("file", "/etc/passwd")], /unsafe path/],
    [[root, entry("file", "a//b")], /unsafe path/],
    [[root, entry("symlink", "a", { link: Buffer.from("/tmp") }), entry("file", "a/x")], /parent is not a directory/],
    [[root, entry("file", "f", { size: 11 })], /outside the payload/],
    [[root, entry("file", "b"), entry("file", "a")], /not in order/],
    [[root, entry("file", "a"), entry("file", "a")], /not in order/],
    [[root, entry("hardlink", "h", { link: Buffer.from("nothing") })], /hard link/],
    [[entry("file", "x")], /root directory/],
  ];
  for (const [list, re] of cases) assert.throws(() => decodeEntries(stream(list), 10), re);
  assert.throws(() => decodeEntries(stream([root], 5), 0), /says it has 5/);
  const s = stream([root, entry("file", "f", { size: 1 })]);
  assert.throws(() => decodeEntries(s.subarray(0, s.length - 13), 10), /no end record/);
  assert.throws(() => decodeEntries(s.subarray(0, 30), 10), /past its end|truncated/);
});

void test("path order is depth-first, component by component", () => {
  const sorted = ["a", "a/b", "a/c", "a.txt", "b"].map((p) => Buffer.from(p));
  const shuffled = [...sorted].reverse().sort(comparePaths);
  assert.deepEqual(shuffled.map(String), sorted.map(String));
  assert.ok(isSafeRelativePath(Buffer.from("a/.b/c..d")));
  assert.ok(!isSafeRelativePath(Buffer.from("a/./b")));
  assert.ok(!isSafeRelativePath(Buffer.from("a\0b")));
});
