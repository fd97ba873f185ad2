import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parsePlan } from "./plan.ts";

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
});
