import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { before, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { nextElapse, parseCalendarEvent } from "./calendar-event.ts";
import { mulberry32 } from "../../test/helpers.ts";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/** Up to `n` elapses chained from `base`, each strictly after the previous; ISO strings in UTC. */
function elapses(text: string, base: Date, n: number): string[] {
  const event = parseCalendarEvent(text);
  const out: string[] = [];
  let t = base;
  for (let i = 0; i < n; i++) {
    const next = nextElapse(event, t, "UTC");
    if (next === null) break;
    out.push(next.toISOString());
    t = next;
  }
  return out;
}

/** `"2026-11-25T10:15"` → `"2026-11-25T10:15:00.000Z"`, to keep the expectations short. */
function iso(short: string): string {
  const full = short.length === 16 ? `${short}:00` : short;
  return `${full}.000Z`;
}

// ---------------------------------------------------------------------------------------
// The generator of cross-check events: systemd syntax on which PVE and systemd agree.
// ---------------------------------------------------------------------------------------


class Gen {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** An integer in lo..hi, both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    const x = xs[Math.floor(this.next() * xs.length)];
    assert.ok(x !== undefined);
    return x;
  }
}

interface Field {
  readonly min: number;
  readonly max: number;
  /** digits to zero-pad to, sometimes (`08`); 0: never */
  readonly pad: number;
}

const YEAR: Field = { min: 2024, max: 2032, pad: 0 };
const MONTH: Field = { min: 1, max: 12, pad: 2 };
const DAY: Field = { min: 1, max: 31, pad: 2 };
const HOUR: Field = { min: 0, max: 23, pad: 2 };
const MINUTE: Field = { min: 0, max: 59, pad: 2 };
const SECOND: Field = { min: 0, max: 59, pad: 2 };

function num(g: Gen, f: Field, v: number): string {
  return f.pad > 0 && g.chance(0.3) ? String(v).padStart(f.pad, "0") : String(v);
}

/**
 * One item of a component: a value, a range `a..b` (a < b), a repetition `a/r` or a ranged
 * repetition `a..b/r`. systemd 252 refuses `*` with a repetition and `a/r` with a + r above
 * the field's maximum (`*-*-31/2`, `5/20:00`), so neither is generated.
 */
function item(g: Gen, f: Field, kind: "value" | "range" | "rep" | "range-rep"): string {
  const span = f.max - f.min;
  switch (kind) {
    case "value":
      return num(g, f, g.int(f.min, f.max));
    case "range": {
      const a = g.int(f.min, f.max - 1);
      const b = g.int(a + 1, Math.min(f.max, a + Math.max(2, Math.ceil(span / 2))));
      return `${num(g, f, a)}..${num(g, f, b)}`;
    }
    case "rep": {
      const a = g.int(f.min, f.min + Math.floor(span / 2));
      const r = g.int(1, Math.min(f.max - a, Math.max(2, Math.ceil(span / 3))));
      return `${num(g, f, a)}/${r}`;
    }
    case "range-rep": {
      const a = g.int(f.min, f.max - 2);
      const b = g.int(a + 2, f.max);
      const r = g.int(1, Math.max(2, Math.ceil((b - a) / 2)));
      return `${num(g, f, a)}..${num(g, f, b)}/${r}`;
    }
  }
}

/** A whole component: `*`, one item, or a list of two or three items. */
function component(g: Gen, f: Field, starWeight: number): string {
  if (g.chance(starWeight)) return "*";
  const kind = g.pick(["value", "value", "value", "range", "rep", "range-rep", "list", "list"] as const);
  if (kind !== "list") return item(g, f, kind);
  const n = g.int(2, 3);
  const items: string[] = [];
  for (let i = 0; i < n; i++) items.push(item(g, f, g.pick(["value", "value", "range", "rep"] as const)));
  return items.join(",");
}

/** Monday first, as systemd and PVE order a week (`sat..sun` is no wrap-around). */
const WEEK = [
  ["mon", "monday"],
  ["tue", "tuesday"],
  ["wed", "wednesday"],
  ["thu", "thursday"],
  ["fri", "friday"],
  ["sat", "saturday"],
  ["sun", "sunday"],
] as const;

