import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { GordeError } from "../errors.ts";
import { tempDir } from "../../test/helpers.ts";
import { readRegularFile, readRegularFileSync } from "./bounded-read.ts";

const corrupt = (re: RegExp) => (err: unknown) => err instanceof GordeError && err.code === "corrupt" && re.test(err.message);

void test("a datastore file is read only when it is a regular file within its bound, never through a symlink, a FIFO or a device", async () => {
  const tmp = tempDir("gorde-bounded-");
  try {
    const file = path.join(tmp.dir, "chunk");
    fs.writeFileSync(file, Buffer.alloc(1000, 7));
    assert.deepEqual(readRegularFileSync(file, 1000, "chunk a"), Buffer.alloc(1000, 7));
    assert.deepEqual(await readRegularFile(file, 1000, "chunk a"), Buffer.alloc(1000, 7));
    fs.writeFileSync(path.join(tmp.dir, "empty"), "");
    assert.equal(readRegularFileSync(path.join(tmp.dir, "empty"), 10, "empty").length, 0);
    assert.throws(() => readRegularFileSync(file, 999, "chunk a"), corrupt(/^chunk a is 1000 bytes, more than the 999 it may have\.$/));
    await assert.rejects(readRegularFile(file, 999, "chunk a"), corrupt(/more than the 999/));

    const zero = path.join(tmp.dir, "zero");
    fs.symlinkSync("/dev/zero", zero);
    assert.throws(() => readRegularFileSync(zero, 1 << 20, "chunk b"), corrupt(/^chunk b is a symlink, not a regular file\.$/));
    await assert.rejects(readRegularFile(zero, 1 << 20, "chunk b"), corrupt(/is a symlink/));
    const link = path.join(tmp.dir, "link");
    fs.symlinkSync(file, link);
    assert.throws(() => readRegularFileSync(link, 1 << 20, "chunk c"), corrupt(/is a symlink/), "not even to a regular file");

    // A FIFO no one writes: refused at once, not waited on.
    const fifo = path.join(tmp.dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    assert.throws(() => readRegularFileSync(fifo, 1 << 20, "chunk d"), corrupt(/^chunk d is a FIFO, not a regular file\.$/));
    await assert.rejects(readRegularFile(fifo, 1 << 20, "chunk d"), corrupt(/is a FIFO/));

    const dir = path.join(tmp.dir, "manifest.json");
    fs.mkdirSync(dir);
    assert.throws(() => readRegularFileSync(dir, 1 << 20, "manifest of x"), corrupt(/^manifest of x is a directory, not a regular file\.$/));
    await assert.rejects(readRegularFile(dir, 1 << 20, "manifest of x"), corrupt(/is a directory/));

    // Missing stays ENOENT: the caller says what that means.
    assert.throws(() => readRegularFileSync(path.join(tmp.dir, "nope"), 10, "x"), { code: "ENOENT" });
    await assert.rejects(readRegularFile(path.join(tmp.dir, "nope"), 10, "x"), { code: "ENOENT" });
  } finally {
    tmp.cleanup();
  }
});
