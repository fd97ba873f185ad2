import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseCalendarEvent } from "./calendar-event.ts";
import { type DueJob, decide } from "./due.ts";
import { parseWindow } from "./window.ts";

const t = (iso: string) => Date.parse(iso);
const job = (schedule: string, extra: Partial<DueJob> = {}): DueJob => ({ name: "j", event: parseCalendarEvent(schedule), ...extra });

void describe("when a job runs (injected clock)", () => {
  const since = t("2026-11-25T00:00:00Z");

  void it("is idle until its elapse, then runs it", () => {
    const j = job("*-*-* 02:00");
    assert.deepEqual(decide(j, { since }, t("2026-11-25T01:59:59Z"), undefined, "UTC"), { action: "idle", next: t("2026-11-25T02:00:00Z") });
    assert.deepEqual(decide(j, { since }, t("2026-11-25T02:00:05Z"), undefined, "UTC"), { action: "run", due: t("2026-11-25T02:00:00Z"), missed: false });
    // after the run, the next is tomorrow's
    assert.deepEqual(decide(j, { since, lastDue: t("2026-11-25T02:00:00Z") }, t("2026-11-25T12:00:00Z"), undefined, "UTC"), { action: "idle", next: t("2026-11-26T02:00:00Z") });
  });

  void it("takes a missed run once with repeat-missed, skips it without", () => {
    const down = t("2026-11-28T12:00:00Z"); // three elapses passed while the scheduler was down
    const take = decide(job("*-*-* 02:00", { repeatMissed: true }), { since }, down, undefined, "UTC");
    assert.deepEqual(take, { action: "run", due: t("2026-11-28T02:00:00Z"), missed: true });
    const skip = decide(job("*-*-* 02:00"), { since }, down, undefined, "UTC");
    assert.equal(skip.action, "skip");
    assert.equal(skip.action === "skip" && skip.due, t("2026-11-28T02:00:00Z"));
    assert.match(skip.action === "skip" ? skip.reason : "", /missed at 2026-11-25T02:00:00Z .*repeat-missed is off/);
    // either way the next decision looks at the next elapse after now, not at each missed one
    assert.equal(decide(job("*-*-* 02:00"), { since, lastDue: t("2026-11-28T02:00:00Z") }, down, undefined, "UTC").action, "idle");
  });

  void it("waits inside its window while the node is busy, and is skipped when the window closes", () => {
    const j = job("*-*-* 01:30", { window: parseWindow("01:00-05:00") });
    const w = decide(j, { since }, t("2026-11-25T01:30:10Z"), "load 3.00 per CPU is above 1.5", "UTC");
    assert.deepEqual(w, { action: "wait", due: t("2026-11-25T01:30:00Z"), reason: "the node is busy: load 3.00 per CPU is above 1.5", until: t("2026-11-25T05:00:00Z") });
    // still busy later in the window: still waiting (seen in time, so not a missed run)
    const seen = t("2026-11-25T01:30:00Z");
    const later = decide(j, { since, seen }, t("2026-11-25T04:00:00Z"), "load 3.00 per CPU is above 1.5", "UTC");
    assert.equal(later.action, "wait");
    // the window closed: skipped with the reason
    const closed = decide(j, { since, seen }, t("2026-11-25T05:00:30Z"), "load 3.00 per CPU is above 1.5", "UTC");
    assert.deepEqual(closed, { action: "skip", due: t("2026-11-25T01:30:00Z"), reason: "its window 01:00-05:00 closed before it could start (load 3.00 per CPU is above 1.5)" });
    // quiet again inside the window: runs
    assert.equal(decide(j, { since }, t("2026-11-25T01:31:00Z"), undefined, "UTC").action, "run");
  });

  void it("a missed run with repeat-missed waits for its window rather than running outside it", () => {
    const j = job("*-*-* 02:00", { window: parseWindow("01:00-05:00"), repeatMissed: true });
    assert.equal(decide(j, { since }, t("2026-11-25T09:00:00Z"), undefined, "UTC").action, "wait");
    assert.deepEqual(decide(j, { since }, t("2026-11-26T01:00:00Z"), undefined, "UTC"), { action: "run", due: t("2026-11-25T02:00:00Z"), missed: true });
  });

  void it("every 10 seconds: each elapse in turn", () => {
    const j = job("*:*:0/10");
    let lastDue: number | undefined;
    const runs: string[] = [];
    for (let now = t("2026-11-25T00:00:01Z"); now < t("2026-11-25T00:00:45Z"); now += 1000) {
      const d = decide(j, { since, lastDue }, now, undefined, "UTC");
      if (d.action === "run") {
        runs.push(new Date(d.due).toISOString());
        lastDue = d.due;
      }
    }
    assert.deepEqual(runs, ["2026-11-25T00:00:10.000Z", "2026-11-25T00:00:20.000Z", "2026-11-25T00:00:30.000Z", "2026-11-25T00:00:40.000Z"]);
  });
});
