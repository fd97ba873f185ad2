// The backup plan as one declarative file (YAML): the guests with their RPO (and how often a
// restore drill must prove their backups, `drill-every`), the jobs that
// keep them (backup, prune, GC, verify, sync, restore drills) with their schedules, windows
// and retention, and who is told what. Validated whole before anything uses it: every
// problem is one sentence with the line it is on.
import { LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { REMOTE_NAME_RE, remoteNameProblem } from "../format/names.ts";
import { firstIssue } from "../schema-issue.ts";
import { parseRate } from "../format/units.ts";
import { type CalendarEvent, nextElapse, parseCalendarEvent } from "./calendar-event.ts";
import { type Window, parseWindow, windowOpen } from "./window.ts";

const name = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/, "a name of letters, digits, '.', '_' or '-'");
const guestId = z.number().int().min(100).max(999_999_999);
/** `26h`, `90m`, `2d`, `1w` */
const duration = z.string().regex(/^\d{1,6}[smhdw]$/, "a duration like 26h, 90m, 2d or 1w");

const Keep = z.strictObject({
  last: z.number().int().min(1).optional(),
  hourly: z.number().int().min(1).optional(),
  daily: z.number().int().min(1).optional(),
  weekly: z.number().int().min(1).optional(),
  monthly: z.number().int().min(1).optional(),
  yearly: z.number().int().min(1).optional(),
});

const common = {
  name,
  schedule: z.string().min(1),
  window: z.string().optional(),
  "repeat-missed": z.boolean().optional(),
  comment: z.string().max(1024).optional(),
};
const guestSelection = {
  /** `all`, or guest ids */
  guests: z.union([z.literal("all"), z.array(guestId).min(1)]).optional(),
  nodes: z.array(name).min(1).optional(),
  exclude: z.array(guestId).optional(),
};

const BackupJob = z.strictObject({
  ...common,
  ...guestSelection,
  type: z.literal("backup"),
  mode: z.enum(["snapshot", "suspend", "stop"]).optional(),
  datastore: name.optional(),
  keep: Keep.optional(),
  /** bytes per second: 500K, 20M, 1G, or a number */
  rate: z
    .union([z.string(), z.number()])
    .refine((v) => safeRate(String(v)) !== undefined, "a rate like 500K, 20M or 1G, at least 1K")
    .optional(),
  notes: z.string().max(4096).optional(),
  "max-parallel": z.number().int().min(1).max(64).optional(),
  /** best-effort I/O priority of the backup work, 0 (high) .. 7 (low, the default), as vzdump's ionice */
  "io-priority": z.number().int().min(0).max(7).optional(),
});
const PruneJob = z.strictObject({ ...common, ...guestSelection, type: z.literal("prune"), datastore: name.optional(), keep: Keep });
const GcJob = z.strictObject({ ...common, type: z.literal("gc"), datastore: name.optional() });
const VerifyJob = z.strictObject({
  ...common,
  type: z.literal("verify"),
  datastore: name.optional(),
  /** only snapshots not verified within this many days; absent: all */
  "outdated-after": z.number().int().min(1).max(3650).optional(),
});
const SyncJob = z.strictObject({
  ...common,
  type: z.literal("sync"),
  datastore: name.optional(),
  /** the source: a remote added on the server with `gorde remote add` (its URL, user and secret stay there) */
  remote: z.string().regex(REMOTE_NAME_RE, { error: (iss) => remoteNameProblem(String(iss.input)) }),
  groups: z.array(z.string().regex(/^(vm|ct|host)\/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/, "vm/<id>, ct/<id> or host/<name>")).optional(),
  last: z.number().int().min(1).optional(),
  /** who owns the groups the job pulls (default: plan) */
  owner: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(![A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$/, "a user or user!token").optional(),
});
const DrillJob = z.strictObject({ ...common, ...guestSelection, type: z.literal("drill"), node: name.optional() });

const Job = z.discriminatedUnion("type", [BackupJob, PruneJob, GcJob, VerifyJob, SyncJob, DrillJob]);

const Target = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("webhook"), name, url: z.string().url(), headers: z.record(z.string(), z.string()).optional() }),
  z.strictObject({
    type: z.literal("smtp"),
    name,
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535),
    secure: z.boolean().optional(),
    starttls: z.boolean().optional(),
    user: z.string().optional(),
    /** the password is never in the plan: an environment variable names it */
    "password-env": z.string().regex(/^[A-Z_][A-Z0-9_]*$/).optional(),
    from: z.string().min(3),
    to: z.array(z.string().min(3)).min(1),
  }),
]);