function weekdayName(g: Gen, i: number): string {
  const names = WEEK[i];
  assert.ok(names);
  const name = g.chance(0.2) ? names[1] : names[0];
  return g.chance(0.5) ? name[0]!.toUpperCase() + name.slice(1) : name;
}

function weekdays(g: Gen): string {
  const n = g.int(1, 2);
  const items: string[] = [];
  for (let i = 0; i < n; i++) {
    if (g.chance(0.5)) {
      items.push(weekdayName(g, g.int(0, 6)));
    } else {
      const a = g.int(0, 5);
      const b = g.int(a + 1, 6);
      items.push(`${weekdayName(g, a)}..${weekdayName(g, b)}`);
    }
  }
  return items.join(",");
}

function date(g: Gen): string {
  const day = component(g, DAY, 0.35);
  const month = component(g, MONTH, 0.6);
  if (g.chance(0.25)) return `${month}-${day}`;
  const year = g.chance(0.8) ? "*" : component(g, YEAR, 0);
  return `${year}-${month}-${day}`;
}

function time(g: Gen): string {
  const hour = component(g, HOUR, 0.25);
  const minute = component(g, MINUTE, 0.2);
  if (g.chance(0.4)) return `${hour}:${minute}`;
  const second = g.chance(0.6) ? num(g, SECOND, g.pick([0, 0, 0, 30, g.int(0, 59)])) : component(g, SECOND, 0.1);
  return `${hour}:${minute}:${second}`;
}

function randomEvent(g: Gen): string {
  const parts: string[] = [];
  if (g.chance(0.3)) parts.push(weekdays(g));
  if (g.chance(0.65)) parts.push(date(g));
  if (g.chance(0.8) || parts.length === 0) parts.push(time(g));
  return parts.join(" ");
}

/** Hand-picked events first: the forms the brief names, keywords, month ends, leap days. */
const CURATED = [
  "minutely",
  "hourly",
  "daily",
  "weekly",
  "monthly",
  "yearly",
  "annually",
  "quarterly",
  "semiannually",
  "Sat *-1..7 15:00",
  "sat *-1..7 15:00",
  "Mon..Fri *-*-* 8..17:0/15",
  "mon..fri 8..17,22:0/15",
  "*-*-* 8..17,22:0/15",
  "Sat,Sun 20:00",
  "sat..sun 1:00",
  "Fri..Sun",
  "monday",
  "Monday 12:00",
  "Wed..Fri,Mon",
  "*-*-* 00:00:00",
  "*-*-* 12:00:00",
  "*-*-* *:*:*",
  "*-*-* *:*:30",
  "*-*-* 23:59:59",
  "*-*-1/3 00:00",
  "*-1/2-1 6:00",
  "*-*-1..20/5 00:00",
  "*-*-30/1",
  "*-1..12/11-01",
  "*-*-28..31",
  "*-*-28..31 23:59:59",
  "*-*-31",
  "*-*-31 12:00",
  "*-02-28..29 12:00",
  "*-02-29",
  "*-02-29 00:00:00",
  "Sat *-02-29",
  "Mon *-02-29 12:00",
  "*-02-30",
  "*-04-31",
  "2028-02-29 12:00",
  "2028-02-29",
  "2024-02-29 00:00:00",
  "2024/2-02-29",
  "2024/4-02-29 06:30",
  "2026..2030/2-01-01",
  "2026,2028-*-01 3:00",
  "2027-*-* 00:00",
  "2026-12-31 23:59:59",
  "2015-10-21",
  "2199-12-31 23:59:59",
  "2024/100-01-01",
  "*:*:0/10",
  "*:*:7/13",
  "*:*:0..59/20",
  "*:00/5",
  "*:0/15",
  "*:05/20",
  "*:49/10",
  "*:0,30",
  "*:5,10/20",
  "12:05",
  "0/6:00",
  "*-*-* 0/6:00",
  "8..17/2:00",
  "0..23/23:00",
  "1..23/23:00",
  "12,14,16,18,20,22:5",
  "*-*-1,15 0,12:0",
  "*-05",
  "*-05 12:00",
  "*-*",
  "12-25",
  "12-24..26 18:00",
  "thu..sat,mon 1..3:*:30",
  "Mon *-*-* 8:00:00",
  "Sat..Sun,Tue *-2..12/3-1..7,20..31/4 1..23/4:0..59/17:0..59/29",
  "Fri *-*-13",
  "Fri *-*-13 13:13:13",
  "Sun *-*-25..31 2:00",
  "Mon..Fri *-*-1..3 9:30",
];

