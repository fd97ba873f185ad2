import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { computePrune, type PruneAction, type PruneOptions, type PruneSnapshot } from "./prune.ts";

interface Snap extends PruneSnapshot {
  id: string;
}

function snap(iso: string, extra: Partial<PruneSnapshot> = {}): Snap {
  const ms = Date.parse(iso);
  assert.ok(Number.isFinite(ms), iso);
  return { id: iso, time: ms / 1000, protected: false, finished: true, ...extra };
}

function run(list: Snap[], options: PruneOptions): { id: string; action: PruneAction }[] {
  return computePrune(list, { timeZone: "UTC", ...options }).map((e) => ({ id: e.snapshot.id, action: e.action }));
}

/** Ids the prune keeps (any action but "remove"), oldest first as in the PBS tests. */
function kept(list: Snap[], options: PruneOptions): string[] {
  return run(list, options)
    .filter((e) => e.action !== "remove")
    .map((e) => e.id)
    .reverse();
}

/** Ids the prune removes, oldest first. */
function removed(list: Snap[], options: PruneOptions): string[] {
  return run(list, options)
    .filter((e) => e.action === "remove")
    .map((e) => e.id)
    .reverse();
}

function snaps(...isos: string[]): Snap[] {
  return isos.map((iso) => snap(iso));
}

