// Retention: which snapshots of one backup group a prune keeps. This is the algorithm of
// Proxmox Backup Server (pbs-datastore/src/prune.rs, compute_prune_info), reproduced
// decision for decision, so that a retention policy means the same thing in both:
//
// - Snapshots are sorted newest first.
// - Unfinished snapshots (no manifest) are decided first: the newest snapshot, if it is
//   unfinished, is "keep-partial" (its backup may still be running); every other
//   unfinished snapshot is "remove". Neither counts toward any rule.
// - The rules run in the order last, hourly, daily, weekly, monthly, yearly. Each maps a
//   snapshot to a period (local time of the configured zone; weeks are ISO weeks) and
//   walks the list newest to oldest over the snapshots no earlier rule has decided:
//   periods of snapshots an earlier rule kept count as covered and are passed over; the
//   first snapshot of a new period is kept, until the rule's count is reached; a later
//   snapshot in a period this rule already kept is marked "remove" for good, so no later
//   rule can pick it up (this matters where periods do not nest: an ISO week spanning
//   two months or years).
// - Protected snapshots are never removed and never counted: their action is "protected".
// - Everything left undecided is "remove".
// - With no rule set (all absent or 0), nothing is removed: PBS then keeps every
//   snapshot whatever its mark. Here unfinished snapshots are then "keep-partial".

import { GordeError } from "../errors.ts";

export interface PruneSnapshot {
  /** Backup time, unix seconds. */
  time: number;
  protected: boolean;
  /** False when the snapshot has no manifest: its backup failed or is still running. */
  finished: boolean;
  id?: string;
}

export interface PruneOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** IANA zone the hourly to yearly periods are computed in; default the process's zone. */
  timeZone?: string;
}

/** "in-use": to be removed, but another operation (a verify, a sync, a restore, a backup's base) held it; the next prune removes it */
export type PruneAction = "keep" | "remove" | "protected" | "keep-partial" | "in-use";

export interface PruneEntry<T extends PruneSnapshot = PruneSnapshot> {
  snapshot: T;
  action: PruneAction;
}

const KEEP_KEYS = ["keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"] as const;

type Mark = PruneAction;

/**
 * Decides the fate of every snapshot of a group under `options`. Returns one entry per
 * input snapshot, newest first (snapshots with the same time keep their input order).
 */
export function computePrune<T extends PruneSnapshot>(
  snapshots: readonly T[],
  options: PruneOptions,
): PruneEntry<T>[] {
  for (const key of KEEP_KEYS) {
    const n = options[key];
    if (n !== undefined && !(Number.isSafeInteger(n) && n >= 0)) {
      throw new GordeError("usage", `Prune option ${key} must be a non-negative integer, got ${String(n)}.`);
    }
  }
  for (const s of snapshots) {
    if (!Number.isFinite(s.time)) {
      throw new GordeError("invalid", `Snapshot time must be a finite number, got ${String(s.time)}.`);
    }
  }
  const zone = resolveZone(options.timeZone);

  // Array.prototype.sort is stable, so equal times keep their input order.
  const list = snapshots.slice().sort((a, b) => b.time - a.time);
  const n = list.length;
  const mark: (Mark | undefined)[] = new Array<Mark | undefined>(n).fill(undefined);

  // Unfinished snapshots: only one newer than every finished snapshot may stay.
  let keepUnfinished = true;
  for (let i = 0; i < n; i++) {
    if (list[i]!.finished) {
      keepUnfinished = false;
    } else {
      mark[i] = keepUnfinished ? "keep-partial" : "remove";
      keepUnfinished = false;
    }
  }

  const keepsSomething = KEEP_KEYS.some((k) => (options[k] ?? 0) > 0);
  if (keepsSomething) {
    // The local calendar fields of every snapshot, computed once.
    let fields: LocalFields[] | undefined;
    const local = (): LocalFields[] => (fields ??= list.map((s) => localFields(s.time, zone)));

    if (options.keepLast !== undefined) {
      // One period per snapshot (PBS uses the snapshot's time, unique within a group).
      markSelections(mark, list, options.keepLast, (i) => `#${i}`);
    }
    if (options.keepHourly !== undefined) {
      const f = local();
      markSelections(mark, list, options.keepHourly, (i) => {
        const x = f[i]!;
        return `${ymd(x)}/${pad2(x.hour)}`;
      });
    }
    if (options.keepDaily !== undefined) {
      const f = local();
      markSelections(mark, list, options.keepDaily, (i) => ymd(f[i]!));
    }
    if (options.keepWeekly !== undefined) {
      // ISO week-numbering year and week ("%G/%V"): the year may differ from the calendar's.
      const f = local();
      markSelections(mark, list, options.keepWeekly, (i) => {
        const x = f[i]!;
        const w = isoWeek(x.year, x.month, x.day);
        return `${pad4(w.year)}/${pad2(w.week)}`;
      });
    }
    if (options.keepMonthly !== undefined) {
      const f = local();
      markSelections(mark, list, options.keepMonthly, (i) => {
        const x = f[i]!;
        return `${pad4(x.year)}/${pad2(x.month)}`;
      });
    }
    if (options.keepYearly !== undefined) {
      const f = local();
      markSelections(mark, list, options.keepYearly, (i) => pad4(f[i]!.year));
    }
  }

  return list.map((snapshot, i): PruneEntry<T> => {
    let action: PruneAction;
    if (snapshot.protected) action = "protected";
    else if (!keepsSomething) action = snapshot.finished ? "keep" : "keep-partial";
    else action = mark[i] ?? "remove";
    return { snapshot, action };
  });
}

