// `npm run faults`: processes SIGKILLed at random points of every operation that writes a
// datastore, datastores that run out of space, servers killed mid-session, links cut
// mid-upload and mid-restore; after each fault the datastore verifies, every finished
// snapshot restores bit-exact, and the operation works again.
//   npm run faults                          20 faults of each kind, seed 1
//   npm run faults -- --faults 3 --seed 7   fewer, another seed (what a failure prints)
//   npm run faults -- --kinds gc,prune      some kinds only (their ids: see --kinds help)
// As root the suite runs in a mount namespace of its own (unshare -m), where it mounts the
// small tmpfs of the ENOSPC kinds; without root those kinds and the link cuts say why they
// are skipped.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { FaultLab, straceUnavailable } from "./lab.ts";
import { KINDS, type KindResult } from "./kinds.ts";

function fail(message: string): never {
  console.error(`faults: ${message}`);
  process.exit(2);
}

let values: { seed?: string; faults?: string; kinds?: string };
try {
  values = parseArgs({ options: { seed: { type: "string" }, faults: { type: "string" }, kinds: { type: "string" } } }).values;
} catch (e) {
  fail((e as Error).message);
}
const whole = (name: string, v: string | undefined, fallback: number): number => {
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v) || Number(v) < 1) fail(`--${name} takes a whole number from 1, not "${v}".`);
  return Number(v);
};
const seed = whole("seed", values.seed, 1);
const faults = whole("faults", values.faults, 20);
const wanted = values.kinds?.split(",").map((k) => k.trim());
const unknown = wanted?.filter((w) => !KINDS.some((k) => k.id === w)) ?? [];
if (unknown.length) fail(`no kind ${unknown.join(", ")}; the kinds are ${KINDS.map((k) => k.id).join(", ")}.`);
const kinds = wanted ? KINDS.filter((k) => wanted.includes(k.id)) : KINDS;

// Root: the suite goes into a mount namespace of its own first, so its tmpfs mounts are seen by nobody else.
if (process.getuid?.() === 0 && process.env.GORDE_FAULTS_MOUNT_NS !== "1") {
  const r = spawnSync("unshare", ["-m", "--propagation", "private", process.execPath, ...process.execArgv, import.meta.filename, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, GORDE_FAULTS_MOUNT_NS: "1" },
  });
  if (r.error) fail(`unshare -m failed: ${r.error.message}.`);
  process.exit(r.status ?? 1);
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-faults-"));
const lab = new FaultLab(root, seed);
const started = performance.now();
// Interrupted: what the suite started is killed, so no server outlives it.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    void lab.close().finally(() => process.exit(130));
  });
}
console.log(`faults: seed ${seed}, ${faults} of each of ${kinds.length} kinds, in ${root}`);

// A CLI start that does nothing: kill points are spread past it.
const starts: number[] = [];
await lab.gorde(["calendar", "daily"]); // fills the compile cache
for (let i = 0; i < 3; i++) {
  const r = await lab.gorde(["calendar", "daily"]);
  starts.push(r.ms);
}
const startupMs = starts.sort((a, b) => a - b)[1]!;
const noStrace = straceUnavailable();
if (noStrace && kinds.some((k) => k.id === "gc" || k.id === "prune")) console.log(`\n!!! ${noStrace}: GC and prune are killed at random times, most of them after their end, not at random calls of their work.`);

const results: (KindResult & { error?: string; skipped?: string })[] = [];
try {
  for (const kind of kinds) {
    const result: KindResult & { error?: string; skipped?: string } = { kind: kind.name, faults: 0, midway: 0, outcomes: new Map(), ms: 0 };
    results.push(result);
    const why = kind.unavailable?.();
    if (why) {
      result.skipped = why;
      console.log(`\n!!! SKIPPED: ${kind.name}: ${why}`);
      continue;
    }
    console.log(`\n${kind.name}`);
    const t = performance.now();
    try {
      await kind.run({ lab, faults, startupMs, traceable: !noStrace, log: (l) => console.log(l) }, result);
    } catch (e) {
      result.error = (e as Error).message;
      console.error(`FAILED: ${kind.name} after ${result.faults} faults (seed ${seed}): ${result.error}`);
    }
    result.ms = performance.now() - t;
  }
} finally {
  await lab.close();
}

console.log(`\n| kind | faults | died midway | other outcomes | checks | time |\n|---|--:|--:|---|---|--:|`);
for (const r of results) {
  const other = [...r.outcomes].map(([k, n]) => `${k}: ${n}`).join("; ") || "–";
  const status = r.skipped ? `skipped: ${r.skipped}` : r.error ? `**FAILED**: ${r.error}` : "all passed";
  console.log(`| ${r.kind} | ${r.faults} | ${r.midway} | ${other} | ${status} | ${(r.ms / 1000).toFixed(0)} s |`);
}
const failed = results.filter((r) => r.error);
const total = results.reduce((n, r) => n + r.faults, 0);
console.log(`\nfaults: ${total} faults in ${results.length - results.filter((r) => r.skipped).length} kinds, ${failed.length} kinds failed; seed ${seed}; ${((performance.now() - started) / 60_000).toFixed(1)} min`);
if (failed.length) console.log(`data kept for a look: ${root}`);
else fs.rmSync(root, { recursive: true, force: true });
process.exit(failed.length ? 1 : 0);
