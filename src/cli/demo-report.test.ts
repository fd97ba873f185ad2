import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DemoSteps } from "./demo-report.ts";

/** A clock the test moves by hand, in milliseconds. */
function clock(): { now: () => number; advance(ms: number): void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

void describe("gorde demo --json document", () => {
  void it("times each step from its title to the next and is ok when every step worked", () => {
    const c = clock();
    const s = new DemoSteps(c.now);
    s.begin("Two nodes: `gorde node` processes");
    c.advance(2_345);
    s.begin("Restore drills on node1");
    c.advance(61_200);
    s.drills.push({ guest: 100, result: "passed", rto_s: 41.3 }, { guest: 101, result: "passed", rto_s: 3.1 }, { guest: 101, result: "failed", rto_s: null });
    s.end(true);
    const r = s.report();
    assert.deepEqual(r, {
      ok: true,
      steps: [
        { name: "Two nodes: `gorde node` processes", ok: true, seconds: 2.345 },
        { name: "Restore drills on node1", ok: true, seconds: 61.2 },
      ],
      recoveries: [],
      drills: [
        { guest: 100, result: "passed", rto_s: 41.3 },
        { guest: 101, result: "passed", rto_s: 3.1 },
        { guest: 101, result: "failed", rto_s: null },
      ],
    });
    assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(r)) as object), ["ok", "steps", "recoveries", "drills"]);
  });

  void it("is not ok when a step failed, and that step is the last", () => {
    const c = clock();
    const s = new DemoSteps(c.now);
    s.begin("First backup, live");
    c.advance(500);
    s.begin("Restore drills on node1");
    c.advance(1_500);
    s.end(false);
    s.end(true);
    const r = s.report();
    assert.equal(r.ok, false);
    assert.deepEqual(r.steps.map((x) => [x.name, x.ok, x.seconds]), [["First backup, live", true, 0.5], ["Restore drills on node1", false, 1.5]]);
  });

  void it("is not ok with no step, or with a step still running", () => {
    assert.equal(new DemoSteps().report().ok, false);
    const s = new DemoSteps();
    s.begin("The backup server");
    assert.equal(s.report().ok, false);
  });
});
