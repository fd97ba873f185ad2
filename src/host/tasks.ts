// Long operations (backup, GC, verify, prune, sync) run as tasks, as PBS and PVE have them:
// each has an id, a persisted status and log, and can be listed, followed and aborted.
//   <dir>/<id>.json   status (TaskInfo), written atomically when the task starts and ends
//   <dir>/<id>.log    append-only, "<ISO time> <text>" per line, ending with a TASK line
import fsp, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { TaskInfoSchema, type TaskStreamEvent } from "../api/routes.ts";
import { GordeError } from "../errors.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";

export type TaskState = "running" | "ok" | "failed" | "aborted";

export interface TaskInfo {
  id: string;
  type: string;
  authId: string;
  store?: string;
  target?: string;
  startTime: number; // unix ms
  endTime?: number;
  state: TaskState;
  error?: string;
  /** a failed task's error code, when its error was a GordeError */
  code?: string;
  result?: unknown;
  pid: number;
}

export interface TaskContext {
  /** Appends to the task's log; text with newlines becomes several lines. */
  log(line: string): void;
  /** Streamed to subscribers only, never persisted. */
  progress(p: Record<string, unknown>): void;
  readonly signal: AbortSignal;
  readonly id: string;
}

/** A task's progress (`done` of `total`), passed on at most every 200 ms, and at the end. */
export function throttledProgress(task: Pick<TaskContext, "progress">): <P extends { done: number; total: number }>(p: P) => void {
  let last = 0;
  return (p) => {
    if (Date.now() - last < 200 && p.done < p.total) return;
    last = Date.now();
    task.progress({ ...p });
  };
}

export type TaskEvent = TaskStreamEvent<TaskInfo>;

export interface TaskMeta {
  type: string;
  authId: string;
  store?: string;
  target?: string;
}

export interface TaskFilter {
  running?: boolean; // true: only running tasks, false: only finished ones
  store?: string;
  type?: string;
  authId?: string;
  since?: number; // started at or after (unix ms)
  limit?: number;
}

export const INTERRUPTED = "interrupted: the server stopped while it ran.";
const DEFAULT_KEEP = 1000;

// UPID-<start ms, 12 hex>-<pid, 8 hex>-<counter, 8 hex>-<type>: fixed-width hex keeps ids
// sorted by start time, and the strict pattern keeps them safe as file names and in URLs.
const TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const ID_RE = /^UPID-([0-9a-f]{12})-([0-9a-f]{8})-([0-9a-f]{8})-([A-Za-z0-9][A-Za-z0-9_-]{0,63})$/;

export interface TaskIdParts {
  startTime: number;
  pid: number;
  counter: number;
  type: string;
}

export function isTaskId(id: string): boolean {
  return ID_RE.test(id);
}

export function parseTaskId(id: string): TaskIdParts {
  const m = ID_RE.exec(id);
  if (m === null) throw new GordeError("usage", `"${id.slice(0, 100)}" is not a task id.`);
  return { startTime: parseInt(m[1]!, 16), pid: parseInt(m[2]!, 16), counter: parseInt(m[3]!, 16), type: m[4]! };
}

export function formatTaskId(parts: TaskIdParts): string {
  if (!TYPE_RE.test(parts.type)) {
    throw new GordeError("usage", `The task type "${parts.type}" must be 1 to 64 letters, digits, "-" or "_".`);
  }
  const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");
  return `UPID-${hex(parts.startTime, 12)}-${hex(parts.pid >>> 0, 8)}-${hex(parts.counter >>> 0, 8)}-${parts.type}`;
}

// Shared by every manager in the process: the counter keeps ids unique, and LIVE tells a
// task running here from one a dead process left "running" under a pid we now reuse.
let counter = 0;
const LIVE = new Set<string>();

const StatusSchema = TaskInfoSchema.extend({ pid: z.number().int() });

interface Running {
  controller: AbortController;
  listeners: Set<(ev: TaskEvent) => void>;
  log: LogFile;
  status: Promise<void>; // status writes, in order
  done: PromiseWithResolvers<TaskInfo>;
  ending: boolean;
  /** lines logged so far */
  lines: number;
  /** the progress last reported, for a follower that comes late */
  progress?: Record<string, unknown>;
}

