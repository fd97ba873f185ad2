import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { UsageHistory } from "./usage-history.ts";

void describe("usage history", () => {
  void it("keeps each datastore's samples in time order, at most its bound, across a reopen", () => {
    const tmp = tempDir();
    try {
      const file = path.join(tmp.dir, "usage.db");
      let h = UsageHistory.open(file, 3);
      const sample = (time: number) => ({ time, used: time * 10, total: 1000, logicalBytes: time * 3, chunkBytes: time, dedupFactor: 3 });
      for (const t of [5, 1, 2, 4, 3]) h.add("main", sample(t));
      h.add("other", sample(9));
      assert.deepEqual(h.list("main").map((s) => s.time), [3, 4, 5], "the oldest went first");
      assert.deepEqual(h.list("other"), [sample(9)]);
      h.close();
      h = UsageHistory.open(file, 3);
      assert.deepEqual(h.list("main").map((s) => s.time), [3, 4, 5]);
      assert.deepEqual(h.list("none"), []);
      h.close();
    } finally {
      tmp.cleanup();
    }
  });
});
