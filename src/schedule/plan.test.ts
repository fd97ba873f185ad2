import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DrilledSnapshot, parsePlan, planPins, rpoState, testedRpo } from "./plan.ts";

const NOW = new Date("2026-11-25T12:00:00Z");
const parse = (text: string) => parsePlan(text, "plan.yaml", { now: NOW, tz: "UTC" });

const GOOD = `version: 1
guests:
  100: { rpo: 26h }
  101: { rpo: 26h, node: node1 }
jobs:
  - name: nightly
    type: backup
    schedule: "*-*-* 02:00"
    window: "01:00-05:00"
    guests: all
    exclude: [101]
    mode: snapshot
    keep: { last: 3, daily: 7 }
    rate: 50M
    repeat-missed: true
    max-parallel: 1
  - name: gc
    type: gc
    schedule: sat 03:00
  - name: verify
    type: verify
    schedule: daily
    outdated-after: 30
  - name: drill
    type: drill
    schedule: sun 04:00
    guests: [100]
  - name: offsite
    type: sync
    schedule: daily
    remote: main-site
    last: 3
notifications:
  targets:
    - { type: webhook, name: ops, url: "http://127.0.0.1:9/hook" }
  matchers:
    - { target: ops, min-severity: warning, jobs: [nightly] }
`;

void describe("the plan file", () => {
  void it("reads a good plan: jobs with their schedules and windows, guests with their RPO", () => {
    const p = parse(GOOD);
    assert.deepEqual(p.jobs.map((j) => j.job.name), ["nightly", "gc", "verify", "drill", "offsite"]);
    assert.equal(p.rpo.get(100), 26 * 3_600_000);
    assert.equal(p.jobs[0]!.window?.start, 60);
  });

  void it("refuses bad plans with the line of the problem and changes nothing", () => {
    const cases: [string, string, RegExp][] = [
      ["unknown key", GOOD.replace("    mode: snapshot\n", "    mode: snapshot\n    moed: stop\n"), /line 13: unknown key "moed" in jobs.0/],
      ["bad event", GOOD.replace('"*-*-* 02:00"', '"*-*-* 25:00"'), /line 8: job nightly: calendar event "\*-\*-\* 25:00": at 7: hour 25 is out of range 0..23/],
      ["unknown guest", GOOD.replace("guests: [100]", "guests: [100, 107]"), /line 27: job drill names guest 107, which the plan's guests do not list/],
      ["window never opens", GOOD.replace('"01:00-05:00"', '"03:00-03:00"'), /line 9: job nightly: window "03:00-03:00" never opens/],
      ["schedule outside its window", GOOD.replace('"01:00-05:00"', '"10:00-12:00"'), /line 9: job nightly: its schedule "\*-\*-\* 02:00" never falls inside its window 10:00-12:00/],
      ["bad YAML", GOOD.replace("jobs:\n", "jobs:\n  - [\n"), /plan.yaml line \d+: is not valid YAML/],
      ["duplicate job", GOOD.replace("name: gc", "name: nightly"), /line 17: job name nightly is used twice/],
      ["bad mode", GOOD.replace("mode: snapshot", "mode: live"), /line 12: jobs.0.mode is invalid: Invalid option/],
      ["unknown matcher target", GOOD.replace("{ target: ops,", "{ target: mail,"), /line 37: matcher 1 names target mail, which is not defined/],
      ["bad rpo", GOOD.replace("{ rpo: 26h }", "{ rpo: soon }"), /line 3: guests.100.rpo is invalid: a duration/],
      ["no version", GOOD.replace("version: 1\n", ""), /version is invalid/],
      ["no elapse left", GOOD.replace("sat 03:00", "2015-10-21"), /job gc: its schedule "2015-10-21" has no elapse left/],
      ["sync from a URL", GOOD.replace("remote: main-site", "remote: https://admin@backup:8007/main"), /line 31: jobs.4.remote is invalid: a sync names a remote, not a URL: an administrator adds the server first with `gorde remote add`/],
      ["sync from a host name", GOOD.replace("remote: main-site", "remote: backup.example"), /line 31: jobs.4.remote is invalid: a remote name: a letter/],
      ["sync with the old keys", GOOD.replace("    last: 3\n", "    last: 3\n    remote-fingerprint: aa\n"), /unknown key "remote-fingerprint" in jobs.4/],
      ["duplicate key", GOOD.replace("    type: gc\n", "    type: gc\n    type: gc\n"), /not valid YAML: Map keys must be unique/],
      // found by fuzzing: an alias without its anchor threw a ReferenceError, not one sentence
      ["an alias without its anchor", GOOD.replace("version: 1", "version: *one"), /plan\.yaml: is not valid YAML: Unresolved alias/],
      ["a billion laughs", `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n${GOOD}`, /is not valid YAML/],
      ["bad drill-every", GOOD.replace("{ rpo: 26h }", "{ rpo: 26h, drill-every: weekly }"), /line 3: guests.100.drill-every is invalid: a duration/],
      ["drill-every with no drill job", GOOD.replace("101: { rpo: 26h, node: node1 }", "101: { rpo: 26h, drill-every: 7d, node: node1 }"), /line 4: guest 101 asks for a drill every 7d, but no drill job drills it/],
    ];
    for (const [what, text, re] of cases) {
      assert.throws(
        () => parse(text),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, "invalid", what);
          assert.match(err.message, re, what);
          return true;
        },
      );
    }
  });

  void it("reads each guest's drill-every beside its RPO", () => {
    const p = parse(GOOD.replace("  100: { rpo: 26h }", "  100: { rpo: 26h, drill-every: 7d }"));
    assert.equal(p.drillEvery.get(100), 7 * 86_400_000);
    assert.equal(p.drillEvery.has(101), false);
    // A drill job with no guest list drills every guest.
    const all = parse(GOOD.replace("    guests: [100]\n", "").replace("101: { rpo: 26h, node: node1 }", "101: { rpo: 26h, drill-every: 2w, node: node1 }"));
    assert.equal(all.drillEvery.get(101), 14 * 86_400_000);
  });
});

