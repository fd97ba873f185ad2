import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { decodeBlob } from "../format/blob.ts";
import { Datastore, type SnapshotInfo } from "./datastore.ts";
import { garbageCollect, type GcResult } from "./gc.ts";
import { loadArchiveIndexes } from "./snapshot-indexes.ts";
import { CHUNK, T, VM, data, hexOf, makeSnapshot, newStore, put, removeStores } from "../../test/store-fixture.ts";

const DAY = 24 * 3600 * 1000;

after(async () => {
  await removeStores();
});


/** Every file in the chunk shards, by name. */
function chunkFiles(store: Datastore): string[] {
  const out: string[] = [];
  for (const shard of fs.readdirSync(store.chunks.dir)) {
    const dir = path.join(store.chunks.dir, shard);
    if (!fs.statSync(dir).isDirectory()) continue;
    out.push(...fs.readdirSync(dir));
  }
  return out.sort();
}

/** Sets atime and mtime of every chunk file to `ms` ago. */
function age(store: Datastore, ms: number, only?: string[]): void {
  const t = new Date(Date.now() - ms);
  for (const name of only ?? chunkFiles(store)) fs.utimesSync(path.join(store.chunks.dir, name.slice(0, 2), name), t, t);
}

/** Reads back every chunk of a finished snapshot and checks its digest. */
async function assertReadable(store: Datastore, snap: SnapshotInfo): Promise<void> {
  for (const a of snap.manifest!.archives) {
    const idx = await loadArchiveIndexes(store, snap, a.name);
    const lists = idx.kind === "img" ? [idx.index.digests] : [];
    const hexes: string[] = [];
    for (const l of lists) for (let o = 0; o < l.length; o += 32) hexes.push(l.toString("hex", o, o + 32));
    if (idx.kind === "tree") for (const d of [idx.entries, idx.payload]) for (let i = 0; i < d.count; i++) hexes.push(d.digest(i).toString("hex"));
    for (const hex of hexes) assert.equal(hexOf(decodeBlob(await fsp.readFile(store.chunks.chunkPath(hex)))), hex);
  }
}