export const PlanSchema = z.strictObject({
  version: z.literal(1),
  /** when a host counts as busy (jobs wait in their window): defaults 1.5 load per CPU, 40% CPU and 30% I/O pressure */
  load: z
    .strictObject({
      "max-load-per-cpu": z.number().positive().optional(),
      "max-cpu-pressure": z.number().min(0).max(100).optional(),
      "max-io-pressure": z.number().min(0).max(100).optional(),
    })
    .optional(),
  /** each guest: its RPO, and how often a restore drill must prove its backups (`drill-every`, optional) */
  guests: z.record(z.string().regex(/^[1-9]\d{2,8}$/, "a guest id"), z.strictObject({ rpo: duration, "drill-every": duration.optional(), node: name.optional() })),
  jobs: z.array(Job).min(1),
  notifications: z
    .strictObject({
      targets: z.array(Target),
      matchers: z.array(z.strictObject({ target: name, "min-severity": z.enum(["info", "warning", "error"]).optional(), jobs: z.array(name).optional(), results: z.array(z.enum(["ok", "failed", "skipped"])).optional() })).optional(),
    })
    .optional(),
});

export type PlanFile = z.infer<typeof PlanSchema>;
export type PlanJob = z.infer<typeof Job>;

export interface Plan {
  readonly file: PlanFile;
  /** each job with its parsed schedule and window */
  readonly jobs: readonly { readonly job: PlanJob; readonly event: CalendarEvent; readonly window?: Window }[];
  /** guest id → RPO in milliseconds */
  readonly rpo: ReadonlyMap<number, number>;
  /** guest id → the longest time in milliseconds its newest passed drill may be old (guests with `drill-every`) */
  readonly drillEvery: ReadonlyMap<number, number>;
}

function safeRate(v: string): number | undefined {
  try {
    return parseRate(v);
  } catch {
    return undefined;
  }
}

/**
 * Where the plan ties a guest's backups or drills to a node (`guests.<id>.node`, a job's
 * `nodes` or a drill's `node`): on a cluster the guest's owner decides, so these are refused there.
 */
export function planPins(plan: Plan): string[] {
  const pins = Object.entries(plan.file.guests)
    .filter(([, g]) => g.node !== undefined)
    .map(([id, g]) => `guests.${id}.node (${g.node})`);
  for (const { job } of plan.jobs) {
    if ("nodes" in job && job.nodes) pins.push(`job ${job.name}: nodes (${job.nodes.join(", ")})`);
    if (job.type === "drill" && job.node) pins.push(`job ${job.name}: node (${job.node})`);
  }
  return pins;
}

/** A job's `keep` as prune takes it (keepLast, keepDaily, …). */
export function keepOptions(keep: z.infer<typeof Keep>): Record<string, number> {
  return Object.fromEntries(Object.entries(keep).map(([k, v]) => [`keep${k[0]!.toUpperCase()}${k.slice(1)}`, v]));
}

export function durationMs(d: string): number {
  const n = Number(d.slice(0, -1));
  return n * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[d.at(-1) as "s" | "m" | "h" | "d" | "w"];
}

/** Whether some elapse of `event` in the year after `from` falls inside `window`. */
function everInWindow(event: CalendarEvent, window: Window, from: Date, tz: "UTC" | "local"): boolean {
  let t: Date | null = from;
  const until = from.getTime() + 366 * 86_400_000;
  for (let i = 0; i < 5000 && t && t.getTime() < until; i++) {
    t = nextElapse(event, t, tz);
    if (t && windowOpen(window, t, tz)) return true;
  }
  return false;
}

/**
 * Parses and checks a plan: the schema (strict: unknown keys named), every schedule and
 * window, that each job's schedule falls inside its window, job names unique, and every
 * guest a job names known to the plan. `now` anchors the window check.
 */
