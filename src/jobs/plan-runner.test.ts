// The plan runner's share of a cluster's plan, against a plan kept in memory (the etcd side
// is test/cluster.test.ts's): the first plan in becomes the cluster's, a node's own plan is
// kept aside when the cluster's replaces it, a pinned plan is refused and never pushed, and
// a restarted node knows its file is the cluster's copy.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { readLoad } from "../schedule/load.ts";
import { PlanRunner, type SharedPlan } from "./plan-runner.ts";
import type { JobClock } from "./scheduler.ts";

const plan = (job: string, pin = ""): string => `version: 1\nguests:\n  "101": { rpo: 1d${pin} }\njobs:\n  - { name: ${job}, type: backup, schedule: "02:00", guests: all }\n`;

/** A cluster's plan and each node's job clocks, kept in memory. */
class MemoryCluster {
  text: string | null = null;
  readonly clocks = new Map<string, Map<string, JobClock>>();

  member(node: string): SharedPlan {
    const clocks = (): Map<string, JobClock> => this.clocks.get(node) ?? this.clocks.set(node, new Map()).get(node)!;
    return {
      cluster: "lab",
      read: () => Promise.resolve(this.text),
      write: (text) => {
        this.text = text;
        return Promise.resolve();
      },
      create: (text) => {
        if (this.text !== null) return Promise.resolve(false);
        this.text = text;
        return Promise.resolve(true);
      },
      readClocks: () => Promise.resolve(new Map(clocks())),
      writeClock: (job, clock) => {
        clocks().set(job, clock);
        return Promise.resolve();
      },
    };
  }
}

void describe("the plan runner on a cluster", () => {
  const tmp = tempDir("gorde-plan-runner-");
  after(() => tmp.cleanup());
  const cluster = new MemoryCluster();
  let inCluster = false;
  const open = async (name: string, log: string[]): Promise<PlanRunner> => {
    const shared = (): SharedPlan | undefined => (inCluster ? cluster.member(name) : undefined);
    fs.mkdirSync(path.join(tmp.dir, name), { recursive: true });
    return PlanRunner.open({ planFile: path.join(tmp.dir, name, "plan.yaml"), historyFile: path.join(tmp.dir, name, "history.db"), host: name, kinds: ["backup"], runner: () => () => Promise.resolve({}), log: (l) => log.push(l), shared });
  };
  const until = async (ok: () => boolean): Promise<void> => {
    for (const deadline = Date.now() + 10_000; !ok() && Date.now() < deadline; ) await sleep(100);
  };

  void it("brings the first plan in, keeps a joining node's own aside, refuses pins; restarted, knows its copy and takes back its clocks", async () => {
    const log1: string[] = [];
    const log2: string[] = [];
    const node1 = await open("node1", log1);
    const node2 = await open("node2", log2);
    try {
      // Alone, each node applies its own plan; a pinned one is fine there.
      await node1.apply(plan("first"));
      await node2.apply(plan("second", ", node: node2"));
      assert.equal(node1.current().cluster, null);

      inCluster = true;
      await until(() => cluster.text !== null && node2.current().text === cluster.text);
      assert.equal(cluster.text, plan("first"), "node1's plan became the cluster's; node2's pinned one was not pushed");
      assert.deepEqual(node2.current(), { text: plan("first"), jobs: ["first"], cluster: "lab" });
      assert.equal(fs.readFileSync(path.join(tmp.dir, "node2", "plan.yaml.local"), "utf8"), plan("second", ", node: node2"), "node2's own plan is kept aside");
      await until(() => node1.current().cluster === "lab");
      assert.equal(node1.current().cluster, "lab");

      await assert.rejects(node1.apply(plan("pinned", ", node: node1")), /on cluster lab each guest is backed up by the node that owns it, so the plan may not tie guests to nodes: remove guests\.101\.node \(node1\)\./);
      assert.equal(cluster.text, plan("first"), "nothing changed");
      await node2.apply(plan("evening"));
      await until(() => node1.current().text === plan("evening"));
      assert.deepEqual(node1.current().jobs, ["evening"]);
      assert.ok(log1.some((l) => l === "the plan of cluster lab runs here: jobs evening scheduled here"), log1.join("\n"));
      // A cluster's plan this version cannot read is not used; the node goes on with its copy.
      cluster.text = "version: 2\n";
      await sleep(3500);
      assert.deepEqual(node1.current().jobs, ["evening"]);
      assert.ok(log1.some((l) => /the plan of cluster lab is not used here: /.test(l)), log1.join("\n"));
      cluster.text = plan("evening");
    } finally {
      await node1.close();
      await node2.close();
    }
    // Each node's clocks are copied to the cluster.
    const copied = cluster.clocks.get("node2")?.get("evening");
    assert.ok(copied && cluster.clocks.get("node1")?.get("evening"), "both nodes' clocks of job evening are in the cluster");
    // Restarted with its history lost, node2 knows its plan file is the cluster's copy (no
    // second .local) and takes its clock back from the cluster's copy.
    fs.rmSync(path.join(tmp.dir, "node2", "plan.yaml.local"));
    for (const f of fs.readdirSync(path.join(tmp.dir, "node2"))) if (f.startsWith("history.db")) fs.rmSync(path.join(tmp.dir, "node2", f));
    await sleep(50);
    const again = await open("node2", log2);
    try {
      assert.equal(again.current().cluster, "lab");
      await until(() => log2.some((l) => l.startsWith("job evening: this node's history knew it only since now; its clock is the cluster's copy")));
      assert.equal(again.history.clock("evening", Date.now()).since, copied.since, "the clock is the cluster's copy");
      cluster.text = plan("night");
      await until(() => again.current().text === plan("night"));
      assert.deepEqual(again.current().jobs, ["night"]);
      assert.equal(fs.existsSync(path.join(tmp.dir, "node2", "plan.yaml.local")), false);
    } finally {
      await again.close();
    }
  });
});

