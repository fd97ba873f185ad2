import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { DrillHistory, INTERRUPTED_DRILL } from "./drill-history.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-drill-history-"));
const T = Date.UTC(2026, 11, 5, 3, 0, 0);

void describe("drill history", () => {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  void it("records drills with their checks, times and result, newest first and by guest", () => {
    const h = DrillHistory.open(path.join(dir, "a", "drills.db"));
    const a = h.begin({ guest: 100, node: "node1", start: T, snapshot: "vm/100/2026-12-05T02:00:00Z", job: "weekly-drill" });
    h.finish(a, {
      end: T + 31_000,
      result: "passed",
      failedCheck: null,
      error: null,
      checks: [
        { name: "verify", ok: true, seconds: 1.2, message: "812 chunks of vm/100/2026-12-05T02:00:00Z read through the backup server, CRC and digest checked" },
        { name: "boot", ok: true, seconds: 22.4, message: '"gorde-guest: up" on the serial console after 22.4 s' },
      ],
      log: "drill 1\n",
      sandbox: 9900,
      rpoSeconds: 3600,
      restoredSeconds: 6.1,
      bootedSeconds: 28.5,
      rtoSeconds: 30.9,
      bytesRestored: 256 * 1024 * 1024,
    });
    const b = h.begin({ guest: 101, node: "node1", start: T + 60_000, snapshot: "ct/101/2026-12-05T02:00:05Z" });
    h.finish(b, { end: T + 62_000, result: "failed", failedCheck: "verify", error: "chunk 1f… of ct/101/2026-12-05T02:00:05Z is damaged: CRC mismatch", checks: [{ name: "verify", ok: false, seconds: 0.4, message: "chunk 1f… is damaged" }], log: "x".repeat(300 * 1024) });
    assert.deepEqual(h.list().map((d) => [d.id, d.guest, d.result]), [[b, 101, "failed"], [a, 100, "passed"]]);
    const got = h.get(a)!;
    assert.deepEqual([got.rpoSeconds, got.restoredSeconds, got.bootedSeconds, got.rtoSeconds, got.bytesRestored, got.sandbox, got.job], [3600, 6.1, 28.5, 30.9, 256 * 1024 * 1024, 9900, "weekly-drill"]);
    assert.equal(got.checks[1]!.message, '"gorde-guest: up" on the serial console after 22.4 s');
    assert.deepEqual(h.list({ guest: 101 }).map((d) => [d.failedCheck, d.rtoSeconds, d.bytesRestored]), [["verify", null, null]]);
    assert.equal(h.get(b)!.log.length, 256 * 1024, "a long log keeps its end");
    assert.throws(() => h.finish(a, { end: T, result: "passed", failedCheck: null, error: null, checks: [], log: "" }), /no running drill/);
    assert.equal(h.get(999), undefined);
    h.close();
  });

  void it("records a drill cut off by a stopped node as an error when it opens again, and prunes by age", () => {
    const file = path.join(dir, "b.db");
    const h = DrillHistory.open(file);
    const id = h.begin({ guest: 100, node: "node1", start: T });
    h.close();
    const again = DrillHistory.open(file);
    assert.equal(again.markInterrupted(T + 5000), 1);
    assert.deepEqual([again.get(id)!.result, again.get(id)!.error, again.get(id)!.end], ["error", INTERRUPTED_DRILL, T + 5000]);
    const newer = again.begin({ guest: 100, node: "node1", start: T + 86_400_000 });
    assert.equal(again.prune(T + 1000), 1, "the old ended drill goes");
    assert.equal(again.prune(T + 2 * 86_400_000), 0, "a running drill stays");
    assert.deepEqual(again.list().map((d) => d.id), [newer]);
    again.close();
  });
});
