// The faults the partition tests inflict, each with what must follow it: a fault is made,
// what the cluster must do meanwhile is checked against docs/cluster.md's bounds, the fault
// is healed, and every HA guest must run again as one copy and stay so. A schedule is a
// seeded random sequence of faults, replayable from its seed.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { RETRY_MAX_MS } from "../../src/cluster/ha-timing.ts";
import { mulberry32 } from "../helpers.ts";
import { type ClusterLab, FENCE_BOUND_MS, GUESTS, NODES, type NodeName, RECOVERY_BOUND_MS, SERVER_PORT } from "./cluster-lab.ts";

export const FAULT_KINDS = ["witness-down", "witness-and-node-down", "node-link-down", "nodes-split", "agent-killed", "node-killed", "agent-stopped", "server-unreachable-failover"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  kind: FaultKind;
  /** the node the fault strikes, or the one that runs more guests when it strikes (nodes-split and witness-down strike no one node) */
  node: NodeName | "holder";
}

const IDS = Object.keys(GUESTS).map(Number);
const other = (n: NodeName): NodeName => (n === "node1" ? "node2" : "node1");
const fencedSaid = (n: NodeName): RegExp => new RegExp(`fencing: the cluster lease of ${n} was last renewed [\\d.]+ s ago; killing HA guests`);

export function describeFault(f: Fault): string {
  return f.kind === "witness-down" || f.kind === "nodes-split" ? f.kind : `${f.kind} ${f.node === "holder" ? "(the node holding more guests)" : f.node}`;
}

/** Waits until `re` shows in node `n`'s log; throws after `ms`. */
async function expectSaid(lab: ClusterLab, n: NodeName, re: RegExp, ms: number): Promise<void> {
  for (const deadline = Date.now() + ms; !re.test(lab.logOf(n)); await sleep(100)) {
    if (Date.now() > deadline) throw new Error(`${n} did not say ${re} within ${ms / 1000} s\n${await lab.diagnose()}`);
  }
}

/**
 * Makes the fault, checks what must happen meanwhile, heals it and checks that every HA guest
 * runs again as one copy and stays so. Answers a line of what was measured.
 */
export async function runFault(lab: ClusterLab, f: Fault): Promise<string> {
  try {
    return await faultAndHeal(lab, f);
  } catch (e) {
    // Healed for what follows: every link up, every process running.
    await lab.healAll().catch(() => undefined);
    throw e;
  }
}