void describe("the tested RPO", () => {
  const now = NOW.getTime();
  const at = (iso: string): number => Date.parse(iso) / 1000;
  const week = 7 * 86_400_000;
  const snaps: DrilledSnapshot[] = [
    { snapshot: "vm/100/2026-11-10T02:00:00Z", time: "2026-11-10T02:00:00Z", drill: { result: "passed", time: at("2026-11-15T04:10:00Z") } },
    // drilled later than the newer snapshot below: the newest passed drill counts, not the newest snapshot
    { snapshot: "vm/100/2026-11-20T02:00:00Z", time: "2026-11-20T02:00:00Z", drill: { result: "passed", time: at("2026-11-22T04:12:00Z") } },
    { snapshot: "vm/100/2026-11-24T02:00:00Z", time: "2026-11-24T02:00:00Z", drill: { result: "failed", time: at("2026-11-25T04:05:00Z") } },
    { snapshot: "vm/100/2026-11-25T02:00:00Z", time: "2026-11-25T02:00:00Z", drill: null },
  ];

  void it("is the snapshot whose drill passed most recently; a failed drill proves nothing", () => {
    assert.deepEqual(testedRpo(snaps, week, now), {
      state: "within",
      snapshot: "vm/100/2026-11-20T02:00:00Z",
      drillAgeMs: Date.parse("2026-11-25T12:00:00Z") - Date.parse("2026-11-22T04:12:00Z"),
      snapshotAgeMs: 5 * 86_400_000 + 10 * 3_600_000,
    });
  });

  void it("is late when that drill is older than drill-every, never when no drill passed", () => {
    assert.equal(testedRpo(snaps, 2 * 86_400_000, now).state, "late");
    assert.deepEqual(testedRpo(snaps.slice(2), week, now), { state: "never", snapshot: null, drillAgeMs: null, snapshotAgeMs: null });
    assert.equal(testedRpo([], week, now).state, "never");
  });
});

void describe("the pins a cluster refuses", () => {
  void it("names each place the plan ties a guest to a node, and none in a plan without them", () => {
    const plan = parsePlan(`version: 1
guests:
  "101": { rpo: 1d, node: node1 }
  "102": { rpo: 1d }
jobs:
  - { name: nightly, type: backup, schedule: "02:00", guests: all, nodes: [node2] }
  - { name: proof, type: drill, schedule: "Sun 03:00", guests: [102], node: node1 }
  - { name: free, type: backup, schedule: "04:00", guests: [102] }
`);
    assert.deepEqual(planPins(plan), ["guests.101.node (node1)", "job nightly: nodes (node2)", "job proof: node (node1)"]);
    assert.deepEqual(planPins(parsePlan(`version: 1\nguests:\n  "101": { rpo: 1d }\njobs:\n  - { name: nightly, type: backup, schedule: "02:00", guests: all }\n`)), []);
  });
});

void describe("a guest's RPO against the plan", () => {
  void it("is within while the last good backup is at most the target old, late after, missing without one", () => {
    const now = Date.parse("2026-12-06T12:00:00Z");
    const h = 3_600_000;
    assert.equal(rpoState(now - 26 * h, 26 * h, now), "within");
    assert.equal(rpoState(now - 26 * h - 1, 26 * h, now), "late");
    assert.equal(rpoState(now, 26 * h, now), "within");
    assert.equal(rpoState(undefined, 26 * h, now), "missing");
  });
});
