import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { Datastore } from "../datastore/datastore.ts";
import { tempDir } from "../../test/helpers.ts";
import { backup } from "./backup.ts";
import { GordeError } from "../errors.ts";
import { deriveChunkKey } from "../format/crypt.ts";
import { flock } from "../sys/posix.ts";
import { partialFile } from "./image-archive.ts";
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

/** An image as users' disks look: unique blocks, a block repeated, text, zeros and a sparse hole. */
function userImage(file: string, size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  const unit = 64 * 1024;
  const repeated = randomBytes(unit);
  for (let pos = 0, i = 0; pos < size; pos += unit, i++) {
    const part = b.subarray(pos, Math.min(size, pos + unit));
    if ((i + seed) % 7 === 0) continue; // zeros
    if ((i + seed) % 5 === 0) repeated.copy(part);
    else if ((i + seed) % 3 === 0) part.fill(`line ${seed} of a log file\n`);
    else randomBytes(part.length).copy(part);
  }
  fs.writeFileSync(file, b);
  return b;
}

void test("an image restore cut off keeps what it restored, and the same restore goes on from there", async () => {
  const tmp = tempDir();
  const store = await Datastore.init(path.join(tmp.dir, "repo"));
  try {
    const group = { type: "vm", id: "101" } as const;
    const img = path.join(tmp.dir, "disk.raw");
    const master = randomBytes(32);
    const key = { master, chunkKey: deriveChunkKey(master) };
    for (const withKey of [false, true]) {
      const k = withKey ? key : undefined;
      const want = userImage(img, 12 * 1024 * 1024 + 777, withKey ? 2 : 1);
      const snap = await backup(store, { group, sources: [{ archive: "disk.img", source: img }], key: k });
      const ref = { ...group, time: snap.time };
      const target = path.join(tmp.dir, `restored-${withKey}.raw`);
      const partial = partialFile(target);

      // Cut off (as by a lost link or Ctrl-C) once 5 MiB are in place; two chunks in flight, so most are still to come.
      const cut = new AbortController();
      await assert.rejects(
        restore(store, { snapshot: ref, archive: "disk.img", target, key: k, concurrency: 2, signal: cut.signal, progress: (e) => e.done >= 5 * 1024 * 1024 && cut.abort(new Error("interrupted"))}),
        (err: Error) => err instanceof GordeError && /^interrupted; the [\d.]+ MiB restored so far are kept in .*\.gorde-partial, and the same restore goes on from there\.$/.test(err.message),
      );
      assert.ok(!fs.existsSync(target), "no target before the restore is whole");
      assert.equal(fs.statSync(partial).size, want.length);

      const r = await restore(store, { snapshot: ref, archive: "disk.img", target, key: k });
      assert.ok(r.resumedBytes! >= 5 * 1024 * 1024 && r.resumedBytes! < want.length, `resumed ${r.resumedBytes}`);
      assert.ok(fs.readFileSync(target).equals(want), "the resumed restore is bit-exact");
      assert.ok(!fs.existsSync(partial));
    }

    // A partial file of another image (other bytes, another size) is set right, zeros included.
    const a = userImage(img, 9 * 1024 * 1024, 3);
    const snapA = await backup(store, { group, sources: [{ archive: "disk.img", source: img }] });
    const b = userImage(img, 6 * 1024 * 1024 + 5, 4);
    const snapB = await backup(store, { group, sources: [{ archive: "disk.img", source: img }] });
    const target = path.join(tmp.dir, "other.raw");
    const cut = new AbortController();
    await assert.rejects(restore(store, { snapshot: { ...group, time: snapA.time }, archive: "disk.img", target, concurrency: 2, signal: cut.signal, progress: (e) => e.done >= 4 * 1024 * 1024 && cut.abort(new Error("interrupted")) }));
    assert.ok(fs.readFileSync(partialFile(target)).subarray(0, 1024 * 1024).equals(a.subarray(0, 1024 * 1024)));
    await restore(store, { snapshot: { ...group, time: snapB.time }, archive: "disk.img", target });
    assert.ok(fs.readFileSync(target).equals(b));

    // Refused: a partial file that is another file's second name…
    const victim = path.join(tmp.dir, "victim");
    fs.writeFileSync(victim, "keep me");
    const linked = path.join(tmp.dir, "linked.raw");
    fs.linkSync(victim, partialFile(linked));
    await assert.rejects(restore(store, { snapshot: { ...group, time: snapB.time }, archive: "disk.img", target: linked }), /is not a regular file of this user's with one name; remove it and restore again\./);
    assert.equal(fs.readFileSync(victim, "utf8"), "keep me");
    // …one that is a symlink (followed, the restore would write where it points) or a directory.
    const pointed = path.join(tmp.dir, "pointed.raw");
    fs.symlinkSync(victim, partialFile(pointed));
    await assert.rejects(restore(store, { snapshot: { ...group, time: snapB.time }, archive: "disk.img", target: pointed }), /gorde-partial is not a regular file; remove it and restore again\./);
    assert.equal(fs.readFileSync(victim, "utf8"), "keep me");
    const dirred = path.join(tmp.dir, "dirred.raw");
    fs.mkdirSync(partialFile(dirred));
    await assert.rejects(restore(store, { snapshot: { ...group, time: snapB.time }, archive: "disk.img", target: dirred }), /gorde-partial is not a regular file; remove it and restore again\./);
    assert.ok(!fs.existsSync(pointed) && !fs.existsSync(dirred));
    // …and one another restore holds.
    const held = path.join(tmp.dir, "held.raw");
    const fd = fs.openSync(partialFile(held), "w");
    assert.ok(flock(fd, "ex", false));
    await assert.rejects(restore(store, { snapshot: { ...group, time: snapB.time }, archive: "disk.img", target: held }), /^GordeError: another restore to .*held\.raw is running/);
    fs.closeSync(fd);
    assert.ok(!fs.existsSync(held));
  } finally {
    store.close();
    tmp.cleanup();
  }
});