// PBS mark_selections.
function markSelections(
  mark: (Mark | undefined)[],
  list: readonly PruneSnapshot[],
  keep: number,
  period: (i: number) => string,
): void {
  const alreadyIncluded = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    if (mark[i] === "keep") alreadyIncluded.add(period(i));
  }
  const included = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    if (mark[i] !== undefined) continue;
    if (list[i]!.protected) {
      mark[i] = "protected";
      continue;
    }
    const p = period(i);
    if (alreadyIncluded.has(p)) continue;
    if (!included.has(p)) {
      if (included.size >= keep) break;
      included.add(p);
      mark[i] = "keep";
    } else {
      mark[i] = "remove";
    }
  }
}

// ---- local calendar fields ----

interface LocalFields {
  year: number;
  month: number; // 1..12
  day: number; // 1..31
  hour: number; // 0..23
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The zone name to compute periods in; "UTC" is computed without Intl. */
function resolveZone(timeZone: string | undefined): string {
  const zone = timeZone ?? new Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone === "UTC" || zone === "Etc/UTC") return "UTC";
  if (!formatters.has(zone)) {
    let f: Intl.DateTimeFormat;
    try {
      f = new Intl.DateTimeFormat("en-US", {
        timeZone: zone,
        year: "numeric",
        month: "numeric",
        day: "numeric",
        hour: "numeric",
        hourCycle: "h23",
      });
    } catch (err) {
      throw new GordeError("usage", `Unknown time zone ${JSON.stringify(zone)}.`, { cause: err });
    }
    formatters.set(zone, f);
  }
  return zone;
}

function localFields(time: number, zone: string): LocalFields {
  const ms = Math.floor(time) * 1000;
  if (zone === "UTC") {
    const d = new Date(ms);
    return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: d.getUTCHours() };
  }
  const out: LocalFields = { year: 0, month: 0, day: 0, hour: 0 };
  for (const part of formatters.get(zone)!.formatToParts(ms)) {
    switch (part.type) {
      case "year":
        out.year = Number(part.value);
        break;
      case "month":
        out.month = Number(part.value);
        break;
      case "day":
        out.day = Number(part.value);
        break;
      case "hour":
        out.hour = Number(part.value);
        break;
    }
  }
  return out;
}

/** ISO 8601 week-numbering year and week of a calendar date. */
function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  const dow = (date.getUTCDay() + 6) % 7; // Monday 0 .. Sunday 6
  // The Thursday of this week decides the year the week belongs to.
  date.setUTCDate(date.getUTCDate() + 3 - dow);
  const isoYear = date.getUTCFullYear();
  const jan1 = new Date(0);
  jan1.setUTCFullYear(isoYear, 0, 1);
  const dayOfYear = Math.round((date.getTime() - jan1.getTime()) / 86_400_000);
  return { year: isoYear, week: Math.floor(dayOfYear / 7) + 1 };
}

function ymd(x: LocalFields): string {
  return `${pad4(x.year)}/${pad2(x.month)}/${pad2(x.day)}`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function pad4(n: number): string {
  return String(n).padStart(4, "0");
}
