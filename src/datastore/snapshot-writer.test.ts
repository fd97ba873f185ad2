import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { encodeBlob } from "../format/blob.ts";
import { FORMAT_VERSION } from "../format/magic.ts";
import type { Manifest } from "../format/manifest.ts";
import type { Group } from "../format/names.ts";
import { ChunkPool } from "./chunk-pool.ts";
import { type Datastore, OWNER_FILE, latestUsable } from "./datastore.ts";
import { SnapshotWriter, type StagedChunk } from "./snapshot-writer.ts";
import { T, VM, data, hexOf, makeSnapshot, newStore, removeStores } from "../../test/store-fixture.ts";

after(async () => {
  await removeStores();
});

function manifestOf(w: SnapshotWriter): Manifest {
  return { format: FORMAT_VERSION, type: w.ref.type, id: w.ref.id, time: w.ref.time, archives: [], cryptMode: "none", keyFingerprint: null, unprotected: {} };
}

/** A chunk of a guest's disk written by a worker to its temp file, not yet named. */
async function written(store: Datastore, pool: ChunkPool): Promise<{ hex: string; staged: StagedChunk }> {
  const d = data(true);
  const hex = hexOf(d);
  const blob = encodeBlob(d);
  const r = await pool.store(blob, hex, d.length, false);
  assert.equal(r.state, "new");
  assert.ok(fs.existsSync(r.pending!.tmp) && !store.chunks.exists(hex));
  return { hex, staged: { pending: r.pending!, bytes: blob.length } };
}

