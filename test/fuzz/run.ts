// `npm run fuzz [-- --inputs N --seed S]`: every parser of untrusted input, N inputs each
// (default 100 000), from seed S (default 1); prints what each accepted and refused, the
// slowest parse, the peak RSS, and every finding with the seed that replays it. Exit 1 on
// a finding.
import { parseArgs } from "node:util";
import { fuzz, targets } from "./parsers.ts";

const { values } = parseArgs({ options: { inputs: { type: "string", default: "100000" }, seed: { type: "string", default: "1" }, only: { type: "string" } } });
const inputs = Number(values.inputs);
const seed = Number(values.seed);
let findings = 0;
let peak = 0;
const started = performance.now();
for (const t of targets()) {
  if (values.only && !t.name.includes(values.only)) continue;
  const t0 = performance.now();
  const r = await fuzz(t, seed, inputs);
  peak = Math.max(peak, process.memoryUsage().rss);
  findings += r.findings.length;
  console.log(
    `${t.name.padEnd(46)} ${String(r.inputs).padStart(7)} inputs: ${String(r.accepted).padStart(7)} accepted, ${String(r.refused).padStart(7)} refused, ${r.findings.length} findings; slowest ${r.slowestMs.toFixed(1)} ms; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  for (const f of r.findings) console.log(`  FINDING ${f}`);
}
console.log(`peak RSS ${(peak / 1048576).toFixed(0)} MiB; ${((performance.now() - started) / 1000).toFixed(0)} s; ${findings} findings`);
process.exitCode = findings > 0 ? 1 : 0;