void describe("the plan runner on a busy host", () => {
  const tmp = tempDir("gorde-plan-load-");
  after(() => tmp.cleanup());
  const hasPressure = fs.existsSync("/proc/pressure/cpu");
  if (!hasPressure) console.error("SKIPPED: this kernel has no /proc/pressure (PSI); the busy-host test needs it.");

  void it("holds a due job while the host's real CPU pressure is above the plan's limit, and runs it under a limit the load is below", { skip: !hasPressure, timeout: 90_000 }, async () => {
    // Busy loops, two per CPU, that end by themselves after a minute whatever happens here.
    const burners = Array.from({ length: 2 * os.availableParallelism() }, () =>
      spawn(process.execPath, ["-e", "const end = Date.now() + 60000; while (Date.now() < end);"], { stdio: "ignore" }),
    );
    const runs: number[] = [];
    const log: string[] = [];
    const job = (limit: number): string =>
      `version: 1\nload: { max-cpu-pressure: ${limit}, max-load-per-cpu: 1000, max-io-pressure: 100 }\nguests:\n  "101": { rpo: 1d }\njobs:\n  - { name: often, type: backup, schedule: "*:*:0/2", guests: all }\n`;
    let runner: PlanRunner | undefined;
    try {
      const loaded = (): number => readLoad(os.availableParallelism()).cpuPressure ?? 0;
      for (const deadline = Date.now() + 30_000; loaded() < 30 && Date.now() < deadline; ) await sleep(250);
      assert.ok(loaded() >= 30, `CPU pressure rose to ${loaded()}% only`);
      runner = await PlanRunner.open({
        planFile: path.join(tmp.dir, "plan.yaml"),
        historyFile: path.join(tmp.dir, "history.db"),
        host: "node1",
        kinds: ["backup"],
        runner: () => () => {
          runs.push(Date.now());
          return Promise.resolve({});
        },
        log: (l) => log.push(l),
        tickMs: 100,
      });
      await runner.apply(job(10));
      // Two elapses of its schedule go by: it waits on the load, it does not run.
      await sleep(4500);
      assert.deepEqual(runs, [], `it ran at a CPU pressure of ${loaded()}%`);
      // The same plan with a limit the load is below: the job runs, still on the loaded host.
      await runner.apply(job(100));
      for (const deadline = Date.now() + 10_000; runs.length === 0 && Date.now() < deadline; ) await sleep(100);
      assert.ok(runs.length > 0, `it did not run under a limit of 100%: ${log.join("\n")}`);
    } finally {
      for (const b of burners) b.kill("SIGKILL");
      await runner?.close();
    }
  });
});