void describe("SnapshotWriter", () => {
  void it("takes the newest snapshot whose verify did not fail as the base, and a time after the newest", async () => {
    const store = await newStore("gorde-writer-");
    await makeSnapshot(store, T, { img: [data()] });
    const good = await makeSnapshot(store, T + 3600, { img: [data()] });
    const failed = await makeSnapshot(store, T + 7200, { img: [data()] });
    await store.updateUnprotected(failed, (u) => (u.verify = { state: "failed", time: T + 7300, badChunks: 1 }));
    await makeSnapshot(store, T + 9000, { img: [data()] }, { finished: false });

    await assert.rejects(SnapshotWriter.open(store, { ns: [], group: VM, time: T + 9000 }), (e: GordeError) => {
      assert.equal(e.code, "usage");
      assert.match(e.message, /is not newer than the group's last snapshot/);
      return true;
    });
    const w = await SnapshotWriter.open(store, { ns: [], group: VM, time: T + 9001 });
    assert.equal(w.base?.time, good.time);
    assert.equal(w.ref.time, T + 9001);
    // One backup per group at a time.
    await assert.rejects(SnapshotWriter.open(store, { ns: [], group: VM }), /another backup of vm\/100 is running/);
    await w.finish(manifestOf(w));
    assert.equal((await store.snapshotInfo([], w.ref)).finished, true);
    // Two backups within one second: the next one is a second later.
    const next = await SnapshotWriter.open(store, { ns: [], group: VM, time: undefined });
    assert.ok(next.ref.time > T + 9001);
    assert.equal(next.base?.time, T + 9001);
    await next.abort();
  });

  void it("stages chunks and names them when it finishes, manifest last", async () => {
    const store = await newStore("gorde-writer-");
    const pool = new ChunkPool(1);
    try {
      await pool.init(store.chunks.dir, 1, Buffer.alloc(0));
      const w = await SnapshotWriter.open(store, { ns: [], group: { type: "ct", id: "101" } });
      assert.equal(w.base, undefined);
      const a = await written(store, pool);
      const b = await written(store, pool);
      await w.stage(pool, [a.staged, b.staged]);
      assert.equal(store.chunks.exists(a.hex), false, "a batch is named when it is full or the snapshot finishes");
      await w.finish(manifestOf(w), pool);
      assert.ok(store.chunks.exists(a.hex) && store.chunks.exists(b.hex));
      assert.equal(fs.existsSync(a.staged.pending.tmp), false);
      assert.equal((await store.snapshotInfo([], w.ref)).finished, true);
      await assert.rejects(w.finish(manifestOf(w), pool), /already finished or aborted/);
      await w.abort(); // nothing to do after a finish
      assert.equal((await store.snapshotInfo([], w.ref)).finished, true);
    } finally {
      await pool.close();
    }
  });

  void it("an abort removes its staged chunks, its snapshot and the group its first backup created", async () => {
    const store = await newStore("gorde-writer-");
    const pool = new ChunkPool(1);
    const group: Group = { type: "vm", id: "205" };
    try {
      await pool.init(store.chunks.dir, 1, Buffer.alloc(0));
      const w = await SnapshotWriter.open(store, { ns: [], group, claimGroup: () => store.setGroupOwner([], group, "backup@pbs") });
      assert.ok(fs.existsSync(path.join(store.groupDir([], group), OWNER_FILE)));
      const c = await written(store, pool);
      await w.stage(pool, [c.staged]);
      await w.abort();
      assert.equal(fs.existsSync(c.staged.pending.tmp), false);
      assert.equal(store.chunks.exists(c.hex), false);
      assert.equal(fs.existsSync(store.groupDir([], group)), false);
      // The group lock is free again.
      const again = await SnapshotWriter.open(store, { ns: [], group });
      await again.abort();
      assert.equal(fs.existsSync(store.groupDir([], group)), false, "an empty group goes too");
    } finally {
      await pool.close();
    }
  });

  void it("a copy keeps the source's time, older than the group's newest, and takes no base", async () => {
    const store = await newStore("gorde-writer-");
    await makeSnapshot(store, T + 3600, { img: [data()] });
    const w = await SnapshotWriter.open(store, { ns: [], group: VM, time: T, copy: true });
    assert.equal(w.ref.time, T);
    assert.equal(w.base, undefined);
    await w.finish(manifestOf(w));
    assert.deepEqual(
      (await store.listSnapshots([], VM)).map((s) => [s.time, s.finished]),
      [
        [T, true],
        [T + 3600, true],
      ],
    );
  });
});

void describe("SnapshotWriter: what a killed sync left", () => {
  void it("a copy over the unfinished snapshot a killed sync left starts over; a finished one is refused in one sentence", async () => {
    const store = await newStore("gorde-writer-");
    const left = store.snapshotDir([], { ...VM, time: T });
    fs.mkdirSync(left, { recursive: true });
    fs.writeFileSync(path.join(left, "disk0.img.fidx"), "half of an index");
    const w = await SnapshotWriter.open(store, { ns: [], group: VM, time: T, copy: true });
    assert.ok(!fs.existsSync(path.join(left, "disk0.img.fidx")), "what the dead sync wrote is gone");
    await w.finish(manifestOf(w));
    await assert.rejects(SnapshotWriter.open(store, { ns: [], group: VM, time: T, copy: true }), (e: unknown) => e instanceof GordeError && /snapshot vm\/100\/\S+ already exists\./.test(e.message));
    assert.deepEqual((await store.listSnapshots([], VM)).map((s) => s.finished), [true]);
  });
});

void describe("latestUsable", () => {
  void it("reads the verify state of a server's listing as of a datastore's", () => {
    const listed = [
      { snapshot: "vm/100/2024-06-01T00:00:00Z", finished: true, verify: null },
      { snapshot: "vm/100/2024-06-02T00:00:00Z", finished: true, verify: { state: "ok" } },
      { snapshot: "vm/100/2024-06-03T00:00:00Z", finished: true, verify: { state: "failed" } },
      { snapshot: "vm/100/2024-06-04T00:00:00Z", finished: false, verify: null },
    ];
    assert.equal(latestUsable(listed)?.snapshot, "vm/100/2024-06-02T00:00:00Z");
    assert.equal(latestUsable(listed.slice(2)), undefined);
  });
});

void describe("Datastore listing beside a prune", () => {
  void it("a snapshot removed between reading the group and reading the snapshot is left out, not a failed listing", async () => {
    const store = await newStore("gorde-writer-");
    const gone = await makeSnapshot(store, T, { img: [data()] });
    await makeSnapshot(store, T + 3600, { img: [data()] });
    // A prune removes the first snapshot right after the group's directory was read.
    const read = store.snapshotInfo.bind(store);
    let pruned = false;
    store.snapshotInfo = async (ns, r) => {
      if (!pruned && r.time === gone.time) {
        pruned = true;
        fs.rmSync(store.snapshotDir(ns, r), { recursive: true });
      }
      return read(ns, r);
    };
    assert.deepEqual((await store.listSnapshots([], VM)).map((s) => s.time), [T + 3600]);
    assert.ok(pruned);
  });
});
