// A sync beside a prune on its remote: a snapshot listed there and removed before it is
// pulled is skipped (PBS: vanished), and the sync copies the rest and succeeds.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { runBackup } from "../client/backup.ts";
import { RemoteRepository } from "../client/remote.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { Datastore, lockDir } from "../datastore/datastore.ts";
import { parseGroup, parseSnapshotRef } from "../format/names.ts";
import { tempDir } from "../../test/helpers.ts";
import { userBlocks, writeUserImage } from "../../test/user-data.ts";
import { type GordeServer, startServer } from "./server.ts";
import { type SyncOptions, syncDatastore } from "./sync.ts";

const PASSWORD = "admin-pass-1";

void describe("syncDatastore", () => {
  const tmp = tempDir("gorde-sync-");
  let remote: GordeServer;
  const remoteDir = (): string => path.join(tmp.dir, "main");
  let names: string[] = [];

  before(async () => {
    remote = await startServer({ stateDir: path.join(tmp.dir, "state"), host: "127.0.0.1", port: 0, datastores: { main: remoteDir() }, adminPassword: PASSWORD, authFailureDelayMs: 0 });
    const blocks = userBlocks(5);
    const image = path.join(tmp.dir, "disk.img");
    const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${remote.port}/main`, { secret: PASSWORD, fingerprint: remote.fingerprint });
    try {
      for (let variant = 0; variant < 3; variant++) {
        writeUserImage(image, blocks, { variant });
        await runBackup({ group: parseGroup("vm/100"), sources: [{ archive: "disk0.img", source: image }] }, (req) => repo.openBackup(req));
      }
      names = (await repo.snapshots([])).map((s) => s.snapshot).sort();
    } finally {
      repo.close();
    }
    assert.equal(names.length, 3);
  });

  after(async () => {
    await remote?.close();
    tmp.cleanup();
  });

  /** A sync from the remote into `store` by admin; `more` adds the groups to pull and the task. */
  const pull = (store: Datastore, pool: ChunkPool, more: { groups?: string[]; task?: Partial<SyncOptions["task"]> } = {}): ReturnType<typeof syncDatastore> =>
    syncDatastore({
      remote: { name: "main", url: `https://admin@127.0.0.1:${remote.port}/main`, fingerprint: remote.fingerprint, host: "127.0.0.1", port: remote.port, authId: "admin", store: "main", secret: PASSWORD },
      ns: [],
      store,
      pool: () => Promise.resolve(pool),
      owner: "admin",
      groups: more.groups,
      task: { id: "test", signal: new AbortController().signal, log: () => undefined, progress: () => undefined, ...more.task },
    });

  void it("skips a snapshot pruned on the remote after the listing and copies the others", async () => {
    const store = await Datastore.init(path.join(tmp.dir, "copy"));
    const pool = new ChunkPool(1);
    await pool.init(store.chunks.dir, 0, Buffer.alloc(0));
    const log: string[] = [];
    try {
      const result = await pull(store, pool, {
        task: {
          log: (line) => log.push(line),
          // Once the first snapshot is in, the remote's prune removes the second one.
          progress: (p) => {
            if (p.snapshots === 1) fs.rmSync(path.join(remoteDir(), names[1]!), { recursive: true });
          },
        },
      });
      assert.deepEqual([result.snapshots, result.skipped], [2, 1]);
      assert.ok(log.includes(`skipped ${names[1]}: removed on remote main since the listing`), log.join("\n"));
      const copied = (await store.listSnapshots([], parseGroup("vm/100"))).filter((s) => s.finished).map((s) => s.time);
      assert.deepEqual(copied, [names[0]!, names[2]!].map((n) => parseSnapshotRef(n).time));
    } finally {
      await pool.close();
    }
  });
  void it("skips a snapshot the remote is removing at that moment (held locked) and copies the others", async () => {
    const store = await Datastore.init(path.join(tmp.dir, "copy-locked"));
    const pool = new ChunkPool(1);
    await pool.init(store.chunks.dir, 0, Buffer.alloc(0));
    const log: string[] = [];
    // A forget on the remote holds its snapshot's lock while it renames and removes it.
    const forgetting = lockDir(path.join(remoteDir(), names[0]!), "ex", "snapshot");
    try {
      const result = await pull(store, pool, { task: { log: (line) => log.push(line) } });
      // The remote holds the first and the third (the test above pruned the second).
      assert.deepEqual([result.snapshots, result.skipped], [1, 1]);
      assert.ok(log.includes(`skipped ${names[0]}: in use on remote main (a prune removing it); the next sync pulls it if it is still there`), log.join("\n"));
    } finally {
      forgetting.release();
      await pool.close();
    }
  });

  void it("leaves no group behind, empty and owned, when every snapshot of a new group vanished or was in use", async () => {
    const image = path.join(tmp.dir, "disk-200.img");
    writeUserImage(image, userBlocks(6), { variant: 0 });
    const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${remote.port}/main`, { secret: PASSWORD, fingerprint: remote.fingerprint });
    let only: string;
    try {
      const r = await runBackup({ group: parseGroup("vm/200"), sources: [{ archive: "disk0.img", source: image }] }, (req) => repo.openBackup(req));
      only = r.snapshot;
    } finally {
      repo.close();
    }
    const store = await Datastore.init(path.join(tmp.dir, "copy-empty"));
    const pool = new ChunkPool(1);
    await pool.init(store.chunks.dir, 0, Buffer.alloc(0));
    const forgetting = lockDir(path.join(remoteDir(), only), "ex", "snapshot");
    let released = false;
    try {
      const result = await pull(store, pool, { groups: ["vm/200"] });
      assert.deepEqual([result.snapshots, result.skipped], [0, 1]);
      assert.deepEqual(await store.listGroups([]), []);
      assert.equal(await store.groupOwner([], parseGroup("vm/200")), null);
      // Once the remote lets go, the next sync copies it and claims the group.
      forgetting.release();
      released = true;
      const again = await pull(store, pool, { groups: ["vm/200"] });
      assert.equal(again.snapshots, 1);
      assert.equal(await store.groupOwner([], parseGroup("vm/200")), "admin");
    } finally {
      if (!released) forgetting.release();
      await pool.close();
    }
  });
});
