// Partition tests, as root: node1, node2 and the witness each in a network namespace of
// their own, joined by a bridge (net-lab.ts); links cut, processes killed or stopped. The
// history of every guest copy is taken from /proc (copy-watcher.ts) and checked at the end:
// never two copies of a guest at once. CI runs the named scenarios and three short seeded
// schedules; `npm run partitions` runs many more (run.ts).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { etcdAvailable } from "../../src/cluster/etcd-member.ts";
import { lxcAvailable } from "../../src/node/lxc.ts";
import { ClusterLab } from "./cluster-lab.ts";
import { type Fault, runFault, runSchedule } from "./faults.ts";
import { netnsAvailable } from "./net-lab.ts";

const etcd = etcdAvailable();
const lxc = lxcAvailable();
const netns = netnsAvailable();
const why = !netns.ok ? netns.why : !etcd.ok ? etcd.why : !lxc.ok ? lxc.why : undefined;
if (why) console.error(`\n*** SKIPPED: partition tests: ${why}. ***\n`);

const SCENARIOS: [string, Fault][] = [
  ["the witness alone down: nothing moves", { kind: "witness-down", node: "node1" }],
  ["the witness and node2 down: node1 has no quorum, stops its HA guests and says why", { kind: "witness-and-node-down", node: "node2" }],
  ["the two nodes cut from each other, each still seeing the witness: one side keeps each guest", { kind: "nodes-split", node: "node1" }],
  ["node1's agent SIGKILLed with its guests running: fenced in time, recovered on node2, the restarted agent starts nothing", { kind: "agent-killed", node: "node1" }],
  ["a failover while the backup server is unreachable: the guests wait in recovery with the reason, and recover when it answers", { kind: "server-unreachable-failover", node: "node2" }],
];
const CI_SEEDS = [1, 2, 3];
const CI_STEPS = 2;

void describe("partitions: never two copies of a guest, every HA guest back within the bound", { skip: why ?? false }, () => {
  let lab: ClusterLab;
  before(async () => {
    lab = await ClusterLab.start();
  });
  after(async () => {
    await lab?.close();
  });

  for (const [name, fault] of SCENARIOS) {
    void it(name, async () => {
      console.log(await runFault(lab, fault));
    });
  }
  for (const seed of CI_SEEDS) {
    void it(`seed ${seed} (replay: npm run partitions -- --seed ${seed} --steps ${CI_STEPS})`, async () => {
      await runSchedule(lab, seed, CI_STEPS, console.log);
    });
  }
  void it("never ran two copies of a guest at once", () => {
    lab.watcher.stop();
    assert.ok(lab.watcher.samples > 1000, `the copies were sampled (${lab.watcher.samples} samples)`);
    assert.ok(lab.watcher.copies.length >= 4, `copies came and went (${lab.watcher.copies.length})`);
    assert.deepEqual(lab.watcher.overlaps(), []);
  });
});
