// Calendar events with the grammar of PVE and systemd: `[weekdays] [[[YYYY-]MM-]DD]
// [HH:MM[:SS]]` (or a lone minute spec, as PVE reads `*/15`), every component a list of
// values, ranges `a..b` and repetitions `a/r`, `a..b/r`, `*/r`; and the keywords minutely,
// hourly, daily, weekly, monthly, yearly/annually, quarterly, semiannually. Pure: parsing
// and the next elapse after an instant, nothing else.
import { GordeError } from "../errors.ts";

export interface CalendarEvent {
  readonly text: string;
  /** allowed values, sorted; weekdays 0 (Sunday) .. 6, undefined: any */
  readonly weekdays: readonly number[] | undefined;
  readonly years: readonly number[];
  readonly months: readonly number[];
  readonly days: readonly number[];
  readonly hours: readonly number[];
  readonly minutes: readonly number[];
  readonly seconds: readonly number[];
}

const KEYWORDS: Readonly<Record<string, string>> = {
  minutely: "*-*-* *:*:00",
  hourly: "*-*-* *:00:00",
  daily: "*-*-* 00:00:00",
  weekly: "mon *-*-* 00:00:00",
  monthly: "*-*-01 00:00:00",
  yearly: "*-01-01 00:00:00",
  annually: "*-01-01 00:00:00",
  quarterly: "*-01,04,07,10-01 00:00:00",
  semiannually: "*-01,07-01 00:00:00",
};

// The week starts on Monday, as systemd and PVE count it: `sat..sun` is a range, `sun..mon` is not.
const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEKDAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
/** Elapses are searched up to this year (systemd's limit is similar). */
const LAST_YEAR = 2199;
const FIRST_YEAR = 1970;

class Syntax {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }

  error(pos: number, reason: string): GordeError {
    return new GordeError("usage", `calendar event ${JSON.stringify(this.text)}: at ${pos + 1}: ${reason}.`);
  }
}

function range(lo: number, hi: number, step = 1): number[] {
  const out: number[] = [];
  for (let v = lo; v <= hi; v += step) out.push(v);
  return out;
}

// One component: `*`, `*/r`, `a`, `a/r`, `a..b`, `a..b/r`, comma-separated.
function parseComponent(s: Syntax, spec: string, pos: number, what: string, min: number, max: number, name?: (word: string) => number | undefined): number[] {
  const values = new Set<number>();
  let at = pos;
  for (const item of spec.split(",")) {
    if (item === "") throw s.error(at, `an empty ${what} in a list`);
    const [base, stepText, extra] = item.split("/");
    if (extra !== undefined) throw s.error(at, `"${item}" has two repetitions`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) throw s.error(at + base!.length + 1, `the repetition "/${stepText}" is not a number above 0`);
      step = Number(stepText);
    }
    const value = (t: string, p: number): number => {
      const named = name?.(t);
      if (named !== undefined) return named;
      if (!/^\d+$/.test(t)) throw s.error(p, `"${t}" is not a ${what}`);
      const v = Number(t);
      if (v < min || v > max) throw s.error(p, `${what} ${v} is out of range ${min}..${max}`);
      return v;
    };
    let lo: number;
    let hi: number;
    if (base === "*") {
      lo = min;
      hi = max;
    } else if (base!.includes("..")) {
      const [a, b, more] = base!.split("..");
      if (more !== undefined || a === "" || b === "") throw s.error(at, `"${base}" is not a range a..b`);
      lo = value(a!, at);
      hi = value(b!, at + a!.length + 2);
      if (hi < lo) throw s.error(at, `the range ${base} runs backwards`);
    } else {
      lo = value(base!, at);
      hi = stepText === undefined ? lo : max;
    }
    for (const v of range(lo, hi, step)) values.add(v);
    at += item.length + 1;
  }
  return [...values].sort((a, b) => a - b);
}

function weekdayOf(word: string): number | undefined {
  const w = word.toLowerCase();
  const i = WEEKDAYS.indexOf(w);
  if (i >= 0) return i;
  const j = WEEKDAY_NAMES.indexOf(w);
  return j >= 0 ? j : undefined;
}

