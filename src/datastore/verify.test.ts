import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { encodeBlob } from "../format/blob.ts";
import { deriveChunkKey } from "../format/crypt.ts";
import { ChunkPool } from "./chunk-pool.ts";
import { Datastore, MANIFEST_FILE, type SnapshotInfo } from "./datastore.ts";
import { verifyAll, verifySnapshots } from "./verify.ts";
import { openLocalReader, restoreArchive } from "../client/restore.ts";
import { GordeError } from "../errors.ts";
import { T, VM, data, hexOf, makeSnapshot, newStore, removeStores } from "../../test/store-fixture.ts";

const NOW = T + 86400;

const pool = new ChunkPool();
after(async () => {
  await pool.close();
  await removeStores();
});



async function verifyState(store: Datastore, snap: SnapshotInfo) {
  return (await store.snapshotInfo(snap.ns, snap)).manifest?.unprotected.verify;
}

function flipLastByte(file: string): void {
  const b = fs.readFileSync(file);
  b[b.length - 1]! ^= 0x55;
  fs.writeFileSync(file, b);
}

void describe("verifySnapshots", () => {
  void it("a good snapshot is ok and its state is stored", async () => {
    const store = await newStore("gorde-verify-");
    const snap = await makeSnapshot(store, T, {
      img: [data(), data(true), data()],
      tree: { entries: [data(true)], payload: [data(), data(true)] },
    });
    const seen: number[] = [];
    const r = await verifySnapshots(store, [snap], { pool, now: NOW, progress: (e) => seen.push(e.done) });
    assert.deepEqual(r.snapshots, [{ snapshot: "vm/100/2024-06-01T00:00:00Z", ns: [], state: "ok", errors: [] }]);
    assert.equal(r.chunksChecked, 6);
    assert.deepEqual(r.badChunks, []);
    assert.deepEqual(r.missingChunks, []);
    assert.equal(r.ok, true);
    assert.equal(seen.at(-1), 6);
    assert.deepEqual(await verifyState(store, snap), { state: "ok", time: NOW });
    store.close();
  });

  void it("reads a chunk shared by several snapshots once", async () => {
    const store = await newStore("gorde-verify-");
    const shared = [data(), data()];
    const a = await makeSnapshot(store, T, { img: shared });
    const b = await makeSnapshot(store, T + 60, { img: [...shared, data()] });
    const r = await verifySnapshots(store, [a, b], { now: NOW }); // creates and closes its own pool
    assert.equal(r.chunksChecked, 3);
    assert.deepEqual(
      r.snapshots.map((s) => s.state),
      ["ok", "ok"],
    );
    store.close();
  });

  void it("a corrupt chunk fails its snapshot and is renamed to .0.bad", async () => {
    const store = await newStore("gorde-verify-");
    const broken = data(true);
    const a = await makeSnapshot(store, T, { img: [data(), broken] });
    const b = await makeSnapshot(store, T, { img: [data(), data(true)] }, { group: { type: "ct", id: "200" } });
    const hex = hexOf(broken);
    const file = store.chunks.chunkPath(hex);
    flipLastByte(file);

    const r = await verifySnapshots(store, [a, b], { pool, now: NOW });
    assert.equal(r.ok, false);
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.match(r.snapshots[0]!.errors[0]!, new RegExp(`chunk ${hex} fails its CRC check`));
    assert.equal(r.snapshots[1]!.state, "ok");
    assert.deepEqual(r.badChunks, [{ digest: hex, reason: `chunk ${hex} fails its CRC check.`, renamedTo: `${file}.0.bad` }]);
    assert.ok(!fs.existsSync(file));
    assert.ok(fs.existsSync(`${file}.0.bad`));
    assert.deepEqual(await verifyState(store, a), { state: "failed", time: NOW, badChunks: 1 });
    assert.deepEqual(await verifyState(store, b), { state: "ok", time: NOW });
    store.close();
  });

  void it("an encrypted blob under the digest a plain snapshot names is not its data: failed and moved aside", async () => {
    const store = await newStore("gorde-verify-");
    const victim = data(true);
    const a = await makeSnapshot(store, T, { img: [data(), victim] });
    const hex = hexOf(victim);
    const file = store.chunks.chunkPath(hex);
    // A well-formed encrypted blob (its CRC is right): only its crypt mode gives it away.
    fs.writeFileSync(file, encodeBlob(randomBytes(4096), 1, deriveChunkKey(randomBytes(32))));
    const r = await verifySnapshots(store, [a], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.match(r.snapshots[0]!.errors.join(" "), new RegExp(`chunk ${hex} is encrypted but snapshot vm/100/\\S+ is not`));
    assert.ok(!fs.existsSync(file), "moved aside, so the next backup stores the real chunk");
    assert.ok(fs.existsSync(`${file}.0.bad`));
    store.close();
  });

  void it("a chunk whose data does not match its digest is renamed to the next free .bad name", async () => {
    const store = await newStore("gorde-verify-");
    const good = data();
    const snap = await makeSnapshot(store, T, { img: [good] });
    const hex = hexOf(good);
    const file = store.chunks.chunkPath(hex);
    // A valid blob of other data under this digest: the CRC passes, the digest does not.
    fs.writeFileSync(file, encodeBlob(data()));
    fs.writeFileSync(`${file}.0.bad`, "an older bad copy");

    const r = await verifySnapshots(store, [snap], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.match(r.badChunks[0]!.reason, /does not match its digest/);
    assert.equal(r.badChunks[0]!.renamedTo, `${file}.1.bad`);
    assert.equal(fs.readFileSync(`${file}.0.bad`, "utf8"), "an older bad copy");
    store.close();
  });

  void it("a missing chunk is reported and fails its snapshot", async () => {
    const store = await newStore("gorde-verify-");
    const gone = data();
    const snap = await makeSnapshot(store, T, { tree: { entries: [data(true)], payload: [gone, data()] } });
    const hex = hexOf(gone);
    fs.rmSync(store.chunks.chunkPath(hex));

    const r = await verifySnapshots(store, [snap], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.deepEqual(r.snapshots[0]!.errors, [`chunk ${hex} is missing.`]);
    assert.deepEqual(r.missingChunks, [hex]);
    assert.deepEqual(r.badChunks, []);
    assert.equal(r.ok, false);
    assert.deepEqual(await verifyState(store, snap), { state: "failed", time: NOW, badChunks: 1 });
    store.close();
  });

  void it("a corrupt index fails its snapshot with the reason", async () => {
    const store = await newStore("gorde-verify-");
    const snap = await makeSnapshot(store, T, { img: [data()], tree: { entries: [data()], payload: [data()] } });
    flipLastByte(path.join(snap.dir, "disk.img.fidx"));

    const r = await verifySnapshots(store, [snap], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.deepEqual(r.snapshots[0]!.errors, [
      "index disk.img.fidx of vm/100/2024-06-01T00:00:00Z does not match the checksum in its manifest.",
    ]);
    assert.equal(r.chunksChecked, 2, "the other archive's chunks are still checked");
    assert.equal((await verifyState(store, snap))?.state, "failed");
    store.close();
  });

  void it("skips an unfinished snapshot", async () => {
    const store = await newStore("gorde-verify-");
    const snap = await makeSnapshot(store, T, { img: [data()] }, { finished: false });
    const r = await verifySnapshots(store, [snap], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "skipped");
    assert.match(r.snapshots[0]!.errors[0]!, /unfinished/);
    assert.equal(r.chunksChecked, 0);
    assert.equal(r.ok, true);
    assert.ok(!fs.existsSync(path.join(snap.dir, MANIFEST_FILE)));
    store.close();
  });
});

void describe("verifyAll", () => {
  void it("verifies every namespace below the one given and skips recently verified snapshots", async () => {
    const store = await newStore("gorde-verify-");
    await makeSnapshot(store, T, { img: [data()] });
    await makeSnapshot(store, T, { img: [data()] }, { ns: ["a"] });
    await makeSnapshot(store, T + 60, { img: [data()] }, { ns: ["a", "b"], group: { type: "host", id: "h1" } });
    await makeSnapshot(store, T + 120, { img: [data()] }, { ns: ["a", "b"], group: { type: "host", id: "h1" }, finished: false });

    const all = await verifyAll(store, { pool, now: NOW });
    assert.deepEqual(
      all.snapshots.map((s) => [s.ns.join("/"), s.snapshot, s.state]),
      [
        ["", "vm/100/2024-06-01T00:00:00Z", "ok"],
        ["a", "vm/100/2024-06-01T00:00:00Z", "ok"],
        ["a/b", "host/h1/2024-06-01T00:01:00Z", "ok"],
        ["a/b", "host/h1/2024-06-01T00:02:00Z", "skipped"],
      ],
    );

    const sub = await verifyAll(store, { pool, ns: ["a"], now: NOW + 86400 });
    assert.equal(sub.snapshots.filter((s) => s.state === "ok").length, 2);

    // the root's snapshot was verified a day ago, the others just now
    const skipped = await verifyAll(store, { pool, now: NOW + 86400, skipVerifiedWithinDays: 0.5 });
    assert.deepEqual(
      skipped.snapshots.map((s) => s.snapshot),
      ["vm/100/2024-06-01T00:00:00Z", "host/h1/2024-06-01T00:02:00Z"], // the root's and the unfinished one
    );
    assert.equal((await verifyAll(store, { pool, now: NOW + 86400, skipVerifiedWithinDays: 2 })).snapshots.length, 1);
    const none = await verifyAll(store, { pool, now: NOW + 2 * 86400, skipVerifiedWithinDays: 0.5 });
    assert.equal(none.snapshots.length, 4);
    store.close();
  });

  void it("a chunk that is a FIFO or a symlink to /dev/zero is refused at once, not waited on or read without end: failed and moved aside", async () => {
    const store = await newStore("gorde-verify-");
    const fifoChunk = data(true);
    const zeroChunk = data(true);
    const snap = await makeSnapshot(store, T, { img: [data(), fifoChunk, zeroChunk] });
    const fifo = store.chunks.chunkPath(hexOf(fifoChunk));
    const zero = store.chunks.chunkPath(hexOf(zeroChunk));
    fs.rmSync(fifo);
    execFileSync("mkfifo", [fifo]);
    fs.rmSync(zero);
    fs.symlinkSync("/dev/zero", zero);

    const r = await verifySnapshots(store, [snap], { pool, now: NOW });
    assert.equal(r.snapshots[0]!.state, "failed");
    assert.deepEqual(
      r.badChunks.sort((a, b) => a.reason.localeCompare(b.reason)),
      [
        { digest: hexOf(fifoChunk), reason: `chunk ${hexOf(fifoChunk)} is a FIFO, not a regular file.`, renamedTo: `${fifo}.0.bad` },
        { digest: hexOf(zeroChunk), reason: `chunk ${hexOf(zeroChunk)} is a symlink, not a regular file.`, renamedTo: `${zero}.0.bad` },
      ].sort((a, b) => a.reason.localeCompare(b.reason)),
    );
    // Put back where they were, both stop a restore at once (whichever of them its parallel
    // reads meet first is named), and no image is written.
    fs.renameSync(`${fifo}.0.bad`, fifo);
    fs.renameSync(`${zero}.0.bad`, zero);
    const target = path.join(path.dirname(store.dir), `restored-${randomBytes(4).toString("hex")}.img`);
    const reader = await openLocalReader(store, [], snap);
    try {
      await assert.rejects(restoreArchive(reader, { snapshot: snap, archive: "disk.img", target }), (err: Error) => err instanceof GordeError && err.code === "corrupt" && /^chunk [0-9a-f]{64} is a (FIFO|symlink), not a regular file\.$/.test(err.message));
    } finally {
      await reader.close();
    }
    assert.equal(fs.existsSync(target), false, "no half-written image");
    store.close();
  });

  void it("an index or a manifest that is a directory or a FIFO fails its snapshot in one sentence; the rest is listed and verified", async () => {
    const store = await newStore("gorde-verify-");
    await makeSnapshot(store, T, { img: [data()] });
    const dirIndex = await makeSnapshot(store, T + 60, { img: [data()] });
    const fifoIndex = await makeSnapshot(store, T + 120, { img: [data()] });
    const dirManifest = await makeSnapshot(store, T + 180, { img: [data()] });
    fs.rmSync(path.join(dirIndex.dir, "disk.img.fidx"));
    fs.mkdirSync(path.join(dirIndex.dir, "disk.img.fidx"));
    fs.rmSync(path.join(fifoIndex.dir, "disk.img.fidx"));
    execFileSync("mkfifo", [path.join(fifoIndex.dir, "disk.img.fidx")]);
    fs.rmSync(path.join(dirManifest.dir, MANIFEST_FILE));
    fs.mkdirSync(path.join(dirManifest.dir, MANIFEST_FILE));

    // Listed: the damaged one with its reason, the others as they are.
    const listed = await store.listSnapshots([], VM);
    assert.deepEqual(
      listed.map((x) => [x.time, x.finished, x.error?.message]),
      [
        [T, true, undefined],
        [T + 60, true, undefined],
        [T + 120, true, undefined],
        [T + 180, false, "manifest of vm/100/2024-06-01T00:03:00Z is a directory, not a regular file."],
      ],
    );
    const r = await verifyAll(store, { pool, now: NOW });
    assert.deepEqual(
      r.snapshots.map((x) => [x.state, x.errors]),
      [
        ["ok", []],
        ["failed", ["index disk.img.fidx of vm/100/2024-06-01T00:01:00Z is a directory, not a regular file."]],
        ["failed", ["index disk.img.fidx of vm/100/2024-06-01T00:02:00Z is a FIFO, not a regular file."]],
        ["failed", ["manifest of vm/100/2024-06-01T00:03:00Z is a directory, not a regular file."]],
      ],
    );
    store.close();
  });

  void it("reports a snapshot whose manifest is unreadable as failed", async () => {
    const store = await newStore("gorde-verify-");
    await makeSnapshot(store, T, { img: [data()] });
    const bad = await makeSnapshot(store, T + 60, { img: [data()] });
    fs.writeFileSync(path.join(bad.dir, MANIFEST_FILE), "{ not json");
    const r = await verifyAll(store, { pool, now: NOW });
    assert.equal(r.ok, false);
    assert.deepEqual(
      r.snapshots.map((s) => s.state),
      ["ok", "failed"],
    );
    assert.match(r.snapshots[1]!.errors[0]!, /not valid JSON/);
    store.close();
  });
});