void describe("garbageCollect", () => {
  void it("removes the chunks only a forgotten snapshot used and keeps shared ones", async () => {
    const store = await newStore("gorde-gc-");
    const shared = [data(), data(true)];
    const onlyOld = [data(), data(true), data()];
    const onlyNew = [data()];
    const old = await makeSnapshot(store, T, {
      img: [...shared, ...onlyOld.slice(0, 2)],
      tree: { entries: [onlyOld[2]!], payload: [shared[0]!] },
    });
    const kept = await makeSnapshot(store, T + 60, { img: [...shared, ...onlyNew], tree: { entries: [data()], payload: [shared[1]!] } });
    // in a nested namespace: its chunks must be marked too
    const nested = await makeSnapshot(store, T, { img: [data()] }, { ns: ["a", "b"], group: { type: "ct", id: "7" } });
    const before = chunkFiles(store);
    assert.equal(before.length, 2 + 3 + 1 + 1 + 1);
    age(store, 2 * DAY);

    await store.forget(old);
    const events: string[] = [];
    const r = await garbageCollect(store, { cutoffMs: 0, progress: (e) => events.push(`${e.phase}:${e.done}/${e.total}`) });

    const after = chunkFiles(store);
    for (const d of onlyOld) assert.ok(!after.includes(hexOf(d)), "unique chunk of the forgotten snapshot is removed");
    for (const d of [...shared, ...onlyNew]) assert.ok(after.includes(hexOf(d)), "chunk still referenced is kept");
    assert.equal(after.length, before.length - 3);
    assert.equal(r.removedChunks, 3);
    assert.ok(r.removedBytes > 0);
    assert.equal(r.indexFiles, 3 + 1); // kept: fidx + 2 didx; nested: fidx
    assert.equal(r.markedChunks, after.length);
    assert.equal(r.keptChunks, after.length);
    assert.equal(r.pendingChunks, 0);
    assert.equal(r.missingChunks, 0);
    assert.equal(r.logicalBytes, 3 * CHUNK + CHUNK + CHUNK + CHUNK);
    assert.ok(r.dedupFactor > 0);
    assert.ok(events.includes("mark:4/4"));
    assert.ok(events.some((e) => e.startsWith("sweep:")));
    await assertReadable(store, kept);
    await assertReadable(store, nested);
    store.close();
  });

  void it("keeps the chunks of an unfinished snapshot", async () => {
    const store = await newStore("gorde-gc-");
    const chunks = [data(), data()];
    await makeSnapshot(store, T, { img: chunks, tree: { entries: [data()], payload: [data()] } }, { finished: false });
    age(store, 2 * DAY);
    const r = await garbageCollect(store, { cutoffMs: 0 });
    assert.equal(r.removedChunks, 0);
    assert.equal(r.keptChunks, 4);
    assert.equal(chunkFiles(store).length, 4);
    store.close();
  });

  void it("leaves a fresh unreferenced chunk pending under the default cutoff", async () => {
    const store = await newStore("gorde-gc-");
    await makeSnapshot(store, T, { img: [data()] });
    age(store, 2 * DAY);
    const oldOrphan = await put(store, data());
    age(store, 2 * DAY, [oldOrphan]);
    const fresh = await put(store, data());
    const r = await garbageCollect(store);
    assert.equal(r.pendingChunks, 1);
    assert.ok(r.pendingBytes > 0);
    assert.equal(r.removedChunks, 1);
    assert.ok(store.chunks.exists(fresh));
    assert.ok(!store.chunks.exists(oldOrphan));
    assert.ok(Math.abs(r.cutoff - (Date.now() - (24 * 60 + 5) * 60 * 1000)) < 60_000);
    store.close();
  });

  void it("a running backup moves the cutoff before its start", async () => {
    const store = await newStore("gorde-gc-");
    const ancient = await put(store, data());
    const recent = await put(store, data());
    age(store, 2 * DAY, [ancient]);
    age(store, 30 * 60 * 1000, [recent]); // used 30 minutes ago
    const started = Date.now() - 60 * 60 * 1000; // a backup running for an hour
    const running = store.registerBackup(started);
    try {
      const r = await garbageCollect(store, { cutoffMs: 0 });
      assert.equal(r.cutoff, started - 5 * 60 * 1000);
      assert.ok(store.chunks.exists(recent), "touched after the backup started: kept");
      assert.ok(!store.chunks.exists(ancient));
      assert.equal(r.pendingChunks, 1);
    } finally {
      running.release();
    }
    const r = await garbageCollect(store, { cutoffMs: 0 });
    assert.ok(!store.chunks.exists(recent), "without the backup the cutoff is now");
    assert.equal(r.removedChunks, 1);
    store.close();
  });

  void it("removes the registration a backup killed before renaming it left, once it is old and unlocked", async () => {
    const store = await newStore("gorde-gc-");
    const dir = path.join(store.dir, ".running");
    fs.mkdirSync(dir, { recursive: true });
    const stale = path.join(dir, ".4242-deadbeef.tmp");
    const fresh = path.join(dir, ".4243-deadbeef.tmp");
    fs.writeFileSync(stale, "{}");
    fs.writeFileSync(fresh, "{}");
    const old = new Date(Date.now() - 2 * 60 * 1000);
    fs.utimesSync(stale, old, old);
    await garbageCollect(store, { cutoffMs: 0 });
    assert.ok(!fs.existsSync(stale), "a minute old and unlocked: removed");
    assert.ok(fs.existsSync(fresh), "a registration being made now is left alone");
    store.close();
  });

  void it("refuses a second garbage collection while one runs", async () => {
    const store = await newStore("gorde-gc-");
    const other = await Datastore.open(store.dir);
    await makeSnapshot(store, T, { img: [data(), data()] });
    let second: Promise<GcResult> | undefined;
    await garbageCollect(store, {
      cutoffMs: 0,
      progress: () => {
        if (second) return;
        second = garbageCollect(other, { cutoffMs: 0 });
        second.catch(() => {}); // checked below, once the first one is done
      },
    });
    assert.ok(second);
    await assert.rejects(second, (err: unknown) => {
      assert.ok(err instanceof GordeError);
      assert.equal(err.code, "locked");
      assert.match(err.message, /already running/);
      return true;
    });
    // the lock is released afterwards
    const again = await garbageCollect(other, { cutoffMs: 0 });
    assert.equal(again.keptChunks, 2);
    store.close();
    other.close();
  });

  void it("fails on a corrupt index and removes nothing", async () => {
    const store = await newStore("gorde-gc-");
    const a = await makeSnapshot(store, T, { img: [data(), data()] });
    await makeSnapshot(store, T + 60, { tree: { entries: [data()], payload: [data(), data()] } });
    age(store, 2 * DAY);
    await store.forget(a);
    const orphan = await put(store, data());
    age(store, 2 * DAY, [orphan]);
    const before = chunkFiles(store);
    const didx = path.join(store.snapshotDir([], { ...VM, time: T + 60 }), "files.tree.payload.didx");
    const bytes = await fsp.readFile(didx);
    bytes[bytes.length - 1]! ^= 0xff;
    await fsp.writeFile(didx, bytes);
    await assert.rejects(garbageCollect(store, { cutoffMs: 0 }), (err: unknown) => {
      assert.ok(err instanceof GordeError);
      assert.equal(err.code, "corrupt");
      assert.match(err.message, /files\.tree\.payload\.didx fails its checksum; garbage collection stopped/);
      return true;
    });
    assert.deepEqual(chunkFiles(store), before);
    store.close();
  });

  void it("counts missing chunks, keeps their .bad copies and removes stale .bad and temporary files", async () => {
    const store = await newStore("gorde-gc-");
    const lost = data();
    const staleBad = data();
    await makeSnapshot(store, T, { img: [lost, data()] });
    const lostHex = hexOf(lost);
    const lostPath = store.chunks.chunkPath(lostHex);
    fs.renameSync(lostPath, `${lostPath}.0.bad`); // as verify does
    const staleHex = await put(store, staleBad); // stored again after a verify found it bad
    const stalePath = store.chunks.chunkPath(staleHex);
    fs.copyFileSync(stalePath, `${stalePath}.0.bad`);
    fs.writeFileSync(`${stalePath}.tmp-1-abcd`, "half");
    age(store, 2 * DAY);
    const r = await garbageCollect(store, { cutoffMs: 0 });
    assert.equal(r.missingChunks, 1);
    assert.equal(r.markedChunks, 1);
    assert.match(r.warnings[0] ?? "", new RegExp(`chunk ${lostHex} referenced by .*disk\\.img\\.fidx is missing`));
    assert.ok(fs.existsSync(`${lostPath}.0.bad`), "the only copy of a referenced chunk stays");
    assert.ok(!fs.existsSync(`${stalePath}.0.bad`));
    assert.ok(!fs.existsSync(`${stalePath}.tmp-1-abcd`));
    assert.equal(r.removedBad, 1);
    assert.equal(r.removedTmp, 1);
    assert.equal(r.removedChunks, 1); // staleBad's chunk: nothing references it
    store.close();
  });

  void it("stops when aborted, before sweeping", async () => {
    const store = await newStore("gorde-gc-");
    const s = await makeSnapshot(store, T, { img: [data()] });
    age(store, 2 * DAY);
    await store.forget(s);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(garbageCollect(store, { cutoffMs: 0, signal: ac.signal }));
    assert.equal(chunkFiles(store).length, 1);
    store.close();
  });
});

void describe("leftovers of a crashed forget", () => {
  void it("GC removes an old .removing-* directory and leaves a fresh one", async () => {
    const store = await newStore("gorde-gc-");
    const snap = await makeSnapshot(store, T, { img: [data()] });
    const group = path.dirname(snap.dir);
    const old = path.join(group, ".removing-2024-01-01T00:00:00Z-00000000");
    const fresh = path.join(group, ".removing-2024-01-02T00:00:00Z-00000000");
    for (const d of [old, fresh]) fs.mkdirSync(path.join(d, "x"), { recursive: true });
    const hourAgo = new Date(Date.now() - 2 * 3600 * 1000);
    fs.utimesSync(old, hourAgo, hourAgo);
    await garbageCollect(store, { cutoffMs: 0 });
    assert.equal(fs.existsSync(old), false);
    assert.equal(fs.existsSync(fresh), true);
    assert.equal(fs.existsSync(snap.dir), true);
    store.close();
  });
});
