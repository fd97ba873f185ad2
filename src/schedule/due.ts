// When a job runs: the pure decision of the scheduler, as PBS and PVE take it. A job is
// due at the first elapse of its schedule after the last one it was due at. A run found
// late (the scheduler was down) is taken at once with `repeat-missed`, skipped without it.
// A due run waits inside its window while the node is busy, and is skipped when the window
// closes. Time is a parameter: no clock here.
import { type CalendarEvent, nextElapse } from "./calendar-event.ts";
import { type Window, windowCloses, windowOpen } from "./window.ts";

/** A run found this much after its elapse counts as missed. */
export const MISSED_AFTER_MS = 60_000;

export interface DueJob {
  readonly name: string;
  readonly event: CalendarEvent;
  readonly window?: Window;
  readonly repeatMissed?: boolean;
}

export interface JobClock {
  /** the elapse the job was last due at (run, or skipped) */
  lastDue?: number;
  /** when the job came under the scheduler (its first elapse is after this) */
  since: number;
  /** a due elapse the scheduler saw in time and is waiting on (busy node): not a missed one */
  seen?: number;
}

export type Decision =
  | { action: "idle"; next: number | null }
  | { action: "run"; due: number; missed: boolean }
  | { action: "wait"; due: number; reason: string; until: number }
  | { action: "skip"; due: number; reason: string };

export function decide(job: DueJob, clock: JobClock, now: number, busy: string | undefined, tz: "UTC" | "local" = "local"): Decision {
  const from = new Date(clock.lastDue ?? clock.since);
  const due = nextElapse(job.event, from, tz)?.getTime() ?? null;
  if (due === null || due > now) return { action: "idle", next: due };
  const late = now - due > MISSED_AFTER_MS && clock.seen !== due;
  // One run (or skip) covers every elapse up to now: a scheduler that was down, or a job that
  // ran past several of its elapses, runs once, not once per elapse gone by.
  const covered = now - due > MISSED_AFTER_MS ? lastElapseUpTo(job.event, due, now, tz) : due;
  if (late && !job.repeatMissed) return { action: "skip", due: covered, reason: `missed at ${iso(due)} while the scheduler was not running (repeat-missed is off)` };
  if (job.window) {
    if (!windowOpen(job.window, new Date(now), tz)) {
      if (late) return { action: "wait", due: covered, reason: `a missed run waits for its window ${job.window.text}`, until: now + MISSED_AFTER_MS };
      const reason = windowOpen(job.window, new Date(due), tz) ? `its window ${job.window.text} closed before it could start${busy ? ` (${busy})` : ""}` : `outside its window ${job.window.text}`;
      return { action: "skip", due, reason };
    }
    if (busy) return { action: "wait", due: covered, reason: `the node is busy: ${busy}`, until: windowCloses(job.window, new Date(now), tz)!.getTime() };
  } else if (busy && now - due <= MISSED_AFTER_MS) {
    // Without a window a busy node delays a run by at most the missed margin.
    return { action: "wait", due, reason: `the node is busy: ${busy}`, until: due + MISSED_AFTER_MS };
  }
  return { action: "run", due: covered, missed: late };
}

/** The last elapse at or before `now`, starting from `first` (itself an elapse). */
function lastElapseUpTo(event: CalendarEvent, first: number, now: number, tz: "UTC" | "local"): number {
  let last = first;
  for (let i = 0; i < 1_000_000; i++) {
    const n = nextElapse(event, new Date(last), tz);
    if (!n || n.getTime() > now) break;
    last = n.getTime();
  }
  return last;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}
