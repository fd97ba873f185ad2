import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { INTERRUPTED, type TaskContext, type TaskEvent, type TaskInfo, TaskManager, formatTaskId, isTaskId, parseTaskId } from "./tasks.ts";

const dirs: string[] = [];
async function taskDir(): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "gorde-tasks-"));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await fsp.rm(dir, { recursive: true, force: true });
});

const META = { type: "verify", authId: "admin@gorde", store: "main" };
const LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

function text(lines: string[]): string[] {
  return lines.map((l) => {
    assert.match(l, LINE);
    return l.replace(LINE, "");
  });
}

function statusOf(dir: string, id: string): TaskInfo {
  return JSON.parse(fs.readFileSync(path.join(dir, `${id}.json`), "utf8")) as TaskInfo;
}

/** A task function that waits until it is released or aborted. */
function gate(): { fn: (t: TaskContext) => Promise<unknown>; release: (v?: unknown) => void; started: Promise<TaskContext> } {
  const started = Promise.withResolvers<TaskContext>();
  const released = Promise.withResolvers<unknown>();
  return {
    started: started.promise,
    release: released.resolve,
    fn: async (t) => {
      started.resolve(t);
      const aborted = new Promise<never>((_, reject) => t.signal.addEventListener("abort", () => reject(t.signal.reason as Error)));
      return await Promise.race([released.promise, aborted]);
    },
  };
}

void describe("task ids", () => {
  void it("round-trip, sort by start time and carry the type", () => {
    const a = formatTaskId({ startTime: 1_700_000_000_000, pid: 4242, counter: 7, type: "garbage_collection" });
    const b = formatTaskId({ startTime: 1_700_000_000_001, pid: 1, counter: 0, type: "backup" });
    assert.equal(a, "UPID-018bcfe56800-00001092-00000007-garbage_collection");
    assert.deepEqual(parseTaskId(a), { startTime: 1_700_000_000_000, pid: 4242, counter: 7, type: "garbage_collection" });
    assert.ok(a < b);
    assert.equal(encodeURIComponent(a), a);
  });

  void it("are validated strictly", () => {
    const good = "UPID-018bcfe56800-00001092-00000007-verify";
    assert.ok(isTaskId(good));
    for (const bad of [
      "",
      "../../etc/passwd",
      `${good}/../x`,
      `${good}.json`,
      "UPID-018bcfe56800-00001092-00000007-",
      "UPID-018bcfe56800-00001092-00000007-a.b",
      "UPID-018BCFE56800-00001092-00000007-verify",
      "UPID-18bcfe56800-00001092-00000007-verify",
      `UPID-018bcfe56800-00001092-00000007-${"x".repeat(65)}`,
      `${good}\n`,
    ]) {
      assert.equal(isTaskId(bad), false, bad);
      assert.throws(() => parseTaskId(bad), (e) => e instanceof GordeError && e.code === "usage");
    }
    assert.throws(() => formatTaskId({ startTime: 1, pid: 1, counter: 1, type: "a/b" }), (e) => e instanceof GordeError && e.code === "usage");
  });
});

