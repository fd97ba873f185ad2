import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { parsePlan } from "../schedule/plan.ts";
import { type JobOutcome, RunSkipped, Scheduler } from "./scheduler.ts";
import { TaskHistory } from "./task-history.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-scheduler-"));
const T0 = Date.parse("2026-11-25T00:00:00Z");

const plan = (jobs: string) =>
  parsePlan(`version: 1\nguests:\n  100: { rpo: 26h }\njobs:\n${jobs}`, "plan", { now: new Date(T0), tz: "UTC" });

void describe("the scheduler (injected clock)", () => {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  void it("runs a job at each elapse, records each run with its bytes, and notifies", async () => {
    const history = TaskHistory.open(path.join(dir, "a.db"));
    let now = T0;
    const ran: number[] = [];
    const told: JobOutcome[] = [];
    const s = new Scheduler({
      plan: plan("  - { name: every10, type: backup, schedule: '*:*:0/10', guests: [100] }\n"),
      history,
      now: () => now,
      tz: "UTC",
      run: (job, ctx) => {
        ran.push(ctx.due);
        ctx.log(`backing up guest ${JSON.stringify(job.type === "backup" && job.guests)}`);
        return Promise.resolve({ bytes: 100, newBytes: ran.length === 1 ? 100 : 5, reusedBytes: ran.length === 1 ? 0 : 95 });
      },
      notify: (o) => void told.push(o),
    });
    for (; now < T0 + 35_000; now += 1000) {
      await s.tick();
      await s.idle();
    }
    assert.deepEqual(ran, [T0 + 10_000, T0 + 20_000, T0 + 30_000]);
    const runs = history.list({ job: "every10" });
    assert.deepEqual(runs.map((r) => r.result), ["ok", "ok", "ok"]);
    assert.equal(runs[0]!.newBytes, 5);
    assert.equal(runs.at(-1)!.newBytes, 100);
    assert.match(runs[0]!.log, /backing up guest \[100\]/);
    assert.match(runs[0]!.log, new RegExp(`^\\S+ due ${new Date(T0 + 30_000).toISOString()}$`, "m"), "the log names the elapse the run is for");
    assert.deepEqual(told.map((o) => o.result), ["ok", "ok", "ok"]);
    history.close();
  });

  void it("a job whose runs outlast its interval does not keep a later job waiting: the longest due goes first", async () => {
    const history = TaskHistory.open(path.join(dir, "fair.db"));
    let now = T0;
    const started: [string, number][] = [];
    const pending: { at: number; done: () => void }[] = [];
    const s = new Scheduler({
      plan: plan("  - { name: every10, type: backup, schedule: '*:*:0/10', guests: [100] }\n  - { name: drill10, type: drill, schedule: '*:*:5/10', guests: [100] }\n"),
      history,
      now: () => now,
      tz: "UTC",
      run: (job, ctx) => {
        started.push([job.name, ctx.due - T0]);
        // Each backup takes 15 s, longer than its interval (a full backup on a loaded node).
        if (job.name === "every10") return new Promise((resolve) => pending.push({ at: now + 15_000, done: () => resolve({}) }));
        return Promise.resolve({});
      },
    });
    for (; now <= T0 + 60_000; now += 1000) {
      for (const p of pending.filter((p) => p.at <= now)) {
        pending.splice(pending.indexOf(p), 1);
        p.done();
      }
      await new Promise((r) => setImmediate(r)); // a finished run leaves its slot
      await s.tick();
    }
    // every10 runs from 10 to 25: drill10, due at 15 since then, gets the slot at 25 before every10's run due at 20.
    assert.deepEqual(started.slice(0, 4), [["drill10", 5_000], ["every10", 10_000], ["drill10", 15_000], ["every10", 20_000]]);
    for (const p of pending) p.done();
    await s.idle();
    history.close();
  });

  void it("elapses that go by while a job still runs are not missed: one run right after covers them", async () => {
    const history = TaskHistory.open(path.join(dir, "long.db"));
    let now = T0;
    const started: number[] = [];
    let finish: (() => void) | undefined;
    const s = new Scheduler({
      plan: plan("  - { name: every10, type: backup, schedule: '*:*:0/10', guests: [100] }\n"),
      history,
      now: () => now,
      tz: "UTC",
      run: (_job, ctx) => {
        started.push(ctx.due - T0);
        // The first run takes 75 s: the elapses at 20 to 80 go by meanwhile, some more than a minute before it ends.
        return started.length === 1 ? new Promise((resolve) => (finish = () => resolve({}))) : Promise.resolve({});
      },
    });
    for (; now <= T0 + 86_000; now += 1000) {
      if (now === T0 + 85_000) finish!();
      await new Promise((r) => setImmediate(r));
      await s.tick();
    }
    await s.idle();
    assert.deepEqual(started, [10_000, 80_000], "one run, at 85, covers the elapses 20 to 80");
    assert.deepEqual(history.list({ job: "every10" }).map((r) => r.result), ["ok", "ok"], "none skipped as missed");
    history.close();
  });

  void it("records a failure and a skip, and never runs a job twice at once", async () => {
    const history = TaskHistory.open(path.join(dir, "b.db"));
    let now = T0 + 9_000;
    const load: { busy?: string } = {};
    let release!: () => void;
    let calls = 0;
    const s = new Scheduler({
      plan: plan("  - { name: flaky, type: gc, schedule: '*:*:0/10', window: '00:00-00:01' }\n"),
      history,
      now: () => now,
      tz: "UTC",
      busy: () => load.busy,
      run: () => {
        calls++;
        if (calls === 1) return Promise.reject(new Error("the datastore is full"));
        return new Promise((r) => (release = () => r({})));
      },
    });
    await s.tick(); // the job comes under the scheduler at 00:00:09
    now = T0 + 10_000;
    await s.tick();
    await s.idle();
    assert.equal(history.last("flaky")!.result, "failed");
    assert.equal(history.last("flaky")!.error, "the datastore is full");
    now = T0 + 20_000;
    await s.tick(); // starts the second run, which hangs
    now = T0 + 30_000;
    await s.tick(); // the job is still running: not started again
    assert.equal(calls, 2);
    release();
    await s.idle();
    // busy through the end of the window: waits, then is skipped with the reason
    load.busy = "I/O pressure 80% is above 30%";
    now = T0 + 40_000;
    await s.tick();
    now = T0 + 61_000;
    await s.tick();
    const last = history.last("flaky")!;
    assert.equal(last.result, "skipped");
    assert.match(last.error!, /window 00:00-00:01 closed before it could start \(I\/O pressure 80% is above 30%\)/);
    history.close();
  });

  void it("a run its runner cannot do is recorded and told as skipped, not failed", async () => {
    const history = TaskHistory.open(path.join(dir, "d.db"));
    let now = T0;
    const told: JobOutcome[] = [];
    const s = new Scheduler({
      plan: plan("  - { name: drill, type: drill, schedule: '*:*:0/10', guests: [100] }\n"),
      history,
      now: () => now,
      tz: "UTC",
      run: () => Promise.reject(new RunSkipped("no drill runner here")),
      notify: (o) => void told.push(o),
    });
    now = T0 + 10_000;
    await s.tick();
    await s.idle();
    assert.equal(history.last("drill")!.result, "skipped");
    assert.equal(history.last("drill")!.error, "no drill runner here");
    assert.deepEqual(told.map((o) => o.result), ["skipped"]);
    history.close();
  });

  void it("after a restart: a run cut off is failed, a missed one is taken with repeat-missed and skipped without", async () => {
    const file = path.join(dir, "c.db");
    const jobs = "  - { name: take, type: verify, schedule: hourly, repeat-missed: true }\n  - { name: drop, type: gc, schedule: hourly }\n";
    let now = T0;
    const first = TaskHistory.open(file);
    const s1 = new Scheduler({ plan: plan(jobs), history: first, now: () => now, tz: "UTC", maxParallel: 2, run: () => new Promise(() => undefined) });
    await s1.tick(); // the jobs come under the scheduler
    now = T0 + 3_600_000;
    await s1.tick(); // both start at 01:00 and never end: the process "dies"
    first.close();

    now = T0 + 5 * 3_600_000 + 600_000; // 05:10: the 02:00..05:00 runs were missed
    const history = TaskHistory.open(file);
    const ran: string[] = [];
    const s2 = new Scheduler({ plan: plan(jobs), history, now: () => now, tz: "UTC", run: (job) => (ran.push(job.name), Promise.resolve({})) });
    const cut = history.list().filter((r) => r.result === "failed");
    assert.equal(cut.length, 2);
    assert.match(cut[0]!.error!, /interrupted/);
    await s2.tick();
    await s2.idle();
    assert.deepEqual(ran, ["take"], "one run for all the missed elapses");
    assert.equal(history.last("drop")!.result, "skipped");
    assert.match(history.last("drop")!.error!, /missed at 2026-11-25T02:00:00Z/);
    await s2.tick();
    await s2.idle();
    assert.deepEqual(ran, ["take"], "nothing more is due before 06:00");
    history.close();
  });
});
