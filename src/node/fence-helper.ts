// The fence helper: a small process per node that outlives the node agent (its own session,
// no parent-death signal). The agent tells it on stdin, one JSON line at a time, the fence
// deadline (CLOCK_MONOTONIC ms: its lease's earliest lapse less the margin) and the run
// directories of the node's HA guests. Once the deadline has passed without a newer one —
// the agent SIGKILLed, stopped, stuck, or cut from the quorum — it kills (SIGKILL) every
// process that names one of those directories on its command line (QEMU, lxc-start, whose
// death takes the container's init with it), and goes on doing so while the deadline stays
// passed: a guest the agent was starting when it stopped dies too. It exits when the agent
// says "exit", or when the agent is gone and the deadline has passed.
//
// Run as: node fence-helper.ts   (started by fence-helper-client.ts)
import fs from "node:fs";
import readline from "node:readline";
import { monotonicMs } from "../cluster/ha-timing.ts";

let deadline: number | undefined;
let dirs: string[] = [];
let agentGone = false;

function say(line: string): void {
  process.stderr.write(`fence helper ${process.pid}: ${line}\n`);
}

/** The processes that name one of `dirs` on their command line. */
function guestProcesses(): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let args: string[];
    try {
      args = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    if (args.some((a) => dirs.some((d) => a === d || a.includes(`${d}/`)))) out.push(Number(p));
  }
  return out;
}

function check(): void {
  const passed = deadline !== undefined && monotonicMs() >= deadline;
  if (passed && dirs.length) {
    const pids = guestProcesses();
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone already
      }
    }
    if (pids.length) say(`the fence deadline passed without a renewed lease: killed ${pids.join(", ")}`);
  }
  if (agentGone && (passed || deadline === undefined)) process.exit(0);
}

// The agent gone, nobody reads what it says: that must not end the helper. Nor a SIGTERM
// sent to everything the agent started (a service manager stopping it): the agent stops
// its guests first and then tells the helper to exit.
process.stderr.on("error", () => undefined);
process.on("SIGTERM", () => undefined);
process.on("SIGHUP", () => undefined);
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  try {
    const m = JSON.parse(line) as { exit?: boolean; deadline?: number; dirs?: unknown };
    if (m.exit) process.exit(0);
    if (typeof m.deadline === "number") deadline = m.deadline;
    if (Array.isArray(m.dirs)) dirs = m.dirs.filter((d): d is string => typeof d === "string" && d.startsWith("/") && d.length > 1);
    check();
  } catch {
    say(`ignored a line that is not the agent's: ${line.slice(0, 80)}`);
  }
});
lines.on("close", () => {
  agentGone = true;
  check();
});
setInterval(check, 100);