interface Entry {
  info: TaskInfo;
  run?: Running; // while it runs in this manager
}

/** A task just started, and what its function will return. */
export type StartedTask<R> = TaskInfo & { result: Promise<R> };

export class TaskManager {
  readonly dir: string;
  readonly #keep: number;
  readonly #entries = new Map<string, Entry>();
  readonly #background = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;

  private constructor(dir: string, keep: number) {
    this.dir = dir;
    this.#keep = keep;
  }

  static async open(dir: string, opts: { keep?: number } = {}): Promise<TaskManager> {
    const keep = opts.keep ?? DEFAULT_KEEP;
    if (!Number.isInteger(keep) || keep < 0) throw new GordeError("usage", `The task keep limit ${keep} is not a whole number of at least 0.`);
    try {
      await fsp.mkdir(dir, { recursive: true });
    } catch (err) {
      throw new GordeError("io", `Cannot create the task directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const mgr = new TaskManager(dir, keep);
    await mgr.#load();
    await mgr.#prune();
    return mgr;
  }

  /** Starts `fn` in the background; returns at once with the running task's info and a promise of what `fn` returns. */
  start<R>(meta: TaskMeta, fn: (t: TaskContext) => Promise<R>): StartedTask<R> {
    if (this.#closing !== undefined) throw new GordeError("usage", "The task manager is closed.");
    const startTime = Date.now();
    let id: string;
    do {
      counter = (counter + 1) >>> 0;
      id = formatTaskId({ startTime, pid: process.pid, counter, type: meta.type });
    } while (this.#entries.has(id));
    const info: TaskInfo = {
      id,
      type: meta.type,
      authId: meta.authId,
      ...(meta.store !== undefined && { store: meta.store }),
      ...(meta.target !== undefined && { target: meta.target }),
      startTime,
      state: "running",
      pid: process.pid,
    };
    const run: Running = {
      controller: new AbortController(),
      listeners: new Set(),
      lines: 0,
      log: new LogFile(this.#file(id, ".log")),
      status: Promise.resolve(),
      done: Promise.withResolvers<TaskInfo>(),
      ending: false,
    };
    const entry: Entry = { info, run };
    this.#entries.set(id, entry);
    LIVE.add(id);
    // Awaited only by callers that want `fn`'s own result (a plan's job); the task's state says the rest.
    const result = Promise.withResolvers<R>();
    result.promise.catch(() => undefined);
    const body = async (t: TaskContext): Promise<R> => {
      try {
        const r = await fn(t);
        result.resolve(r);
        return r;
      } catch (err) {
        result.reject(err);
        throw err;
      }
    };
    // Not tracked: close() records running tasks aborted without waiting for `fn`.
    this.#run(entry, run, body).catch(() => {});
    return { ...info, result: result.promise };
  }

  get(id: string): TaskInfo | undefined {
    const entry = isTaskId(id) ? this.#entries.get(id) : undefined;
    return entry && { ...entry.info };
  }

  /** Newest first. */
  list(filter: TaskFilter = {}): TaskInfo[] {
    const out: TaskInfo[] = [];
    for (const { info } of this.#entries.values()) {
      if (filter.running !== undefined && filter.running !== (info.state === "running")) continue;
      if (filter.store !== undefined && info.store !== filter.store) continue;
      if (filter.type !== undefined && info.type !== filter.type) continue;
      if (filter.authId !== undefined && info.authId !== filter.authId) continue;
      if (filter.since !== undefined && info.startTime < filter.since) continue;
      out.push({ ...info });
    }
    out.sort(newestFirst);
    return filter.limit === undefined ? out : out.slice(0, Math.max(0, filter.limit));
  }

  /** Lines `offset`… of the log (0-based); `done` once the task ended and no line is left. */
  async readLog(id: string, opts: { offset?: number; limit?: number } = {}): Promise<{ lines: string[]; next: number; done: boolean }> {
    const entry = this.#entry(id);
    const offset = opts.offset ?? 0;
    const limit = opts.limit ?? Infinity;
    if (!Number.isInteger(offset) || offset < 0) throw new GordeError("usage", `The log offset ${offset} is not a whole number of at least 0.`);
    if (limit !== Infinity && (!Number.isInteger(limit) || limit < 0)) {
      throw new GordeError("usage", `The log limit ${limit} is not a whole number of at least 0.`);
    }
    // Read the state before the file: the last line is written before the state changes.
    const finished = entry.info.state !== "running";
    if (entry.run !== undefined) await entry.run.log.flushed();
    let text: string;
    try {
      text = await fsp.readFile(this.#file(id, ".log"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new GordeError("io", `Cannot read the log of task ${id}: ${(err as Error).message}`, { cause: err });
      }
      text = "";
    }
    const all = text === "" ? [] : text.split("\n");
    if (all.at(-1) === "") all.pop();
    const lines = all.slice(offset, offset + limit);
    const next = offset + lines.length;
    return { lines, next, done: finished && next >= all.length };
  }

  /** Live events of a task; a finished task sends its end event right after this returns. */
  subscribe(id: string, listener: (ev: TaskEvent) => void): () => void {
    const entry = this.#entry(id);
    const run = entry.run;
    if (run !== undefined) {
      run.listeners.add(listener);
      return () => run.listeners.delete(listener);
    }
    let active = true;
    if (entry.info.state !== "running") {
      const task = { ...entry.info };
      queueMicrotask(() => {
        if (active) deliver(listener, { type: "end", task });
      });
    }
    return () => {
      active = false;
    };
  }

  /**
   * The task's log from its first line, then its live events to its end: a client that
   * follows a task it has just started misses none of the lines written before it came,
   * and gets none twice. Lines logged while the log is read are held back until then. One
   * that comes late gets the progress last reported after the log, unless newer is held.
   */
  follow(id: string, listener: (ev: TaskEvent) => void): () => void {
    let replayed = false;
    let stopped = false;
    const held: TaskEvent[] = [];
    const unsubscribe = this.subscribe(id, (ev) => (replayed ? listener(ev) : void held.push(ev)));
    const replay = (lines: string[]): void => {
      if (stopped) return;
      lines.forEach((line, n) => deliver(listener, { type: "log", line, n }));
      const last = this.#entries.get(id)?.run?.progress;
      if (last && !held.some((ev) => ev.type === "progress")) deliver(listener, { type: "progress", progress: last });
      for (const ev of held) if (!(ev.type === "log" && ev.n !== undefined && ev.n < lines.length)) deliver(listener, ev);
      replayed = true;
    };
    this.readLog(id).then(
      (log) => replay(log.lines),
      // An unreadable log: the live events still come.
      () => replay([]),
    );
    return () => {
      stopped = true;
      unsubscribe();
    };
  }

  wait(id: string): Promise<TaskInfo> {
    try {
      const entry = this.#entry(id);
      return entry.run?.done.promise ?? Promise.resolve({ ...entry.info });
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /** Asks a running task to stop; it ends "aborted" once its function returns. */
  abort(id: string): boolean {
    const run = isTaskId(id) ? this.#entries.get(id)?.run : undefined;
    if (run === undefined || run.ending) return false;
    if (!run.controller.signal.aborted) run.controller.abort(new DOMException("The task was aborted.", "AbortError"));
    return true;
  }

  /** Aborts the running tasks and records them aborted without waiting for them to return. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const reason = new DOMException("The server is shutting down.", "AbortError");
      const ends: Promise<void>[] = [];
      for (const entry of this.#entries.values()) {
        if (entry.run === undefined) continue;
        entry.run.controller.abort(reason);
        ends.push(this.#finish(entry, entry.run, "aborted", { error: reason.message }));
      }
      await Promise.all(ends);
      while (this.#background.size > 0) await Promise.all(this.#background);
    })();
    return this.#closing;
  }

  async #run(entry: Entry, run: Running, fn: (t: TaskContext) => Promise<unknown>): Promise<void> {
    // A task that cannot be recorded does not run: nobody could follow or audit it.
    try {
      await this.#writeStatus(run, entry.info);
      await run.log.open();
    } catch (err) {
      await this.#finish(entry, run, "failed", { error: `cannot record the task: ${messageOf(err)}` });
      return;
    }
    if (run.ending) {
      // close() ended it while the log was opening: flush its last line, release the file.
      await run.log.close();
      return;
    }
    const signal = run.controller.signal;
    if (signal.aborted) {
      await this.#finish(entry, run, "aborted", { error: messageOf(signal.reason) });
      return;
    }
    const ctx: TaskContext = {
      id: entry.info.id,
      signal,
      log: (text) => {
        if (!run.ending) this.#log(run, text);
      },
      progress: (p) => {
        if (run.ending) return;
        run.progress = p;
        emit(run, { type: "progress", progress: p });
      },
    };
    let outcome: { ok: true; result: unknown } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, result: await fn(ctx) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    // Whatever fn did, an abort that was asked for is what the task's end says.
    if (signal.aborted) await this.#finish(entry, run, "aborted", { error: messageOf(signal.reason) });
    else if (outcome.ok) await this.#finish(entry, run, "ok", { result: outcome.result });
    else await this.#finish(entry, run, "failed", { error: messageOf(outcome.error), code: outcome.error instanceof GordeError ? outcome.error.code : undefined });
  }

  async #finish(entry: Entry, run: Running, state: Exclude<TaskState, "running">, end: { error?: string; code?: string; result?: unknown }): Promise<void> {
    if (run.ending) return;
    run.ending = true;
    const info: TaskInfo = { ...entry.info, state, endTime: Date.now() };
    if (end.error !== undefined) info.error = end.error;
    if (end.code !== undefined) info.code = end.code;
    if (end.result !== undefined) {
      // Stored as JSON, so the live result is the one a restarted server reads back.
      try {
        const json = JSON.stringify(end.result);
        if (json !== undefined) info.result = JSON.parse(json) as unknown;
      } catch (err) {
        this.#log(run, `the result could not be recorded: ${messageOf(err)}`);
      }
    }
    this.#log(run, endLine(info));
    // A failing disk must not leave the task running in memory; on restart the status
    // file still says "running" and the task is marked interrupted then.
    await run.log.close().catch(() => {});
    await this.#writeStatus(run, info).catch(() => {});
    entry.info = info;
    delete entry.run;
    LIVE.delete(info.id);
    emit(run, { type: "end", task: { ...info } });
    run.listeners.clear();
    run.done.resolve({ ...info });
    this.#track(this.#prune());
  }

  #log(run: Running, text: string): void {
    const time = new Date().toISOString();
    for (const part of text.split(/\r?\n/)) {
      const line = `${time} ${part}`;
      run.log.write(`${line}\n`);
      emit(run, { type: "log", line, n: run.lines++ });
    }
  }

  #writeStatus(run: Running, info: TaskInfo): Promise<void> {
    const write = run.status.then(() => writeAtomic(this.#file(info.id, ".json"), `${JSON.stringify(info)}\n`));
    run.status = write.catch(() => {});
    return write;
  }

  #entry(id: string): Entry {
    parseTaskId(id);
    const entry = this.#entries.get(id);
    if (entry === undefined) throw new GordeError("not-found", `There is no task ${id}.`);
    return entry;
  }

  #file(id: string, ext: ".json" | ".log"): string {
    return path.join(this.dir, id + ext);
  }

  /** Resolves once the background work started so far (pruning old tasks) is done. */
  async idle(): Promise<void> {
    while (this.#background.size > 0) await Promise.all(this.#background);
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch(() => {}).finally(() => this.#background.delete(tracked));
    this.#background.add(tracked);
  }

  /** Removes the oldest finished tasks beyond `keep`, status file first. */
  async #prune(): Promise<void> {
    const finished = [...this.#entries.values()].filter((e) => e.info.state !== "running").map((e) => e.info);
    if (finished.length <= this.#keep) return;
    finished.sort(newestFirst);
    const doomed = finished.slice(this.#keep);
    for (const info of doomed) this.#entries.delete(info.id);
    for (const info of doomed) {
      await fsp.rm(this.#file(info.id, ".json"), { force: true }).catch(() => {});
      await fsp.rm(this.#file(info.id, ".log"), { force: true }).catch(() => {});
    }
  }

  async #load(): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      throw new GordeError("io", `Cannot read the task directory ${this.dir}: ${(err as Error).message}`, { cause: err });
    }
    const ids = new Set(names.filter((n) => n.endsWith(".json") && isTaskId(n.slice(0, -5))).map((n) => n.slice(0, -5)));
    for (const name of names) {
      // Leftovers of a crash: a temp status file, or a log whose status was pruned.
      const orphanLog = name.endsWith(".log") && isTaskId(name.slice(0, -4)) && !ids.has(name.slice(0, -4));
      if (orphanLog || /^UPID-[^/]*\.json\.tmp-/.test(name)) await fsp.rm(path.join(this.dir, name), { force: true });
    }
    const list = [...ids];
    for (let i = 0; i < list.length; i += 64) {
      const infos = await Promise.all(list.slice(i, i + 64).map((id) => this.#loadOne(id)));
      for (const info of infos) this.#entries.set(info.id, { info });
    }
  }

  async #loadOne(id: string): Promise<TaskInfo> {
    const file = this.#file(id, ".json");
    let info: TaskInfo;
    try {
      const parsed = StatusSchema.parse(JSON.parse(await fsp.readFile(file, "utf8")));
      if (parsed.id !== id) throw new Error("the id inside does not match the file name");
      info = parsed;
    } catch {
      const parts = parseTaskId(id);
      info = { id, type: parts.type, authId: "", startTime: parts.startTime, state: "failed", endTime: parts.startTime, pid: parts.pid };
      info.error = "the task's status file was unreadable";
      await writeAtomic(file, `${JSON.stringify(info)}\n`).catch(() => {});
      return info;
    }
    if (info.state !== "running" || (info.pid === process.pid && LIVE.has(id))) return info;

    const log = this.#file(id, ".log");
    const mtime = await fsp.stat(log).then((s) => s.mtimeMs, () => info.startTime);
    info = { ...info, state: "failed", endTime: Math.max(Math.floor(mtime), info.startTime), error: INTERRUPTED };
    await fsp.appendFile(log, `${new Date().toISOString()} ${endLine(info)}\n`).catch(() => {});
    await writeAtomic(file, `${JSON.stringify(info)}\n`).catch(() => {});
    return info;
  }
}

/** The log's last line, as PBS writes it. */
function endLine(info: TaskInfo): string {
  if (info.state === "ok") return "TASK OK";
  if (info.state === "aborted") return `TASK ABORTED: ${info.error ?? "aborted"}`;
  return `TASK ERROR: ${info.error ?? "failed"}`;
}

function newestFirst(a: TaskInfo, b: TaskInfo): number {
  return b.startTime - a.startTime || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === "string" ? err : String(err);
}

function emit(run: Running, ev: TaskEvent): void {
  for (const listener of [...run.listeners]) deliver(listener, ev);
}

/** A listener that throws (a client gone away) must not break the task. */
function deliver(listener: (ev: TaskEvent) => void, ev: TaskEvent): void {
  try {
    listener(ev);
  } catch {
    // ignored on purpose
  }
}

/**
 * An append-only log written in the background, in order: `write` never blocks the
 * task, and readers wait for `flushed` to see every line written before they asked.
 */
class LogFile {
  readonly file: string;
  #fh: FileHandle | undefined;
  #pending: string[] = [];
  #flushing: Promise<void> | undefined;

  constructor(file: string) {
    this.file = file;
  }

  async open(): Promise<void> {
    this.#fh = await fsp.open(this.file, "a", 0o644);
    this.#kick();
  }

  write(text: string): void {
    this.#pending.push(text);
    this.#kick();
  }

  async flushed(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
  }

  async close(): Promise<void> {
    await this.flushed();
    const fh = this.#fh;
    this.#fh = undefined;
    if (fh === undefined) return;
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  #kick(): void {
    if (this.#flushing === undefined && this.#fh !== undefined && this.#pending.length > 0) this.#flushing = this.#drain(this.#fh);
  }

  async #drain(fh: FileHandle): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const chunk = this.#pending.join("");
        this.#pending = [];
        await fh.write(chunk);
      }
    } catch {
      this.#pending = []; // a log that cannot be written loses lines, the task goes on
    } finally {
      this.#flushing = undefined;
    }
  }
}

function writeAtomic(file: string, text: string): Promise<void> {
  return writeFileAtomic(file, text);
}
