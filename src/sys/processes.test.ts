import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { killRecorded, processesNaming, readLiveRecord, recordLives, recordOf, whenGone, writeRecord } from "./processes.ts";

void describe("process records", () => {
  void it("finds a recorded process again, never one that only has its pid, and sees it end", async () => {
    const tmp = tempDir();
    try {
      const marker = path.join(tmp.dir, "guest-run");
      const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)", marker], { stdio: "ignore", detached: true });
      child.unref();
      const rec = recordOf(child.pid!)!;
      const file = path.join(tmp.dir, "sleep.pid");
      await writeRecord(file, rec);
      assert.deepEqual(readLiveRecord(file), rec);
      assert.deepEqual(processesNaming([marker]), [child.pid]);
      assert.deepEqual(processesNaming([path.join(tmp.dir, "guest")]), [], "a path only beginning alike names nothing");
      // Another start time or another boot: the pid is someone else's now.
      await writeRecord(file, { ...rec, start: String(Number(rec.start) + 1) });
      assert.equal(readLiveRecord(file), undefined);
      await writeRecord(file, { ...rec, boot: "00000000-0000-0000-0000-000000000000" });
      assert.equal(readLiveRecord(file), undefined);
      fs.writeFileSync(file, "{ not json");
      assert.equal(readLiveRecord(file), undefined);
      fs.writeFileSync(file, JSON.stringify({ ...rec, pid: 1 }));
      assert.equal(readLiveRecord(file), undefined, "pid 1 is never a guest");

      const watch = whenGone(rec);
      let gone = false;
      void watch.gone.then(() => (gone = true));
      await new Promise((r) => setTimeout(r, 250));
      assert.equal(gone, false);
      await killRecorded(rec);
      // Its parent (this process) has not reaped it yet: a zombie counts as gone.
      await watch.gone;
      assert.equal(recordLives(rec), false);
    } finally {
      tmp.cleanup();
    }
  });
});