async function faultAndHeal(lab: ClusterLab, f: Fault): Promise<string> {
  const where = await lab.expectRunning(`before ${describeFault(f)}`, RECOVERY_BOUND_MS);
  const count = (n: NodeName): number => IDS.filter((id) => where[id] === n).length;
  const x = f.node !== "holder" ? f.node : count("node2") > count("node1") ? "node2" : "node1";
  const y = other(x);
  const onX = IDS.filter((id) => where[id] === x);
  const onY = IDS.filter((id) => where[id] === y);
  const t0 = Date.now();
  const since = (): string => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  const striking = f.node === "holder" && f.kind !== "witness-down" && f.kind !== "nodes-split";
  let measured = striking ? `(${x}) ` : "";
  switch (f.kind) {
    case "witness-down": {
      await lab.stopServer();
      // Two members of three are a majority: the nodes renew their leases, nothing moves.
      await lab.expectSteady("the witness alone down: nothing moves", RECOVERY_BOUND_MS / 2);
      await lab.startServer();
      measured = "nothing moved";
      break;
    }
    case "witness-and-node-down": {
      await lab.stopServer();
      await lab.killWhole(x);
      const lost = Date.now();
      // y's member is alone: no majority, it stops its HA guests and says why.
      await lab.expectStopped(`${y} without quorum`, IDS, FENCE_BOUND_MS);
      measured += onY.length ? `${y} without quorum stopped its HA guests ${((Date.now() - lost) / 1000).toFixed(1)} s after the majority was lost` : `${y} without quorum ran no HA guest (${x}'s died with it)`;
      if (onY.length) await expectSaid(lab, y, fencedSaid(y), 5000);
      await lab.startServer();
      await lab.startNode(x);
      break;
    }
    case "node-link-down":
    case "agent-killed":
    case "node-killed":
    case "agent-stopped": {
      if (f.kind === "node-link-down") lab.net.linkDown(x);
      else if (f.kind === "agent-killed") await lab.killAgent(x);
      else if (f.kind === "node-killed") await lab.killWhole(x);
      else lab.stopAgent(x);
      await lab.expectStopped(`${x}'s guests fenced`, onX, FENCE_BOUND_MS);
      const fenced = since();
      // The survivor, with the witness a majority, takes x's guests from their backups.
      await lab.expectRunning(`${x}'s guests recovered on ${y}`, RECOVERY_BOUND_MS - (Date.now() - t0), Object.fromEntries(IDS.map((id) => [id, y])));
      measured += onX.length ? `${x}'s guests ${onX.join(", ")} fenced within ${fenced}, running on ${y} after ${since()}` : `${x} had no guests; nothing moved`;
      if (f.kind === "node-link-down") lab.net.linkUp(x);
      else if (f.kind === "agent-stopped") lab.continueAgent(x);
      else await lab.startNode(x);
      if (f.kind === "agent-killed" || f.kind === "node-killed") {
        for (const id of onX) await expectSaid(lab, x, new RegExp(`guest ${id} was recovered on node ${y} while this node was lost`), 30_000);
      }
      break;
    }
    case "nodes-split": {
      lab.net.split("node1", "node2");
      // Both still hear the witness: at most one side holds the etcd leader, the other's
      // lease lapses and its guests move; either way each guest runs as one copy again.
      await sleep(RECOVERY_BOUND_MS / 2);
      const kept = await lab.expectRunning("the nodes split: the guests run on one side", RECOVERY_BOUND_MS / 2);
      await lab.expectSteady("the nodes split", 3000);
      measured += `split: ${IDS.map((id) => `${id} on ${kept[id]}`).join(", ")}`;
      lab.net.unsplit("node1", "node2");
      break;
    }
    case "server-unreachable-failover": {
      lab.net.blockPort("witness", SERVER_PORT);
      await lab.killWhole(x);
      if (onX.length) {
        // The survivor cannot restore: the guests wait in `recovery`, saying why.
        // The bound, and the survivor's one connection attempt that runs into its 10 s deadline.
        const bound = RECOVERY_BOUND_MS + 15_000;
        const deadline = Date.now() + bound;
        for (;;) {
          const s = await lab.haStatus(y);
          const waiting = onX.every((id) => {
            const r = s?.find((v) => v.sid === `ct:${id}`);
            return r?.state === "recovery" && /recovery waits: .*(server|unreachable|connect|timed out|timeout)/i.test(r.reason ?? "");
          });
          if (waiting) break;
          if (Date.now() > deadline) throw new Error(`the guests of ${x} not in recovery with the reason within ${bound / 1000} s\n${await lab.diagnose()}`);
          await sleep(500);
        }
        for (const id of onX) assert.equal(lab.watcher.runningNow(id).length, 0, `guest ${id} runs nowhere while the server is unreachable`);
        measured += `${onX.join(", ")} in recovery after ${since()}`;
      }
      const unblocked = Date.now();
      lab.net.unblockPort("witness", SERVER_PORT);
      // A recovery that waited tries again within its back-off.
      await lab.expectRunning("recovered once the server answers", RETRY_MAX_MS + RECOVERY_BOUND_MS, Object.fromEntries(IDS.map((id) => [id, y])));
      if (onX.length) measured += `, running on ${y} ${((Date.now() - unblocked) / 1000).toFixed(1)} s after the server answered`;
      await lab.startNode(x);
      break;
    }
  }
  // Healed: every guest runs as one copy within the bound, and stays so (a node back starts nothing).
  await lab.expectRunning(`after ${describeFault(f)} healed`, RECOVERY_BOUND_MS);
  await lab.expectSteady(`after ${describeFault(f)} healed`, 3000);
  return `${describeFault(f)}: ${measured}`;
}

/** The schedule's generator: mulberry32, its seed mixed first (murmur3's finalizer), or seeds 1, 2, 3 would start alike. */
function random(seed: number): () => number {
  let a = Math.imul(seed ^ (seed >>> 16), 0x85ebca6b);
  a = Math.imul(a ^ (a >>> 13), 0xc2b2ae35);
  return mulberry32((a ^ (a >>> 16)) >>> 0);
}

export function schedule(seed: number, steps: number): Fault[] {
  const next = random(seed);
  // Three faults in four strike the node that holds more guests: a node with none has little to lose.
  return Array.from({ length: steps }, () => ({ kind: FAULT_KINDS[Math.floor(next() * FAULT_KINDS.length)]!, node: next() < 0.75 ? "holder" : NODES[Math.floor(next() * NODES.length)]! }));
}

/** Runs seed `seed`'s schedule; a failure names the seed and how to replay it. */
export async function runSchedule(lab: ClusterLab, seed: number, steps: number, log: (line: string) => void): Promise<void> {
  const faults = schedule(seed, steps);
  log(`seed ${seed}: ${faults.map(describeFault).join(" → ")}`);
  for (const [i, f] of faults.entries()) {
    try {
      log(`  ${i + 1}. ${await runFault(lab, f)}`);
    } catch (e) {
      throw new Error(`seed ${seed}, step ${i + 1} (${describeFault(f)}) failed (replay: npm run partitions -- --seed ${seed} --steps ${steps}): ${(e as Error).message}`);
    }
  }
}
