// Prune applied to a group of a real datastore: a snapshot another operation holds (a
// verify or a sync reading it) is left for the next prune, not a failure of this one.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { VM, data, makeSnapshot, newStore, removeStores } from "../../test/store-fixture.ts";
import { lockDir } from "./datastore.ts";
import { pruneGroup } from "./group-ops.ts";

after(removeStores);

void describe("pruneGroup", () => {
  void it("leaves a snapshot in use for the next prune and removes the others", async () => {
    const store = await newStore("gorde-group-ops-");
    const T = Date.UTC(2026, 0, 1) / 1000;
    const snaps = [];
    for (let i = 0; i < 3; i++) snaps.push(await makeSnapshot(store, T + i * 3600, { img: [data()] }));
    // A verify reading the oldest (readers hold a shared lock on the snapshot's directory).
    const reading = lockDir(snaps[0]!.dir, "sh", "snapshot");
    let r;
    try {
      r = await pruneGroup(store, [], VM, { keepLast: 1 }, false);
    } finally {
      reading.release();
    }
    assert.deepEqual(
      r.plan.map((p) => p.action),
      ["keep", "remove", "in-use"],
    );
    assert.deepEqual(r.failed, []);
    assert.equal((await store.listSnapshots([], VM)).length, 2);
    const again = await pruneGroup(store, [], VM, { keepLast: 1 }, false);
    assert.deepEqual(
      again.plan.map((p) => p.action),
      ["keep", "remove"],
    );
    assert.equal((await store.listSnapshots([], VM)).length, 1);
    store.close();
  });
});
