// The fence helper: a small process per node that outlives the node agent (its own session,
// no parent-death signal). The agent keeps a state file up to date (fence-helper-client.ts):
// the fence deadline (CLOCK_MONOTONIC ms: its lease's earliest lapse less the margin), the
// run directories of the node's HA guests, and which process the agent is. Once the
// deadline has passed without a newer one (the agent SIGKILLed, stopped, stuck, or cut
// from the quorum) it kills (SIGKILL) every process that names one of those directories on
// its command line (QEMU, lxc-start and the container's init), and goes on doing so while
// the deadline stays passed: a guest the agent was starting when it stopped dies too. A
// restarted agent takes the helper over by writing the same file. It exits when the agent
// says "exit", when another helper took its place, or when the agent is gone and the
// deadline has passed.
//
// Run as: node fence-helper.ts <state file> <own record file>   (started by fence-helper-client.ts)
import fs from "node:fs";
import { monotonicMs } from "../cluster/ha-timing.ts";
import { type ProcessRecord, processesNaming, readLiveRecord, recordLives } from "../sys/processes.ts";

/** What the agent writes; what the helper reads every LOOK_MS. */
export interface FenceState {
  agent: ProcessRecord;
  deadline?: number;
  dirs: string[];
  exit?: boolean;
}

const LOOK_MS = 100;

function say(line: string): void {
  process.stderr.write(`${new Date().toISOString()} fence helper ${process.pid}: ${line}\n`);
}

export function readFenceState(file: string): FenceState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<FenceState>;
    if (typeof s.agent?.pid !== "number" || !Array.isArray(s.dirs)) return undefined;
    return {
      agent: s.agent,
      deadline: typeof s.deadline === "number" ? s.deadline : undefined,
      dirs: s.dirs.filter((d): d is string => typeof d === "string" && d.startsWith("/") && d.length > 1),
      exit: s.exit === true,
    };
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const [stateFile, recordFile] = process.argv.slice(2);
  if (!stateFile || !recordFile) {
    process.stderr.write("usage: fence-helper.ts <state file> <record file>\n");
    process.exit(2);
  }
  let state: FenceState | undefined;
  const look = (): void => {
    // A file being replaced, or not written yet: the last state holds.
    state = readFenceState(stateFile) ?? state;
    if (state?.exit) process.exit(0);
    // Another helper took this one's place (the record of a dead one is not written over yet at its start).
    const other = readLiveRecord(recordFile);
    if (other && other.pid !== process.pid) process.exit(0);
    const passed = state?.deadline !== undefined && monotonicMs() >= state.deadline;
    if (passed && state!.dirs.length) {
      const pids = processesNaming(state!.dirs);
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
      if (pids.length) say(`the fence deadline passed without a renewed lease: killed ${pids.join(", ")}`);
    }
    if (state && !recordLives(state.agent) && (passed || state.deadline === undefined)) process.exit(0);
  };
  // The agent gone, nobody reads what it says: that must not end the helper. Nor a SIGTERM
  // sent to everything the agent started (a service manager stopping it): the agent stops
  // its guests first and then tells the helper to exit.
  process.stderr.on("error", () => undefined);
  process.on("SIGTERM", () => undefined);
  process.on("SIGHUP", () => undefined);
  process.on("SIGINT", () => undefined);
  setInterval(look, LOOK_MS);
  look();
}
