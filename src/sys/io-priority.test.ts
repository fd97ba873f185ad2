import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { ioPriority, withIoPriority } from "./io-priority.ts";

const haveIonice = spawnSync("ionice", ["-p", String(process.pid)]).status === 0;
if (!haveIonice) console.error("\n*** SKIPPED: ionice (util-linux) is not installed. ***\n");

void describe("I/O priority of backup work", { skip: haveIonice ? false : "ionice missing" }, () => {
  void it("lowers every thread while the work runs, and puts each back", async () => {
    const before = await ioPriority();
    const during = await withIoPriority(7, () => ioPriority());
    assert.equal(during, "best-effort: prio 7");
    assert.equal(await ioPriority(), before);
  });

  void it("puts it back when the work fails", async () => {
    const before = await ioPriority();
    await assert.rejects(withIoPriority(6, () => Promise.reject(new Error("backup failed"))), /backup failed/);
    assert.equal(await ioPriority(), before);
  });
});
