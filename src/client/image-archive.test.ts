import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { Datastore } from "../datastore/datastore.ts";
import { tempDir } from "../../test/helpers.ts";
import { backup } from "./backup.ts";
import { restore } from "./restore.ts";

void test("block images: bit-exact, sparse, incremental, unchanged files not read", async () => {
  const tmp = tempDir();
  const store = await Datastore.init(path.join(tmp.dir, "repo"));
  try {
    const img = path.join(tmp.dir, "disk.raw");
    const size = 20 * 1024 * 1024 + 4096 + 17; // not a multiple of the chunk size
    fs.writeFileSync(img, "");
    fs.truncateSync(img, size);
    const fd = fs.openSync(img, "r+");
    fs.writeSync(fd, randomBytes(3 * 1024 * 1024), 0, 3 * 1024 * 1024, 1024 * 1024);
    fs.writeSync(fd, Buffer.alloc(2 * 1024 * 1024, "text "), 0, 2 * 1024 * 1024, 12 * 1024 * 1024);
    fs.writeSync(fd, Buffer.from("tail"), 0, 4, size - 4);
    const group = { type: "vm", id: "100" } as const;
    const first = await backup(store, { group, sources: [{ archive: "disk.img", source: img }] });
    assert.equal(first.base, null);
    assert.ok(first.stats.zeroChunks > 50);

    const same = await backup(store, { group, sources: [{ archive: "disk.img", source: img }] });
    assert.equal(same.stats.newChunks, 0);
    assert.equal(same.stats.reusedBytes, size, "an unchanged image file is reused whole");

    fs.writeSync(fd, randomBytes(4096), 0, 4096, 7 * 1024 * 1024);
    fs.closeSync(fd);
    const changed = await backup(store, { group, sources: [{ archive: "disk.img", source: img }] });
    assert.equal(changed.stats.newChunks, 1, "one 4 KiB write stores one chunk");

    const out = path.join(tmp.dir, "restored.raw");
    await restore(store, { snapshot: { ...group, time: "latest" }, archive: "disk.img", target: out });
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(img)));
    assert.ok(fs.statSync(out).blocks * 512 < 8 * 1024 * 1024, "zero chunks are holes");
    await assert.rejects(
      restore(store, { snapshot: { ...group, time: "latest" }, archive: "disk.img", target: out }),
      /already exists/,
    );
    const older = await restore(store, { snapshot: { ...group, time: first.time }, archive: "disk.img", target: path.join(tmp.dir, "first.raw") });
    assert.equal(older.bytes, size);
  } finally {
    store.close();
    tmp.cleanup();
  }
});