export function parsePlan(text: string, what = "plan", opts: { now?: Date; tz?: "UTC" | "local" } = {}): Plan {
  const lines = new LineCounter();
  // logLevel "error": yaml's warnings (a map as a key) are not printed; the schema refuses such a plan.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, logLevel: "error" });
  const lineOf = (path: readonly (string | number)[]): number | undefined => {
    for (let p = [...path]; ; p = p.slice(0, -1)) {
      const node = doc.getIn(p, true) as { range?: [number, number, number] } | undefined;
      if (node?.range) return lines.linePos(node.range[0]).line;
      if (p.length === 0) return undefined;
    }
  };
  const fail = (line: number | undefined, message: string): never => {
    throw new GordeError("invalid", `${what}${line ? ` line ${line}` : ""}: ${message.replace(/\.$/, "")}.`);
  };
  const yamlError = doc.errors[0];
  if (yamlError) fail(lines.linePos(yamlError.pos[0]).line, `is not valid YAML: ${yamlError.message.split("\n")[0]}`);
  let js: unknown;
  try {
    // An alias to an anchor that is not there, or too many aliases (a "billion laughs"), throws here.
    js = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    fail(undefined, `is not valid YAML: ${(err as Error).message.split("\n")[0]}`);
  }
  const r = PlanSchema.safeParse(js);
  if (!r.success) {
    const { issue, path: at, message } = firstIssue(r.error);
    const path = issue.path.filter((k): k is string | number => typeof k !== "symbol");
    if (issue.code === "unrecognized_keys") fail(lineOf([...path, issue.keys[0]!]), `unknown key ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}${path.length ? ` in ${path.join(".")}` : ""}`);
    fail(lineOf(path), `${at || "the plan"} is invalid: ${message}`);
  }
  const file = r.data!;
  const now = opts.now ?? new Date();
  const tz = opts.tz ?? "local";
  const names = new Set<string>();
  const jobs = file.jobs.map((job, i) => {
    const at = (key: string): number | undefined => lineOf(["jobs", i, key]);
    if (names.has(job.name)) fail(at("name"), `job name ${job.name} is used twice`);
    names.add(job.name);
    const parsed = <T>(key: string, fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        return fail(at(key), `job ${job.name}: ${(err as Error).message}`);
      }
    };
    const event = parsed("schedule", () => parseCalendarEvent(job.schedule));
    const window = job.window === undefined ? undefined : parsed("window", () => parseWindow(job.window!));
    if (!nextElapse(event, now, tz)) fail(at("schedule"), `job ${job.name}: its schedule "${job.schedule}" has no elapse left`);
    if (window && !everInWindow(event, window, now, tz)) fail(at("window"), `job ${job.name}: its schedule "${job.schedule}" never falls inside its window ${job.window}, so it would never run`);
    if ("guests" in job) {
      for (const id of [...(Array.isArray(job.guests) ? job.guests : []), ...(job.exclude ?? [])]) {
        if (!(String(id) in file.guests)) fail(at(Array.isArray(job.guests) && job.guests.includes(id) ? "guests" : "exclude"), `job ${job.name} names guest ${id}, which the plan's guests do not list`);
      }
    }
    return { job, event, window };
  });
  const targets = new Set(file.notifications?.targets.map((t) => t.name));
  for (const [i, m] of (file.notifications?.matchers ?? []).entries()) {
    if (!targets.has(m.target)) fail(lineOf(["notifications", "matchers", i, "target"]), `matcher ${i + 1} names target ${m.target}, which is not defined`);
    for (const j of m.jobs ?? []) if (!names.has(j)) fail(lineOf(["notifications", "matchers", i, "jobs"]), `matcher ${i + 1} names job ${j}, which is not defined`);
  }
  for (const [id, g] of Object.entries(file.guests)) {
    if (g["drill-every"] === undefined) continue;
    const drilled = file.jobs.some((j) => j.type === "drill" && (j.guests === "all" || j.guests === undefined || j.guests.includes(Number(id))) && !j.exclude?.includes(Number(id)));
    if (!drilled) fail(lineOf(["guests", Number(id), "drill-every"]), `guest ${id} asks for a drill every ${g["drill-every"]}, but no drill job drills it`);
  }
  const rpo = new Map(Object.entries(file.guests).map(([id, g]) => [Number(id), durationMs(g.rpo)]));
  const drillEvery = new Map(Object.entries(file.guests).flatMap(([id, g]) => (g["drill-every"] ? [[Number(id), durationMs(g["drill-every"])] as const] : [])));
  return { file, jobs, rpo, drillEvery };
}

/** A snapshot as a listing gives it, with its newest drill (`time` in seconds). */
export interface DrilledSnapshot {
  snapshot: string;
  time: string;
  drill?: { result: string; time: number } | null;
}

/**
 * A guest's RPO against the plan's target: `within` while its last good backup is at most
 * `rpoMs` old, `late` when older, `missing` when it has none.
 */
export function rpoState(lastGoodBackupMs: number | undefined, rpoMs: number, now: number): "within" | "late" | "missing" {
  if (lastGoodBackupMs === undefined) return "missing";
  return now - lastGoodBackupMs <= rpoMs ? "within" : "late";
}

/**
 * The "tested RPO" of a guest: of its snapshots, the one whose drill passed most recently.
 * `within` when that drill is at most `everyMs` old, `late` when older, `never` when no
 * drill of the guest passed. `snapshotAgeMs` is what restoring only backups proven to
 * work would lose: the age of that snapshot.
 */
export function testedRpo(
  snaps: readonly DrilledSnapshot[],
  everyMs: number,
  now: number,
): { state: "within" | "late" | "never"; snapshot: string | null; drillAgeMs: number | null; snapshotAgeMs: number | null } {
  let best: DrilledSnapshot | undefined;
  for (const s of snaps) if (s.drill?.result === "passed" && (!best || s.drill.time > best.drill!.time)) best = s;
  if (!best) return { state: "never", snapshot: null, drillAgeMs: null, snapshotAgeMs: null };
  const drillAgeMs = Math.max(0, now - best.drill!.time * 1000);
  return { state: drillAgeMs <= everyMs ? "within" : "late", snapshot: best.snapshot, drillAgeMs, snapshotAgeMs: Math.max(0, now - Date.parse(best.time)) };
}
