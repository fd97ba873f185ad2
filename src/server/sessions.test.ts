import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { HttpError } from "../host/http.ts";
import { VM, newStore, removeStores } from "../../test/store-fixture.ts";
import { BackupSession, SessionTable } from "./sessions.ts";

const pool = new ChunkPool();
after(async () => {
  await pool.close();
  await removeStores();
});

void describe("SessionTable", () => {
  void it("aborts a backup session whose connection closed while it was being opened: its group is free at once", async () => {
    const store = await newStore("gorde-sessions-");
    const table = new SessionTable(60_000);
    const open = (connection: object): Promise<BackupSession> =>
      BackupSession.open({ authId: "admin", storeName: "s", store, pool, ns: [], group: VM, keyFingerprint: null, newGroup: true, connection });
    const gone = {};
    const s = await open(gone);
    // The client was killed between its request and the answer: the close came first.
    await table.connectionClosed(gone);
    await assert.rejects(table.addBackup(s), (e: unknown) => e instanceof HttpError && e.status === 410);
    assert.equal(table.backups.size, 0);
    // Nothing holds the group: the next backup opens at once (it would get 409 "another backup is running").
    const live = {};
    const next = await open(live);
    await table.addBackup(next);
    assert.equal(table.backups.size, 1);
    await table.close();
    store.close();
  });
});
