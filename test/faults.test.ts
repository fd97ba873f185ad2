// The short, seeded form of `npm run faults` (test/faults/): one fault of each kind that
// kills a process (local backup, a server killed mid-backup, GC, prune, verify, sync), one
// GC beside a backup that reuses its garbage, and one ENOSPC; after each the datastore
// verifies, every finished snapshot restores bit-exact and the operation works again. The
// link cuts take up to half a minute each and run only in `npm run faults`.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";

const RUN = path.join(import.meta.dirname, "faults", "run.ts");
const KINDS = "local-backup,server-restart,gc,gc-race,prune,verify,sync,enospc-local";

void describe("the fault suite (short run)", () => {
  void it("survives a fault of each kind, seed 3", { timeout: 600_000 }, async () => {
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn(process.execPath, [RUN, "--seed", "3", "--faults", "1", "--kinds", KINDS], { stdio: ["ignore", "pipe", "pipe"] });
      let text = "";
      child.stdout.setEncoding("utf8").on("data", (s: string) => (text += s));
      child.stderr.setEncoding("utf8").on("data", (s: string) => (text += s));
      child.on("close", (code) => resolve({ code, text }));
    });
    // The table and the skipped kinds (said loudly) go to the test's output.
    process.stdout.write(out.text.split("\n").filter((l) => l.startsWith("|") || l.startsWith("!!!") || l.startsWith("faults:") || l.startsWith("FAILED")).join("\n") + "\n");
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /, 0 kinds failed;/);
  });
});