void describe("TaskManager", () => {
  void it("records an ok task with its result and log", async () => {
    const dir = await taskDir();
    const tm = await TaskManager.open(dir);
    const info = tm.start({ ...META, target: "vm/100" }, async (t) => {
      t.log("first");
      await new Promise((r) => setTimeout(r, 5));
      t.log("second\nthird");
      return { checked: 3 };
    });
    assert.ok(isTaskId(info.id));
    assert.equal(parseTaskId(info.id).type, "verify");
    assert.equal(info.state, "running");
    assert.equal(info.pid, process.pid);
    assert.equal(tm.get(info.id)?.state, "running");

    const done = await tm.wait(info.id);
    assert.equal(done.state, "ok");
    assert.deepEqual(done.result, { checked: 3 });
    assert.equal(done.error, undefined);
    assert.ok(done.endTime! >= done.startTime);
    assert.deepEqual(statusOf(dir, info.id), done);
    assert.deepEqual(tm.get(info.id), done);

    const log = await tm.readLog(info.id);
    assert.deepEqual(text(log.lines), ["first", "second", "third", "TASK OK"]);
    assert.equal(log.next, 4);
    assert.equal(log.done, true);
    await tm.close();
  });

  void it("records a failed task with the error's message", async () => {
    const dir = await taskDir();
    const tm = await TaskManager.open(dir);
    const { id } = tm.start(META, (t) => {
      t.log("looking");
      return Promise.reject(new GordeError("corrupt", "Chunk 0011 fails its digest."));
    });
    const done = await tm.wait(id);
    assert.equal(done.state, "failed");
    assert.equal(done.error, "Chunk 0011 fails its digest.");
    assert.equal(statusOf(dir, id).state, "failed");
    assert.deepEqual(text((await tm.readLog(id)).lines), ["looking", "TASK ERROR: Chunk 0011 fails its digest."]);
    await tm.close();
  });

  void it("aborts a running task", async () => {
    const dir = await taskDir();
    const tm = await TaskManager.open(dir);
    const g = gate();
    const { id } = tm.start(META, g.fn);
    const t = await g.started;
    assert.equal(t.id, id);
    assert.equal(tm.abort(id), true);
    assert.equal(t.signal.aborted, true);
    const done = await tm.wait(id);
    assert.equal(done.state, "aborted");
    assert.equal(done.error, "The task was aborted.");
    assert.equal(statusOf(dir, id).state, "aborted");
    assert.equal(tm.abort(id), false, "already ended");
    assert.equal(tm.abort("UPID-000000000000-00000000-00000000-none"), false);
    assert.equal(tm.abort("../x"), false);
    await tm.close();
  });

  void it("reads the log back with offsets, while running and after", async () => {
    const dir = await taskDir();
    const tm = await TaskManager.open(dir);
    const g = gate();
    const { id } = tm.start(META, g.fn);
    const t = await g.started;
    for (let i = 0; i < 10; i++) t.log(`line ${i}`);

    const a = await tm.readLog(id, { limit: 4 });
    assert.deepEqual(text(a.lines), ["line 0", "line 1", "line 2", "line 3"]);
    assert.deepEqual([a.next, a.done], [4, false]);
    const b = await tm.readLog(id, { offset: a.next });
    assert.deepEqual(text(b.lines), ["line 4", "line 5", "line 6", "line 7", "line 8", "line 9"]);
    assert.deepEqual([b.next, b.done], [10, false], "not done while running");

    g.release("fine");
    await tm.wait(id);
    const c = await tm.readLog(id, { offset: b.next });
    assert.deepEqual(text(c.lines), ["TASK OK"]);
    assert.deepEqual([c.next, c.done], [11, true]);
    const d = await tm.readLog(id, { offset: 100 });
    assert.deepEqual(d, { lines: [], next: 100, done: true });
    const e = await tm.readLog(id, { offset: 2, limit: 0 });
    assert.deepEqual([e.lines, e.next, e.done], [[], 2, false]);

    const raw = fs.readFileSync(path.join(dir, `${id}.log`), "utf8").split("\n");
    assert.equal(raw.length, 12);
    assert.equal(raw.at(-1), "");

    await assert.rejects(tm.readLog("../../etc/passwd"), (err) => err instanceof GordeError && err.code === "usage");
    await assert.rejects(tm.readLog("UPID-000000000000-00000000-00000000-none"), (err) => err instanceof GordeError && err.code === "not-found");
    await assert.rejects(tm.readLog(id, { offset: -1 }), (err) => err instanceof GordeError && err.code === "usage");
    await assert.rejects(tm.wait("nope"), (err) => err instanceof GordeError && err.code === "usage");

    // A reopened manager reads the same log.
    await tm.close();
    const again = await TaskManager.open(dir);
    assert.deepEqual(text((await again.readLog(id, { offset: 9 })).lines), ["line 9", "TASK OK"]);
    assert.equal(again.get(id)?.result, "fine");
    await again.close();
  });

  void it("follow replays the lines logged before it came, then the live events, each once", async () => {
    const tm = await TaskManager.open(await taskDir());
    const g = gate();
    const { id } = tm.start(META, g.fn);
    const t = await g.started;
    for (let i = 0; i < 50; i++) t.log(`before ${i}`);
    const events: TaskEvent[] = [];
    const ended = Promise.withResolvers<void>();
    tm.follow(id, (ev) => {
      events.push(ev);
      if (ev.type === "end") ended.resolve();
    });
    // Logged while the log file is being read: held back, then sent once, in order.
    for (let i = 0; i < 50; i++) t.log(`during ${i}`);
    await new Promise((r) => setTimeout(r, 20));
    t.log("after");
    g.release(1);
    await ended.promise;
    const lines = events.flatMap((ev) => (ev.type === "log" ? [ev.line.replace(LINE, "")] : []));
    const want = [...Array.from({ length: 50 }, (_, i) => `before ${i}`), ...Array.from({ length: 50 }, (_, i) => `during ${i}`), "after", "TASK OK"];
    assert.deepEqual(lines, want);
    assert.equal(events.at(-1)?.type, "end");

    // A finished task: its whole log, then its end.
    const late: TaskEvent[] = [];
    const lateEnd = Promise.withResolvers<void>();
    tm.follow(id, (ev) => {
      late.push(ev);
      if (ev.type === "end") lateEnd.resolve();
    });
    await lateEnd.promise;
    assert.deepEqual(late.flatMap((ev) => (ev.type === "log" ? [ev.line.replace(LINE, "")] : [])), want);
    await tm.close();
  });

  void it("follow gives a late follower the progress last reported, after the log", async () => {
    const tm = await TaskManager.open(await taskDir());
    const g = gate();
    const { id } = tm.start(META, g.fn);
    const t = await g.started;
    t.log("reading");
    t.progress({ done: 1, total: 4 });
    t.progress({ done: 3, total: 4, item: "root.tree" });
    const events: TaskEvent[] = [];
    const ended = Promise.withResolvers<void>();
    const replayed = Promise.withResolvers<void>();
    tm.follow(id, (ev) => {
      events.push(ev);
      if (ev.type === "progress") replayed.resolve();
      if (ev.type === "end") ended.resolve();
    });
    await replayed.promise;
    t.progress({ done: 4, total: 4 });
    g.release(1);
    await ended.promise;
    assert.deepEqual(
      events.map((ev) => (ev.type === "log" ? "log" : ev.type === "progress" ? ev.progress : "end")),
      ["log", { done: 3, total: 4, item: "root.tree" }, { done: 4, total: 4 }, "log", "end"],
    );
    await tm.close();
  });

  void it("streams log, progress and end in order", async () => {
    const tm = await TaskManager.open(await taskDir());
    const g = gate();
    const { id } = tm.start(META, g.fn);
    const t = await g.started;
    const events: TaskEvent[] = [];
    const late: TaskEvent[] = [];
    const unsubscribe = tm.subscribe(id, (ev) => events.push(ev));
    const unsubscribeLate = tm.subscribe(id, (ev) => late.push(ev));
    tm.subscribe(id, () => {
      throw new Error("a listener that breaks");
    });
    t.log("one");
    t.progress({ done: 1, total: 2 });
    t.log("two");
    unsubscribeLate();
    t.progress({ done: 2, total: 2 });
    g.release(42);
    const done = await tm.wait(id);
    unsubscribe();

    const shape = events.map((ev) =>
      ev.type === "log" ? `log ${ev.line.replace(LINE, "")}` : ev.type === "progress" ? `progress ${JSON.stringify(ev.progress)}` : `end ${ev.task.state}`,
    );
    assert.deepEqual(shape, ['log one', 'progress {"done":1,"total":2}', "log two", 'progress {"done":2,"total":2}', "log TASK OK", "end ok"]);
    assert.deepEqual(events.at(-1), { type: "end", task: done });
    assert.equal(late.length, 3);
    // Logged lines and streamed lines are the same text.
    const logged = (await tm.readLog(id)).lines;
    assert.deepEqual(
      events.flatMap((ev) => (ev.type === "log" ? [ev.line] : [])),
      logged,
    );

    // A finished task sends its end event right after subscribe returns.
    const after: TaskEvent[] = [];
    tm.subscribe(id, (ev) => after.push(ev));
    assert.equal(after.length, 0);
    await Promise.resolve();
    assert.deepEqual(after, [{ type: "end", task: done }]);
    const never: TaskEvent[] = [];
    tm.subscribe(id, (ev) => never.push(ev))();
    await Promise.resolve();
    assert.deepEqual(never, []);
    assert.throws(() => tm.subscribe("UPID-000000000000-00000000-00000000-none", () => {}), (e) => e instanceof GordeError && e.code === "not-found");
    await tm.close();
  });

  void it("marks a task of a dead process interrupted on reopen", async () => {
    const dir = await taskDir();
    const otherPid = process.pid === 1 ? 2 : process.pid - 1;
    const startTime = Date.now() - 60_000;
    const id = formatTaskId({ startTime, pid: otherPid, counter: 1, type: "backup" });
    const stale: TaskInfo = { id, type: "backup", authId: "node@gorde", store: "main", startTime, state: "running", pid: otherPid };
    fs.writeFileSync(path.join(dir, `${id}.json`), JSON.stringify(stale));
    fs.writeFileSync(path.join(dir, `${id}.log`), `${new Date(startTime).toISOString()} reading disk\n`);
    // Our own pid but not running in this process: a restarted server that reused the pid.
    const own = formatTaskId({ startTime: startTime + 1, pid: process.pid, counter: 999_999, type: "gc" });
    fs.writeFileSync(path.join(dir, `${own}.json`), JSON.stringify({ ...stale, id: own, type: "gc", pid: process.pid }));
    // A status file that cannot be read is not kept running either.
    const broken = formatTaskId({ startTime: startTime + 2, pid: otherPid, counter: 2, type: "verify" });
    fs.writeFileSync(path.join(dir, `${broken}.json`), "{\"id\":");
    // Crash leftovers: a temp status file and a log without status.
    fs.writeFileSync(path.join(dir, `${id}.json.tmp-1-abcd`), "{}");
    const orphan = formatTaskId({ startTime, pid: otherPid, counter: 3, type: "prune" });
    fs.writeFileSync(path.join(dir, `${orphan}.log`), "x\n");
    fs.writeFileSync(path.join(dir, "README"), "not a task\n");

    const tm = await TaskManager.open(dir);
    const got = tm.get(id)!;
    assert.equal(got.state, "failed");
    assert.equal(got.error, INTERRUPTED);
    assert.ok(got.endTime! >= startTime);
    assert.deepEqual(statusOf(dir, id), got);
    const log = await tm.readLog(id);
    assert.deepEqual(text(log.lines), ["reading disk", `TASK ERROR: ${INTERRUPTED}`]);
    assert.equal(log.done, true);
    assert.equal(tm.get(own)?.state, "failed");
    assert.equal(tm.get(broken)?.state, "failed");
    assert.deepEqual(tm.list({ running: true }), []);
    assert.deepEqual(await tm.wait(id), got);
    assert.deepEqual(fs.readdirSync(dir).sort(), ["README", `${broken}.json`, `${id}.json`, `${id}.log`, `${own}.json`, `${own}.log`].sort());
    assert.deepEqual(text((await tm.readLog(own)).lines), [`TASK ERROR: ${INTERRUPTED}`]);
    await tm.close();
  });

  void it("lists newest first with filters", async () => {
    const tm = await TaskManager.open(await taskDir());
    const quick = (meta: typeof META) => tm.wait(tm.start(meta, () => Promise.resolve()).id);
    // Started in the same millisecond or not: ids order them (their counter).
    const a = await quick({ ...META, store: "one" });
    const b = await quick({ ...META, type: "gc", store: "two" });
    const g = gate();
    const c = tm.start({ ...META, store: "one", authId: "node@gorde" }, g.fn);
    await g.started;

    const ids = (list: TaskInfo[]) => list.map((t) => t.id);
    assert.deepEqual(ids(tm.list()), [c.id, b.id, a.id]);
    assert.deepEqual(ids(tm.list({ running: true })), [c.id]);
    assert.deepEqual(ids(tm.list({ running: false })), [b.id, a.id]);
    assert.deepEqual(ids(tm.list({ store: "one" })), [c.id, a.id]);
    assert.deepEqual(ids(tm.list({ type: "gc" })), [b.id]);
    assert.deepEqual(ids(tm.list({ authId: "node@gorde" })), [c.id]);
    assert.deepEqual(ids(tm.list({ since: b.startTime })), [c.id, b.id]);
    assert.deepEqual(ids(tm.list({ limit: 2 })), [c.id, b.id]);
    assert.deepEqual(ids(tm.list({ store: "one", running: false, limit: 5 })), [a.id]);

    // Callers get copies.
    tm.list()[0]!.state = "ok";
    assert.equal(tm.get(c.id)?.state, "running");

    // close() aborts what still runs without waiting for it.
    await tm.close();
    const closed = tm.get(c.id)!;
    assert.equal(closed.state, "aborted");
    assert.equal(closed.error, "The server is shutting down.");
    assert.equal(statusOf(tm.dir, c.id).state, "aborted");
    assert.equal((await tm.wait(c.id)).state, "aborted");
    assert.throws(() => tm.start(META, () => Promise.resolve()), (e) => e instanceof GordeError && e.code === "usage");
  });

  void it("keeps at most `keep` finished tasks", async () => {
    const dir = await taskDir();
    let tm = await TaskManager.open(dir, { keep: 3 });
    const g = gate();
    const running = tm.start({ ...META, type: "backup" }, g.fn);
    await g.started;
    const finished: string[] = [];
    for (let i = 0; i < 5; i++) {
      const info = await tm.wait(tm.start(META, (t) => Promise.resolve(t.log(`task ${i}`))).id);
      finished.push(info.id);
    }
    await tm.idle(); // pruning runs after the end
    const ids = tm.list().map((t) => t.id);
    assert.deepEqual(ids, [...finished.slice(2).reverse(), running.id]);
    for (const id of finished.slice(0, 2)) {
      assert.equal(tm.get(id), undefined);
      assert.equal(fs.existsSync(path.join(dir, `${id}.json`)), false);
      assert.equal(fs.existsSync(path.join(dir, `${id}.log`)), false);
    }
    g.release();
    await tm.wait(running.id);
    await tm.close();
    // Once ended, the long task is the oldest by start and goes first.
    assert.equal(tm.get(running.id), undefined);
    assert.equal(fs.readdirSync(dir).length, 6, "three tasks, two files each");

    // A smaller limit applies on open too.
    tm = await TaskManager.open(dir, { keep: 1 });
    assert.deepEqual(
      tm.list().map((t) => t.id),
      [finished[4]],
    );
    assert.equal(fs.readdirSync(dir).length, 2);
    await tm.close();
    await assert.rejects(TaskManager.open(dir, { keep: -1 }), (e) => e instanceof GordeError && e.code === "usage");
  });

  void it("gives unique ids to tasks started together", async () => {
    const tm = await TaskManager.open(await taskDir());
    const infos = Array.from({ length: 50 }, () => tm.start(META, () => Promise.resolve()));
    assert.equal(new Set(infos.map((i) => i.id)).size, 50);
    const sorted = infos.map((i) => i.id).sort();
    assert.deepEqual(sorted, infos.map((i) => i.id));
    await Promise.all(infos.map((i) => tm.wait(i.id)));
    assert.throws(() => tm.start({ ...META, type: "../x" }, () => Promise.resolve()), (e) => e instanceof GordeError && e.code === "usage");
    await tm.close();
  });
});