/** Parses an event; a malformed one is refused with the position and the reason. */
export function parseCalendarEvent(text: string): CalendarEvent {
  const s = new Syntax(text);
  const trimmed = text.trim();
  if (trimmed === "") throw s.error(0, "the event is empty");
  const keyword = KEYWORDS[trimmed.toLowerCase()];
  if (keyword) return { ...parseCalendarEvent(keyword), text };
  // Tokens with their offsets, for positions in messages.
  const tokens = [...text.matchAll(/\S+/g)].map((m) => ({ t: m[0], pos: m.index }));
  let i = 0;
  let weekdays: number[] | undefined;
  if (/^[A-Za-z]/.test(tokens[0]!.t)) {
    const tok = tokens[i++]!;
    if (/^[A-Za-z]+$/.test(tok.t) && weekdayOf(tok.t) === undefined && tokens.length === 1) throw s.error(tok.pos, `"${tok.t}" is neither a weekday nor a keyword`);
    weekdays = parseComponent(s, tok.t, tok.pos, "weekday", 0, 6, (w) => {
      if (/^\d+$/.test(w)) return -1;
      return weekdayOf(w);
    });
    if (weekdays.includes(-1)) throw s.error(tok.pos, "weekdays are names (mon, tue, …), not numbers");
    // As JavaScript numbers them: Sunday 0.
    weekdays = weekdays.map((d) => (d + 1) % 7).sort((a, b) => a - b);
  }
  let years = range(FIRST_YEAR, LAST_YEAR);
  let months = range(1, 12);
  let days = range(1, 31);
  let hours = [0];
  let minutes = [0];
  let seconds = [0];
  let sawDate = false;
  let sawTime = false;
  for (; i < tokens.length; i++) {
    const { t, pos } = tokens[i]!;
    if (t.includes(":")) {
      if (sawTime) throw s.error(pos, `a second time "${t}"`);
      sawTime = true;
      const parts = t.split(":");
      if (parts.length > 3) throw s.error(pos, `"${t}" is not HH:MM[:SS]`);
      const offs = [pos, pos + parts[0]!.length + 1, pos + parts[0]!.length + parts[1]!.length + 2];
      hours = parseComponent(s, parts[0]!, offs[0]!, "hour", 0, 23);
      minutes = parseComponent(s, parts[1]!, offs[1]!, "minute", 0, 59);
      seconds = parts[2] === undefined ? [0] : parseComponent(s, parts[2], offs[2]!, "second", 0, 59);
    } else if (t.includes("-") && /^[\d*.,/-]+$/.test(t)) {
      if (sawDate || sawTime) throw s.error(pos, sawTime ? `the date "${t}" must come before the time` : `a second date "${t}"`);
      sawDate = true;
      const parts = t.split("-");
      if (parts.length > 3 || parts.some((p) => p === "")) throw s.error(pos, `"${t}" is not [[YYYY-]MM-]DD`);
      const names = parts.length === 3 ? (["year", "month", "day"] as const) : (["month", "day"] as const);
      let at = pos;
      for (const [k, part] of parts.entries()) {
        const which = names[k]!;
        if (which === "year") years = parseComponent(s, part, at, "year", FIRST_YEAR, LAST_YEAR);
        else if (which === "month") months = parseComponent(s, part, at, "month", 1, 12);
        else days = parseComponent(s, part, at, "day", 1, 31);
        at += part.length + 1;
      }
    } else if (/^[\d*.,/]+$/.test(t)) {
      // PVE: a lone spec is the minutes of every hour (`*/15`, `30/10`).
      if (sawTime) throw s.error(pos, `a second time "${t}"`);
      sawTime = true;
      hours = range(0, 23);
      minutes = parseComponent(s, t, pos, "minute", 0, 59);
      seconds = [0];
    } else {
      throw s.error(pos, `"${t}" is not a date, a time or a weekday list`);
    }
  }
  if (!sawDate && !sawTime && !weekdays) throw s.error(0, "the event names no time");
  return { text, weekdays, years, months, days, hours, minutes, seconds };
}

/** The first value of `sorted` at or above `v`. */
function atOrAbove(sorted: readonly number[], v: number): number | undefined {
  for (const x of sorted) if (x >= v) return x;
  return undefined;
}

/**
 * The first elapse strictly after `after`, the event read in `tz` (UTC, or the process's
 * local time zone); null when there is none up to the year 2199. Wall-clock fields are
 * stepped in UTC arithmetic and turned into an instant at the end.
 */
export function nextElapse(ev: CalendarEvent, after: Date, tz: "UTC" | "local" = "UTC"): Date | null {
  const start = Math.floor(after.getTime() / 1000) * 1000 + 1000;
  const s = new Date(start);
  // The wall clock as a UTC date (so Date.UTC normalises every carry).
  let w =
    tz === "UTC"
      ? start
      : Date.UTC(s.getFullYear(), s.getMonth(), s.getDate(), s.getHours(), s.getMinutes(), s.getSeconds());
  for (let guard = 0; guard < 2_000_000; guard++) {
    const d = new Date(w);
    const [y, mo, day, h, mi, sec] = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()];
    if (y > LAST_YEAR) return null;
    const ny = atOrAbove(ev.years, y);
    if (ny === undefined) return null;
    if (ny !== y) {
      w = Date.UTC(ny, 0, 1);
      continue;
    }
    const nmo = atOrAbove(ev.months, mo);
    if (nmo !== mo) {
      w = nmo === undefined ? Date.UTC(y + 1, 0, 1) : Date.UTC(y, nmo - 1, 1);
      continue;
    }
    if (!ev.days.includes(day) || (ev.weekdays && !ev.weekdays.includes(d.getUTCDay()))) {
      w = Date.UTC(y, mo - 1, day + 1);
      continue;
    }
    const nh = atOrAbove(ev.hours, h);
    if (nh !== h) {
      w = nh === undefined ? Date.UTC(y, mo - 1, day + 1) : Date.UTC(y, mo - 1, day, nh);
      continue;
    }
    const nmi = atOrAbove(ev.minutes, mi);
    if (nmi !== mi) {
      w = nmi === undefined ? Date.UTC(y, mo - 1, day, h + 1) : Date.UTC(y, mo - 1, day, h, nmi);
      continue;
    }
    const ns = atOrAbove(ev.seconds, sec);
    if (ns !== sec) {
      w = ns === undefined ? Date.UTC(y, mo - 1, day, h, mi + 1) : Date.UTC(y, mo - 1, day, h, mi, ns);
      continue;
    }
    const instant = tz === "UTC" ? w : new Date(y, mo - 1, day, h, mi, sec).getTime();
    // A wall time that a DST change skipped or repeated may map before the start: go on.
    if (instant >= start) return new Date(instant);
    w += 1000;
  }
  return null;
}
