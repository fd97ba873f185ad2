// Low-load windows (`window: 01:00-05:00`, across midnight too): a job may start only inside
// its window (and waits there while the host is busy, see load.ts). Pure: the web interface
// draws the windows with this module.
import { GordeError } from "../errors.ts";

export interface Window {
  readonly text: string;
  /** minutes after midnight, local time; end may be before start (the window spans midnight) */
  readonly start: number;
  readonly end: number;
}

function minutes(s: string, text: string, which: string): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(s);
  const h = Number(m?.[1]);
  const mi = Number(m?.[2]);
  if (!m || h > 24 || mi > 59 || (h === 24 && mi !== 0)) throw new GordeError("usage", `window ${JSON.stringify(text)}: its ${which} "${s}" is not a time HH:MM.`);
  return h * 60 + mi;
}

/** `HH:MM-HH:MM`; a window that never opens (start = end) is refused. */
export function parseWindow(text: string): Window {
  const parts = text.trim().split("-");
  if (parts.length !== 2) throw new GordeError("usage", `window ${JSON.stringify(text)} is not HH:MM-HH:MM.`);
  const start = minutes(parts[0]!.trim(), text, "start");
  // 24:00 as the end stays 1440: 00:00-24:00 is the whole day.
  const end = minutes(parts[1]!.trim(), text, "end");
  if (start % (24 * 60) === end % (24 * 60) && !(start === 0 && end === 24 * 60)) throw new GordeError("usage", `window ${JSON.stringify(text)} never opens: its start and end are the same time.`);
  return { text, start: start % (24 * 60), end: start === 0 ? end : end % (24 * 60) };
}

function wallMinutes(at: Date, tz: "UTC" | "local"): number {
  return tz === "UTC" ? at.getUTCHours() * 60 + at.getUTCMinutes() : at.getHours() * 60 + at.getMinutes();
}

/** Whether `at` lies inside the window. */
export function windowOpen(w: Window, at: Date, tz: "UTC" | "local" = "local"): boolean {
  const m = wallMinutes(at, tz);
  return w.start < w.end ? m >= w.start && m < w.end : m >= w.start || m < w.end;
}

/** When the window that is open at `at` closes (undefined when it is closed). */
export function windowCloses(w: Window, at: Date, tz: "UTC" | "local" = "local"): Date | undefined {
  if (!windowOpen(w, at, tz)) return undefined;
  const m = wallMinutes(at, tz);
  const left = w.end > m ? w.end - m : w.end + 24 * 60 - m;
  const d = new Date(at.getTime() + left * 60_000);
  // Whole minutes: the seconds of `at` are not part of the window.
  return new Date(Math.floor(d.getTime() / 60_000) * 60_000);
}