/** The cross-check's events: the curated ones, then seeded random ones up to `count`, no duplicates. */
function crossCheckEvents(count: number): string[] {
  const out = new Set<string>(CURATED);
  const g = new Gen(0x9e3779b9);
  while (out.size < count) out.add(randomEvent(g));
  return [...out];
}

interface Base {
  readonly at: Date;
  readonly iterations: number;
}

/** Fixed base times, and a seeded spread over 2025–2030. */
function crossCheckBases(): Base[] {
  const bases: Base[] = [
    { at: new Date("2024-02-28T23:59:59Z"), iterations: 8 },
    { at: new Date("2026-12-31T23:00:00Z"), iterations: 10 },
    // an instant on which many events elapse: the next elapse is strictly after it
    { at: new Date("2025-01-01T00:00:00Z"), iterations: 6 },
    // a fraction of a second
    { at: new Date("2027-03-04T05:06:07.500Z"), iterations: 5 },
  ];
  const g = new Gen(20260131);
  const from = Date.UTC(2025, 0, 1) / 1000;
  const to = Date.UTC(2031, 0, 1) / 1000;
  for (let i = 0; i < 5; i++) bases.push({ at: new Date(g.int(from, to - 1) * 1000), iterations: g.int(5, 10) });
  return bases;
}

/**
 * The event as systemd-analyze is given it: every open-ended repetition `a/r` spelled as the
 * same set, `a..max/r`. systemd 252 computes `a/r` by adding the repetition and letting
 * mktime normalise the overflow, so when the field's wrap is off the repetition's grid it
 * skips elapses: `*:*:7/13` after 23:59:59 gives 00:00:20, not 00:00:07; `*:5,10/20` after
 * hh:59:59 skips hh+1:05 (systemd/systemd#22665, #40260). A bounded repetition is computed
 * right, and both read `a/r` as a, a+r, … up to the field's maximum, so this keeps the
 * cross-check on our `a/r` without inheriting systemd's bug.
 */
function forSystemd(event: string): string {
  const bound = (component: string, max: number): string =>
    component
      .split(",")
      .map((item) => item.replace(/^(\d+)\/(\d+)$/, `$1..${max}/$2`))
      .join(",");
  return event
    .split(" ")
    .map((token) => {
      if (token.includes(":")) {
        const [h, m, sec] = token.split(":");
        return [bound(h!, 23), bound(m!, 59), ...(sec === undefined ? [] : [bound(sec, 59)])].join(":");
      }
      if (/^[\d*]/.test(token) && token.includes("-")) {
        const parts = token.split("-");
        const maxes = parts.length === 3 ? [2199, 12, 31] : [12, 31];
        return parts.map((p, i) => bound(p, maxes[i]!)).join("-");
      }
      return token;
    })
    .join(" ");
}

// ---------------------------------------------------------------------------------------
// systemd-analyze calendar
// ---------------------------------------------------------------------------------------

const SYSTEMD_ENV = { ...process.env, TZ: "UTC", LC_ALL: "C", SYSTEMD_COLORS: "0", SYSTEMD_PAGER: "" };

function systemdAnalyzeMissing(): string | undefined {
  const r = spawnSync("systemd-analyze", ["--version"], { env: SYSTEMD_ENV, encoding: "utf8" });
  if (r.error) return `systemd-analyze is not installed (or cannot run: ${r.error.message}); the cross-check against systemd's calendar events is SKIPPED`;
  return undefined;
}

interface SystemdRun {
  /** event → its elapses, ISO in UTC (empty: never) */
  readonly elapses: Map<string, string[]>;
  /** events systemd refused to parse: a bug in the generator */
  readonly rejected: string[];
}