void describe("computePrune", () => {
  void it("returns every snapshot newest first, whatever the input order", () => {
    const list = snaps("2024-03-02T10:00:00Z", "2024-03-05T10:00:00Z", "2024-03-01T10:00:00Z", "2024-03-04T10:00:00Z");
    const out = computePrune(list, { keepLast: 2, timeZone: "UTC" });
    assert.deepEqual(
      out.map((e) => [e.snapshot.id, e.action]),
      [
        ["2024-03-05T10:00:00Z", "keep"],
        ["2024-03-04T10:00:00Z", "keep"],
        ["2024-03-02T10:00:00Z", "remove"],
        ["2024-03-01T10:00:00Z", "remove"],
      ],
    );
    // the entries carry the caller's objects
    assert.equal(out[0]!.snapshot, list[1]);
  });

  void it("keep-last 3 keeps the three newest", () => {
    const list = snaps(
      "2024-01-01T00:00:00Z",
      "2024-01-01T00:10:00Z",
      "2024-01-01T00:20:00Z",
      "2024-01-01T00:30:00Z",
      "2024-01-01T00:40:00Z",
    );
    assert.deepEqual(kept(list, { keepLast: 3 }), ["2024-01-01T00:20:00Z", "2024-01-01T00:30:00Z", "2024-01-01T00:40:00Z"]);
    assert.deepEqual(kept(list, { keepLast: 10 }).length, 5);
  });

  void it("keep-daily keeps the newest snapshot of each day", () => {
    const list = snaps(
      "2024-05-01T01:00:00Z",
      "2024-05-01T13:00:00Z",
      "2024-05-01T23:59:59Z",
      "2024-05-02T00:00:00Z",
      "2024-05-02T08:00:00Z",
      "2024-05-04T08:00:00Z", // May 3 has no backup: it does not count
      "2024-05-04T09:00:00Z",
    );
    assert.deepEqual(kept(list, { keepDaily: 3 }), ["2024-05-01T23:59:59Z", "2024-05-02T08:00:00Z", "2024-05-04T09:00:00Z"]);
    assert.deepEqual(kept(list, { keepDaily: 2 }), ["2024-05-02T08:00:00Z", "2024-05-04T09:00:00Z"]);
  });

  void it("keep-daily does not spend its count on days keep-last already covers", () => {
    const list = snaps(
      "2024-05-01T10:00:00Z",
      "2024-05-02T10:00:00Z",
      "2024-05-03T10:00:00Z",
      "2024-05-04T08:00:00Z",
      "2024-05-04T12:00:00Z",
      "2024-05-04T16:00:00Z",
    );
    // keep-last keeps the three of May 4; keep-daily 2 then keeps May 3 and May 2.
    assert.deepEqual(kept(list, { keepLast: 3, keepDaily: 2 }), [
      "2024-05-02T10:00:00Z",
      "2024-05-03T10:00:00Z",
      "2024-05-04T08:00:00Z",
      "2024-05-04T12:00:00Z",
      "2024-05-04T16:00:00Z",
    ]);
    // keep-last 1 covers May 4: the other two of that day are neither kept nor counted.
    assert.deepEqual(kept(list, { keepLast: 1, keepDaily: 1 }), ["2024-05-03T10:00:00Z", "2024-05-04T16:00:00Z"]);
  });

  void it("keep-weekly uses ISO weeks across a year boundary", () => {
    const list = snaps(
      "2020-12-20T10:00:00Z", // Sunday, 2020-W51
      "2020-12-27T10:00:00Z", // Sunday, 2020-W52
      "2020-12-28T10:00:00Z", // Monday, 2020-W53
      "2020-12-31T10:00:00Z", // Thursday, 2020-W53
      "2021-01-01T10:00:00Z", // Friday, 2020-W53
      "2021-01-03T10:00:00Z", // Sunday, 2020-W53
      "2021-01-04T10:00:00Z", // Monday, 2021-W01
    );
    assert.deepEqual(kept(list, { keepWeekly: 3 }), [
      "2020-12-27T10:00:00Z",
      "2021-01-03T10:00:00Z",
      "2021-01-04T10:00:00Z",
    ]);
    // Calendar years would split 2020-12-31 and 2021-01-01; ISO weeks do not.
    const two = snaps("2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z");
    assert.deepEqual(kept(two, { keepWeekly: 2 }), ["2021-01-01T10:00:00Z"]);
    assert.deepEqual(kept(two, { keepYearly: 2 }), ["2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z"]);
    // 2019-12-30 (Monday) is in 2020-W01, together with 2020-01-05.
    assert.deepEqual(kept(snaps("2019-12-30T10:00:00Z", "2020-01-05T10:00:00Z"), { keepWeekly: 5 }), [
      "2020-01-05T10:00:00Z",
    ]);
  });

  void it("a snapshot a rule passes over in its own period is removed for good", () => {
    // 2020-12-31 and 2021-01-01 share ISO week 2020-W53. keep-weekly keeps 2021-01-01 and
    // marks 2020-12-31 "remove"; keep-monthly then cannot take 2020-12-31 for December
    // and keeps the next December snapshot instead (as PBS does).
    const list = snaps("2020-12-15T10:00:00Z", "2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z");
    assert.deepEqual(run(list, { keepWeekly: 1, keepMonthly: 2 }), [
      { id: "2021-01-01T10:00:00Z", action: "keep" },
      { id: "2020-12-31T10:00:00Z", action: "remove" },
      { id: "2020-12-15T10:00:00Z", action: "keep" },
    ]);
    // Without keep-weekly, December's newest is 2020-12-31.
    assert.deepEqual(kept(list, { keepMonthly: 2 }), ["2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z"]);
  });

  void it("keep-monthly and keep-yearly", () => {
    const list = snaps(
      "2021-06-01T10:00:00Z",
      "2022-02-10T10:00:00Z",
      "2022-11-05T10:00:00Z",
      "2023-01-15T10:00:00Z",
      "2023-01-20T10:00:00Z",
      "2023-03-01T10:00:00Z",
      "2023-03-31T23:00:00Z",
    );
    assert.deepEqual(kept(list, { keepMonthly: 3 }), ["2022-11-05T10:00:00Z", "2023-01-20T10:00:00Z", "2023-03-31T23:00:00Z"]);
    assert.deepEqual(kept(list, { keepYearly: 2 }), ["2022-11-05T10:00:00Z", "2023-03-31T23:00:00Z"]);
    // keep-yearly starts from the years keep-monthly did not cover
    assert.deepEqual(kept(list, { keepMonthly: 2, keepYearly: 2 }), [
      "2021-06-01T10:00:00Z",
      "2022-11-05T10:00:00Z",
      "2023-01-20T10:00:00Z",
      "2023-03-31T23:00:00Z",
    ]);
  });

  void it("keep-hourly", () => {
    const list = snaps(
      "2024-02-01T09:10:00Z",
      "2024-02-01T09:50:00Z",
      "2024-02-01T10:00:00Z",
      "2024-02-01T10:59:59Z",
      "2024-02-01T11:00:00Z",
    );
    assert.deepEqual(kept(list, { keepHourly: 2 }), ["2024-02-01T10:59:59Z", "2024-02-01T11:00:00Z"]);
    assert.deepEqual(kept(list, { keepHourly: 5 }), ["2024-02-01T09:50:00Z", "2024-02-01T10:59:59Z", "2024-02-01T11:00:00Z"]);
  });

  void it("protected snapshots are never removed and never counted", () => {
    const list = [
      snap("2024-05-01T10:00:00Z"),
      snap("2024-05-02T10:00:00Z", { protected: true }),
      snap("2024-05-03T10:00:00Z"),
      snap("2024-05-04T10:00:00Z", { protected: true }),
      snap("2024-05-05T10:00:00Z"),
    ];
    assert.deepEqual(run(list, { keepLast: 2 }), [
      { id: "2024-05-05T10:00:00Z", action: "keep" },
      { id: "2024-05-04T10:00:00Z", action: "protected" },
      { id: "2024-05-03T10:00:00Z", action: "keep" },
      { id: "2024-05-02T10:00:00Z", action: "protected" },
      { id: "2024-05-01T10:00:00Z", action: "remove" },
    ]);
    // A protected snapshot neither covers its day nor uses up keep-daily's count.
    assert.deepEqual(run(list, { keepLast: 1, keepDaily: 2 }), [
      { id: "2024-05-05T10:00:00Z", action: "keep" },
      { id: "2024-05-04T10:00:00Z", action: "protected" },
      { id: "2024-05-03T10:00:00Z", action: "keep" },
      { id: "2024-05-02T10:00:00Z", action: "protected" },
      { id: "2024-05-01T10:00:00Z", action: "keep" },
    ]);
    // Protected and unfinished: still protected.
    const partial = [snap("2024-05-01T10:00:00Z"), snap("2024-05-02T10:00:00Z", { protected: true, finished: false })];
    assert.deepEqual(run(partial, { keepLast: 1 }), [
      { id: "2024-05-02T10:00:00Z", action: "protected" },
      { id: "2024-05-01T10:00:00Z", action: "keep" },
    ]);
  });

  void it("keeps the newest snapshot while unfinished and removes older unfinished ones", () => {
    const list = [
      snap("2024-05-01T10:00:00Z", { finished: false }),
      snap("2024-05-02T10:00:00Z"),
      snap("2024-05-03T10:00:00Z", { finished: false }),
      snap("2024-05-04T10:00:00Z"),
      snap("2024-05-05T10:00:00Z", { finished: false }),
    ];
    // Unfinished snapshots do not count: keep-last 2 keeps the two newest finished ones.
    assert.deepEqual(run(list, { keepLast: 2 }), [
      { id: "2024-05-05T10:00:00Z", action: "keep-partial" },
      { id: "2024-05-04T10:00:00Z", action: "keep" },
      { id: "2024-05-03T10:00:00Z", action: "remove" },
      { id: "2024-05-02T10:00:00Z", action: "keep" },
      { id: "2024-05-01T10:00:00Z", action: "remove" },
    ]);
    // An unfinished snapshot's day is not covered for keep-daily either.
    assert.deepEqual(
      run([snap("2024-05-04T09:00:00Z"), snap("2024-05-04T10:00:00Z", { finished: false })], { keepDaily: 1 }),
      [
        { id: "2024-05-04T10:00:00Z", action: "keep-partial" },
        { id: "2024-05-04T09:00:00Z", action: "keep" },
      ],
    );
    // Only the very newest unfinished snapshot is kept, as in PBS.
    const two = [
      snap("2024-05-01T10:00:00Z"),
      snap("2024-05-02T10:00:00Z", { finished: false }),
      snap("2024-05-03T10:00:00Z", { finished: false }),
    ];
    assert.deepEqual(
      run(two, { keepLast: 5 }).map((e) => e.action),
      ["keep-partial", "remove", "keep"],
    );
  });

  void it("without any keep option keeps everything", () => {
    const list = [
      snap("2024-05-01T10:00:00Z", { finished: false }),
      snap("2024-05-02T10:00:00Z"),
      snap("2024-05-03T10:00:00Z", { protected: true }),
      snap("2024-05-04T10:00:00Z"),
      snap("2024-05-05T10:00:00Z", { finished: false }),
    ];
    const expected = [
      { id: "2024-05-05T10:00:00Z", action: "keep-partial" },
      { id: "2024-05-04T10:00:00Z", action: "keep" },
      { id: "2024-05-03T10:00:00Z", action: "protected" },
      { id: "2024-05-02T10:00:00Z", action: "keep" },
      { id: "2024-05-01T10:00:00Z", action: "keep-partial" },
    ];
    assert.deepEqual(run(list, {}), expected);
    assert.deepEqual(run(list, { keepLast: 0, keepDaily: 0, keepYearly: 0 }), expected);
    assert.deepEqual(computePrune([], {}), []);
  });

  void it("a rule with count 0 next to another rule keeps nothing itself", () => {
    const list = snaps("2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z", "2024-05-02T11:00:00Z");
    assert.deepEqual(kept(list, { keepLast: 0, keepDaily: 1 }), ["2024-05-02T11:00:00Z"]);
  });

  void it("rejects bad options", () => {
    const list = snaps("2024-05-01T10:00:00Z");
    for (const bad of [-1, 1.5, Number.NaN, Infinity]) {
      assert.throws(
        () => computePrune(list, { keepDaily: bad }),
        (err: unknown) => err instanceof GordeError && err.code === "usage" && /keepDaily/.test(err.message),
      );
    }
    assert.throws(
      () => computePrune(list, { keepDaily: 1, timeZone: "Mars/Olympus_Mons" }),
      (err: unknown) => err instanceof GordeError && err.code === "usage",
    );
    assert.throws(
      () => computePrune([{ time: Number.NaN, protected: false, finished: true }], { keepLast: 1 }),
      (err: unknown) => err instanceof GordeError && err.code === "invalid",
    );
  });

  void it("works in the process's own time zone", () => {
    const list = snaps("2024-05-01T10:00:00Z", "2024-06-01T10:00:00Z");
    const out = computePrune(list, { keepDaily: 1, keepMonthly: 1 });
    assert.deepEqual(
      out.map((e) => e.action),
      ["keep", "keep"],
    );
  });

  void it("computes periods in the configured zone across daylight saving changes (Europe/Madrid)", () => {
    const madrid = (list: Snap[], options: PruneOptions): string[] =>
      computePrune(list, { ...options, timeZone: "Europe/Madrid" })
        .filter((e) => e.action !== "remove")
        .map((e) => e.snapshot.id)
        .reverse();

    // 2021-10-31 01:00Z clocks go back from 03:00 CEST to 02:00 CET: 00:30Z and 01:30Z
    // are both 02:30 local, the same hour.
    const fallBack = snaps("2021-10-31T00:10:00Z", "2021-10-31T00:30:00Z", "2021-10-31T01:30:00Z", "2021-10-31T02:30:00Z");
    // 00:10Z is 02:10 CEST, in that hour too; 02:30Z is 03:30 CET.
    assert.deepEqual(madrid(fallBack, { keepHourly: 10 }), ["2021-10-31T01:30:00Z", "2021-10-31T02:30:00Z"]);
    assert.deepEqual(kept(fallBack, { keepHourly: 10 }), [
      "2021-10-31T00:30:00Z",
      "2021-10-31T01:30:00Z",
      "2021-10-31T02:30:00Z",
    ]);

    // 2021-03-28 01:00Z clocks go forward from 02:00 CET to 03:00 CEST.
    const springForward = snaps("2021-03-28T00:30:00Z", "2021-03-28T00:59:00Z", "2021-03-28T01:00:00Z", "2021-03-28T01:59:00Z");
    assert.deepEqual(madrid(springForward, { keepHourly: 10 }), ["2021-03-28T00:59:00Z", "2021-03-28T01:59:00Z"]);

    // Late evening UTC is already the next day in Madrid: 22:30Z in summer is 00:30 CEST,
    // 22:30Z in winter is 23:30 CET.
    const days = snaps("2021-07-10T21:30:00Z", "2021-07-10T22:30:00Z", "2021-12-10T21:30:00Z", "2021-12-10T22:30:00Z");
    assert.deepEqual(madrid(days, { keepDaily: 10 }), ["2021-07-10T21:30:00Z", "2021-07-10T22:30:00Z", "2021-12-10T22:30:00Z"]);
    assert.deepEqual(kept(days, { keepDaily: 10 }), ["2021-07-10T22:30:00Z", "2021-12-10T22:30:00Z"]);

    // New year arrives an hour (winter) earlier than in UTC.
    const year = snaps("2021-12-31T22:30:00Z", "2021-12-31T23:30:00Z");
    assert.deepEqual(madrid(year, { keepYearly: 5 }), ["2021-12-31T22:30:00Z", "2021-12-31T23:30:00Z"]);
    assert.deepEqual(kept(year, { keepYearly: 5 }), ["2021-12-31T23:30:00Z"]);
  });

  void it("the retention example from the PBS documentation keeps 3 + 13 + 8 + 11 + 9 snapshots", () => {
    // Daily backups at 02:00 for twelve years; keep-last 3, keep-daily 13, keep-weekly 8,
    // keep-monthly 11, keep-yearly 9.
    const list: Snap[] = [];
    const end = Date.parse("2024-06-15T02:00:00Z");
    for (let d = 0; d < 12 * 366; d++) {
      const ms = end - d * 86_400_000;
      list.push(snap(new Date(ms).toISOString()));
    }
    const keptIds = kept(list, { keepLast: 3, keepDaily: 13, keepWeekly: 8, keepMonthly: 11, keepYearly: 9 });
    assert.equal(keptIds.length, 3 + 13 + 8 + 11 + 9);
    // newest 16 consecutive days (2024-05-31 .. 2024-06-15)
    assert.deepEqual(keptIds.slice(-16), Array.from({ length: 16 }, (_, i) => new Date(end - (15 - i) * 86_400_000).toISOString()));
    // the yearly ones are the last backups of 2014 .. 2022, at least 10 years of coverage
    assert.deepEqual(keptIds.slice(0, 9), Array.from({ length: 9 }, (_, i) => `${2014 + i}-12-31T02:00:00.000Z`));
  });
});

