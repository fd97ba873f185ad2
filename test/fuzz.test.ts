// The short, seeded form of `npm run fuzz` (test/fuzz/): 600 inputs per parser of
// untrusted input; each is accepted or refused with a GordeError, none crashes or hangs.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fuzz, targets } from "./fuzz/parsers.ts";

void describe("fuzzing the parsers of untrusted input (short run)", () => {
  for (const t of targets()) {
    void it(t.name, async () => {
      // A hang is a hang: on a loaded CI machine a parse may pause for seconds, so only 20 s counts.
      const r = await fuzz(t, 7, 600, 20_000);
      assert.deepEqual(r.findings, [], `${t.name}: ${r.findings.join("; ")}`);
      assert.ok(r.refused > 0, `${t.name}: the mutations reach its refusals (${r.accepted} accepted)`);
    });
  }
});