/** `Sat 2026-01-31 12:00:00 UTC` → `2026-01-31T12:00:00.000Z`. */
function systemdTime(text: string, context: string): string {
  const m = /^[A-Z][a-z]{2} (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC$/.exec(text);
  if (!m) throw new Error(`unexpected time from systemd-analyze for ${context}: ${JSON.stringify(text)}`);
  return `${m[1]}T${m[2]}.000Z`;
}

/**
 * systemd-analyze's text: one block per accepted event, blocks apart by a blank line, each
 * opening with `Original form:` (left out when it equals the normalized form, then the
 * block opens with `Normalized form:`).
 */
function parseSystemdOutput(stdout: string, stderr: string): SystemdRun {
  const elapses = new Map<string, string[]>();
  for (const block of stdout.split(/\n[ \t]*\n/)) {
    const lines = block.split("\n").filter((l) => l.trim() !== "");
    if (lines.length === 0) continue;
    const head = /^\s*(?:Original|Normalized) form: (.*)$/.exec(lines[0]!);
    if (!head) throw new Error(`unexpected block from systemd-analyze: ${JSON.stringify(block)}`);
    const event = head[1]!;
    const times: string[] = [];
    for (const line of lines.slice(1)) {
      const m = /^\s*(?:Next elapse|Iter\. #\d+): (.*)$/.exec(line);
      if (!m || m[1] === "never") continue;
      times.push(systemdTime(m[1]!, JSON.stringify(event)));
    }
    elapses.set(event, times);
  }
  const rejected = [...stderr.matchAll(/^Failed to parse calendar specification '(.*)'/gm)].map((m) => m[1]!);
  return { elapses, rejected };
}

/** One systemd-analyze for all the events at one base time. */
function runSystemd(events: readonly string[], base: Base): Promise<SystemdRun> {
  const args = ["--no-pager", "calendar", `--iterations=${base.iterations}`, `--base-time=@${(base.at.getTime() / 1000).toFixed(3)}`, "--", ...events];
  return new Promise((resolve, reject) => {
    const child = spawn("systemd-analyze", args, { env: SYSTEMD_ENV, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", reject);
    child.on("close", (code) => {
      let run: SystemdRun;
      try {
        run = parseSystemdOutput(stdout, stderr);
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      // exit status 1 when some event is refused; anything else unexplained is a failure
      if (code !== 0 && run.rejected.length === 0) {
        reject(new Error(`systemd-analyze exited with ${code}: ${stderr.trim()}`));
        return;
      }
      const missing = events.filter((e) => !run.elapses.has(e) && !run.rejected.includes(e));
      if (missing.length > 0) {
        reject(new Error(`systemd-analyze printed no block for ${missing.map((e) => JSON.stringify(e)).join(", ")}; stderr: ${stderr.trim()}`));
        return;
      }
      resolve(run);
    });
  });
}

// ---------------------------------------------------------------------------------------
// 1. Cross-check with systemd
// ---------------------------------------------------------------------------------------

void describe("calendar events: nextElapse against systemd-analyze calendar (TZ=UTC)", () => {
  const events = crossCheckEvents(300);
  const bases = crossCheckBases();
  const systemdText = new Map(events.map((e) => [e, forSystemd(e)]));
  const systemdEvents = [...new Set(systemdText.values())];
  const skipWhy = systemdAnalyzeMissing();
  const runs = new Map<Base, SystemdRun>();
  // kept, not thrown: a failing hook would cancel the tests that need no systemd
  let runFailure: Error | undefined;

  before(async () => {
    if (skipWhy) return;
    try {
      const results = await Promise.all(bases.map((b) => runSystemd(systemdEvents, b)));
      for (const [i, b] of bases.entries()) runs.set(b, results[i]!);
    } catch (e) {
      runFailure = e instanceof Error ? e : new Error(String(e));
    }
  });

  void it("systemd is given open-ended repetitions bounded, nothing else changed", () => {
    assert.equal(forSystemd("*:*:7/13"), "*:*:7..59/13");
    assert.equal(forSystemd("Mon..Fri 18,10/8,0:*:58..59"), "Mon..Fri 18,10..23/8,0:*:58..59");
    assert.equal(forSystemd("2024/2-1/2-1,15/5 0..12/4:0"), "2024..2199/2-1..12/2-1,15..31/5 0..12/4:0");
    assert.equal(forSystemd("*-1/3 6:00"), "*-1..31/3 6:00");
    assert.equal(forSystemd("quarterly"), "quarterly");
  });

  void it("the generator yields the same 300 distinct events on every run, with every feature in them", () => {
    assert.deepEqual(crossCheckEvents(300), events);
    assert.equal(new Set(events).size, 300);
    const has = (re: RegExp): number => events.filter((e) => re.test(e)).length;
    assert.ok(has(/^[A-Za-z]+[.,\sA-Za-z]*\s/) >= 30, "weekdays");
    assert.ok(has(/\.\./) >= 50, "ranges");
    assert.ok(has(/\d\/\d/) >= 50, "repetitions");
    assert.ok(has(/\.\.\d+\/\d/) >= 20, "ranged repetitions");
    assert.ok(has(/,/) >= 50, "lists");
    assert.ok(has(/(^|\s)20\d\d[-.,/]/) >= 15, "years");
    assert.ok(has(/:\d[^:\s]*:[^\s]+$|:\*:/) >= 30, "seconds");
    assert.ok(has(/(^|\s)[^\s:]+-[^\s:]+(\s|$)/) >= 30, "month-day dates");
  });

  void it("systemd-analyze accepts every generated event (a refusal is a bug in the generator)", (t) => {
    if (skipWhy) return t.skip(skipWhy);
    if (runFailure !== undefined) throw runFailure;
    const rejected = new Set([...runs.values()].flatMap((r) => r.rejected));
    assert.deepEqual([...rejected], [], `systemd-analyze refused these events; fix the generator: ${[...rejected].map((e) => JSON.stringify(e)).join(", ")}`);
  });

  const label = (event: string, sd: string): string => (sd === event ? JSON.stringify(event) : `${JSON.stringify(event)} (systemd: ${JSON.stringify(sd)})`);

  for (const base of bases) {
    void it(`after ${base.at.toISOString()}, ${base.iterations} elapses of each event agree with systemd's`, (t) => {
      if (skipWhy) return t.skip(skipWhy);
      if (runFailure !== undefined) throw runFailure;
      const run = runs.get(base);
      assert.ok(run, "systemd-analyze did not run");
      const mismatches: string[] = [];
      let compared = 0;
      for (const event of events) {
        const sd = systemdText.get(event)!;
        const theirs = run.elapses.get(sd);
        if (theirs === undefined) continue; // refused: reported by the test above
        compared++;
        let ours: string[];
        try {
          ours = elapses(event, base.at, base.iterations);
        } catch (e) {
          mismatches.push(`${label(event, sd)}: ours threw ${String(e)}; systemd: ${theirs.join(", ") || "never"}`);
          continue;
        }
        if (ours.length === theirs.length && ours.every((x, i) => x === theirs[i])) continue;
        let k = 0;
        while (k < ours.length && ours[k] === theirs[k]) k++;
        mismatches.push(
          `${label(event, sd)}: elapse #${k + 1} after ${k === 0 ? base.at.toISOString() : theirs[k - 1]}: ours ${ours[k] ?? "none"}, systemd ${theirs[k] ?? "none"}` +
            `\n      ours:    ${ours.join(" ") || "never"}\n      systemd: ${theirs.join(" ") || "never"}`,
        );
      }
      t.diagnostic(`${compared} events compared with systemd after ${base.at.toISOString()}, ${mismatches.length} mismatched`);
      assert.ok(compared >= 200, `only ${compared} events were compared`);
      assert.equal(mismatches.length, 0, `${mismatches.length} of ${compared} events disagree with systemd after ${base.at.toISOString()}:\n  ${mismatches.join("\n  ")}`);
    });
  }
});

// ---------------------------------------------------------------------------------------
// 2. PVE-only forms, against hand-computed elapses
// ---------------------------------------------------------------------------------------

void describe("calendar events: PVE's forms", () => {
  // a Wednesday
  const base = new Date("2026-11-25T10:07:00Z");

  void it("a lone */15 is every 15 minutes of every hour", () => {
    assert.equal(parseCalendarEvent("*/15").text, "*/15");
    assert.deepEqual(elapses("*/15", base, 4), ["2026-11-25T10:15", "2026-11-25T10:30", "2026-11-25T10:45", "2026-11-25T11:00"].map(iso));
  });

  void it("a lone 30/10 is minutes 30, 40, 50 of every hour", () => {
    assert.deepEqual(elapses("30/10", base, 4), ["2026-11-25T10:30", "2026-11-25T10:40", "2026-11-25T10:50", "2026-11-25T11:30"].map(iso));
  });

  void it("mon..wed 30/10: the minutes on Monday to Wednesday only", () => {
    assert.deepEqual(elapses("mon..wed 30/10", base, 4), ["2026-11-25T10:30", "2026-11-25T10:40", "2026-11-25T10:50", "2026-11-25T11:30"].map(iso));
    // after Wednesday's last, the next Monday's first
    assert.deepEqual(elapses("mon..wed 30/10", new Date("2026-11-25T23:50:00Z"), 2), ["2026-11-30T00:30", "2026-11-30T00:40"].map(iso));
  });

  void it("fri 12..13:5/20: Fridays 12:05, 12:25, 12:45, 13:05, 13:25, 13:45", () => {
    assert.deepEqual(
      elapses("fri 12..13:5/20", base, 7),
      ["2026-11-27T12:05", "2026-11-27T12:25", "2026-11-27T12:45", "2026-11-27T13:05", "2026-11-27T13:25", "2026-11-27T13:45", "2026-12-04T12:05"].map(iso),
    );
  });

  void it("12,14,16,18,20,22:5: five past every even hour from noon", () => {
    assert.deepEqual(
      elapses("12,14,16,18,20,22:5", base, 7),
      ["2026-11-25T12:05", "2026-11-25T14:05", "2026-11-25T16:05", "2026-11-25T18:05", "2026-11-25T20:05", "2026-11-25T22:05", "2026-11-26T12:05"].map(iso),
    );
  });

  void it("*-05: the 5th of every month at midnight", () => {
    assert.deepEqual(elapses("*-05", base, 3), ["2026-12-05T00:00", "2027-01-05T00:00", "2027-02-05T00:00"].map(iso));
  });

  void it("sat *-1..7 15:00: the first Saturday of the month", () => {
    // 2026-11-07 is past; December 1 is a Tuesday, January 1 a Friday, February 1 a Monday
    assert.deepEqual(elapses("sat *-1..7 15:00", base, 3), ["2026-12-05T15:00", "2027-01-02T15:00", "2027-02-06T15:00"].map(iso));
  });

  void it("2015-10-21 has no elapse after 2026", () => {
    assert.equal(nextElapse(parseCalendarEvent("2015-10-21"), base, "UTC"), null);
  });

  void it("*:*:0/10: every 10 seconds", () => {
    assert.deepEqual(
      elapses("*:*:0/10", base, 6),
      ["2026-11-25T10:07:10", "2026-11-25T10:07:20", "2026-11-25T10:07:30", "2026-11-25T10:07:40", "2026-11-25T10:07:50", "2026-11-25T10:08:00"].map(iso),
    );
  });
});

// ---------------------------------------------------------------------------------------
// 3. Malformed events
// ---------------------------------------------------------------------------------------

void describe("calendar events: malformed ones are refused with the position and the reason", () => {
  // `at`: the 1-based position the message must name, where only one reading is sensible
  const cases: { text: string; at?: number }[] = [
    { text: "" },
    { text: "mon..fry", at: 6 },
    { text: "25:00", at: 1 },
    { text: "*-13-01", at: 3 },
    { text: "*-*-32", at: 5 },
    { text: "12:60", at: 4 },
    { text: "1/0" },
    { text: "mon..fri 8..17,22:0/15 extra", at: 24 },
    { text: "--" },
    { text: "*-*-* 12:00:00:00" },
    { text: "yearlyx", at: 1 },
    { text: "5..3" },
  ];
  for (const { text, at } of cases) {
    void it(JSON.stringify(text), () => {
      assert.throws(
        () => parseCalendarEvent(text),
        (e: unknown) => {
          assert.ok(e instanceof GordeError, `not a GordeError: ${String(e)}`);
          assert.equal(e.code, "usage");
          const m = /\bat (\d+)\b/.exec(e.message);
          assert.ok(m, `the message names no position: ${e.message}`);
          const pos = Number(m[1]);
          assert.ok(pos >= 1 && pos <= text.length + 1, `position ${pos} is outside ${JSON.stringify(text)}: ${e.message}`);
          if (at !== undefined) assert.equal(pos, at, e.message);
          // a reason after the position
          assert.match(e.message, /\bat \d+\b\W*\w/);
          return true;
        },
      );
    });
  }

  void it('"1985-01-01" is well-formed, with no elapse after 2026', () => {
    const event = parseCalendarEvent("1985-01-01");
    assert.equal(nextElapse(event, new Date("2026-11-25T10:07:00Z"), "UTC"), null);
  });
});