// The cases of proxmox-backup's tests/prune.rs, with the same lists and expectations.
void describe("computePrune matches the PBS test suite", () => {
  void it("test_prune_protected", () => {
    const list = [
      snap("2019-11-15T09:39:15Z", { protected: true }),
      snap("2019-11-15T10:39:15Z"),
      snap("2019-11-15T10:49:15Z"),
      snap("2019-11-15T10:59:15Z", { protected: true }),
    ];
    assert.deepEqual(removed(list, { keepLast: 1 }), ["2019-11-15T10:39:15Z"]);
    assert.deepEqual(removed(list, { keepHourly: 1 }), ["2019-11-15T10:39:15Z"]);
  });

  void it("test_prune_hourly", () => {
    const list = snaps(
      "2019-11-15T09:39:15Z",
      "2019-11-15T10:49:15Z",
      "2019-11-15T10:59:15Z",
      "2019-11-15T11:39:15Z",
      "2019-11-15T11:49:15Z",
      "2019-11-15T11:59:15Z",
    );
    assert.deepEqual(removed(list, { keepHourly: 3 }), ["2019-11-15T10:49:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z"]);
    assert.deepEqual(kept(list, { keepHourly: 2 }), ["2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"]);
  });

  void it("test_prune_simple2", () => {
    const list = snaps(
      "2018-11-15T11:59:15Z",
      "2019-11-15T11:59:15Z",
      "2019-11-21T11:59:15Z",
      "2019-11-22T11:59:15Z",
      "2019-11-29T11:59:15Z",
      "2019-12-01T11:59:15Z",
      "2019-12-02T11:59:15Z",
      "2019-12-03T11:59:15Z",
      "2019-12-04T11:59:15Z",
    );
    assert.deepEqual(kept(list, { keepDaily: 1 }), ["2019-12-04T11:59:15Z"]);
    assert.deepEqual(kept(list, { keepLast: 1, keepDaily: 1 }), ["2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"]);
    assert.deepEqual(kept(list, { keepDaily: 1, keepWeekly: 1 }), ["2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"]);
    assert.deepEqual(kept(list, { keepDaily: 1, keepWeekly: 1, keepMonthly: 1 }), [
      "2019-11-22T11:59:15Z",
      "2019-12-01T11:59:15Z",
      "2019-12-04T11:59:15Z",
    ]);
    assert.deepEqual(kept(list, { keepMonthly: 1, keepYearly: 1 }), ["2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z"]);
  });

  void it("test_prune_simple", () => {
    const list = snaps("2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z");
    const [d2, d3, d4] = list.map((s) => s.id);
    assert.deepEqual(removed(list, { keepLast: 4 }), []);
    assert.deepEqual(removed(list, { keepLast: 3 }), [d2]);
    assert.deepEqual(removed(list, { keepLast: 2 }), [d2, d3]);
    assert.deepEqual(removed(list, { keepLast: 1 }), [d2, d3, d4]);
    // keep-last 0 alone keeps nothing by itself: with nothing else set the prune keeps
    // everything, as PBS does when no option keeps something.
    assert.deepEqual(removed(list, { keepLast: 0, keepDaily: 0 }), []);
    assert.deepEqual(removed(list, { keepLast: 2, keepDaily: 2 }), []);
    assert.deepEqual(removed(list, { keepDaily: 3 }), [d4]);
    assert.deepEqual(removed(list, { keepDaily: 2 }), [d2, d4]);
    assert.deepEqual(removed(list, { keepWeekly: 5 }), [d2, d3, d4]);
    assert.deepEqual(removed(list, { keepDaily: 1, keepWeekly: 5 }), [d2, d3, d4]);
    assert.deepEqual(removed(list, { keepMonthly: 6 }), [d2, d3, d4]);
    assert.deepEqual(removed(list, { keepYearly: 7 }), [d2, d3, d4]);
    assert.deepEqual(removed(list, { keepWeekly: 5, keepMonthly: 6, keepYearly: 7 }), [d2, d3, d4]);
  });
});
