// `npm run partitions`: seeded random fault schedules against one lab cluster, as root.
//   npm run partitions                       20 seeds (1–20), 4 faults each
//   npm run partitions -- --seeds 50 --steps 6
//   npm run partitions -- --seed 7 --steps 4  one schedule again, as a failure printed it
// Ends with the copies' check: never two copies of a guest at once.
import { parseArgs } from "node:util";
import { etcdAvailable } from "../../src/cluster/etcd-member.ts";
import { lxcAvailable } from "../../src/node/lxc.ts";
import { ClusterLab, RECOVERY_BOUND_MS } from "./cluster-lab.ts";
import { runSchedule } from "./faults.ts";
import { netnsAvailable } from "./net-lab.ts";

function count(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v) || Number(v) < 1) {
    console.error(`partitions: --${name} takes a whole number from 1, not "${v}".`);
    process.exit(2);
  }
  return Number(v);
}

let values: { seed?: string; seeds?: string; steps?: string };
try {
  values = parseArgs({ options: { seed: { type: "string" }, seeds: { type: "string" }, steps: { type: "string" } } }).values;
} catch (e) {
  console.error(`partitions: ${(e as Error).message}`);
  process.exit(2);
}
const steps = count("steps", values.steps, 4);
const seeds = values.seed !== undefined ? [count("seed", values.seed, 1)] : Array.from({ length: count("seeds", values.seeds, 20) }, (_, i) => i + 1);

for (const c of [netnsAvailable(), etcdAvailable(), lxcAvailable()]) {
  if (!c.ok) {
    console.error(`partitions: cannot run: ${c.why}.`);
    process.exit(1);
  }
}

console.log(`partitions: ${seeds.length} schedule(s) of ${steps} faults; recovery bound ${RECOVERY_BOUND_MS / 1000} s`);
const started = Date.now();
const lab = await ClusterLab.start();
const failed: string[] = [];
try {
  for (const seed of seeds) {
    try {
      await runSchedule(lab, seed, steps, console.log);
    } catch (e) {
      failed.push(`seed ${seed}`);
      console.error((e as Error).message);
    }
  }
} finally {
  await lab.close();
}
const overlaps = lab.watcher.overlaps();
for (const o of overlaps) console.error(`TWO COPIES AT ONCE: ${o}`);
console.log(`partitions: ${seeds.length - failed.length} of ${seeds.length} schedules passed${failed.length ? ` (failed: ${failed.join(", ")})` : ""}; ${lab.watcher.copies.length} copies in ${lab.watcher.samples} samples, ${overlaps.length} overlaps; ${((Date.now() - started) / 60_000).toFixed(1)} min`);
process.exit(failed.length || overlaps.length ? 1 : 0);
