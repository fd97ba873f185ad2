import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { TaskHistory } from "./task-history.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-history-"));
const T = Date.UTC(2026, 10, 25, 2, 0, 0);

void describe("task history", () => {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  void it("records runs with their bytes, result and log, newest first", () => {
    const h = TaskHistory.open(path.join(dir, "a", "history.db"));
    const a = h.begin({ job: "nightly", kind: "backup", target: "vm/100", start: T });
    h.finish(a, { end: T + 5000, result: "ok", bytes: 1000, newBytes: 100, reusedBytes: 900, log: "full\n" });
    const b = h.begin({ job: "nightly", kind: "backup", target: "vm/100", start: T + 86_400_000 });
    h.finish(b, { end: T + 86_401_000, result: "failed", error: "the server went away", log: "x".repeat(300 * 1024) });
    const c = h.begin({ job: "gc", kind: "gc", start: T + 1000 });
    h.finish(c, { end: T + 2000, result: "skipped", error: "window closed: load 3.10 per CPU is above 1.5" });
    const runs = h.list({ job: "nightly" });
    assert.deepEqual(runs.map((r) => [r.id, r.result]), [[b, "failed"], [a, "ok"]]);
    assert.equal(runs[1]!.newBytes, 100);
    assert.equal(runs[1]!.reusedBytes, 900);
    assert.equal(runs[0]!.log.length, 256 * 1024, "a long log keeps its end");
    assert.equal(h.last("nightly")!.id, b);
    assert.equal(h.last("nightly", "ok")!.id, a);
    assert.equal(h.last("gc")!.error, "window closed: load 3.10 per CPU is above 1.5");
    assert.equal(h.list().length, 3);
    assert.throws(() => h.finish(a, { end: T, result: "ok" }), /no running task run/);
    h.close();
  });

  void it("records a run cut off by a stopped process as failed when it opens again", () => {
    const file = path.join(dir, "b.db");
    const h = TaskHistory.open(file);
    const id = h.begin({ job: "nightly", kind: "backup", start: T });
    h.close(); // the process stops without finishing the run
    const again = TaskHistory.open(file);
    assert.equal(again.markInterrupted(T + 60_000), 1);
    const run = again.list()[0]!;
    assert.equal(run.id, id);
    assert.equal(run.result, "failed");
    assert.match(run.error!, /interrupted/);
    assert.equal(run.end, T + 60_000);
    again.close();
  });

  void it("prunes ended runs by age, never a running one", () => {
    const h = TaskHistory.open(path.join(dir, "c.db"));
    const old = h.begin({ job: "j", kind: "verify", start: T - 40 * 86_400_000 });
    h.finish(old, { end: T - 40 * 86_400_000 + 10, result: "ok" });
    h.begin({ job: "j", kind: "verify", start: T - 50 * 86_400_000 }); // still running
    h.begin({ job: "j", kind: "verify", start: T });
    assert.equal(h.prune(T - 30 * 86_400_000), 1);
    assert.equal(h.list().length, 2);
    h.close();
  });

  void it("refuses a file that is not a task history", () => {
    const file = path.join(dir, "garbage.db");
    fs.writeFileSync(file, "this is not a database, it only pretends to be one".repeat(100));
    assert.throws(() => TaskHistory.open(file), /task history .* cannot be opened/);
  });
});
