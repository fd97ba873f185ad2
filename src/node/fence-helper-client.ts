// The agent's side of the fence helper (fence-helper.ts): keeps its state file told of the
// fence deadline and of the run directories of the node's HA guests (told before such a
// guest starts, so no start escapes it), and starts the helper, in its own session so it
// outlives the agent, when none runs. A helper left by the node's previous agent (killed,
// crashed) goes on: its deadline and guests are what this agent inherits until its own
// lease is renewed.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { SELF_FENCE_AFTER_MS } from "../cluster/ha-timing.ts";
import { type ProcessRecord, readLiveRecord, recordOf } from "../sys/processes.ts";
import { type FenceState, readFenceState } from "./fence-helper.ts";

const HELPER = new URL("./fence-helper.ts", import.meta.url).pathname;

/** Replaces a file whole, synchronously (no fsync: these files matter only while this boot lasts). */
function replaceFile(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(value) + "\n", { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export class FenceHelper {
  private deadline: number | undefined;
  private dirs: string[] = [];
  private readonly log: (line: string) => void;
  private closed = false;
  private readonly stateFile: string;
  private readonly recordFile: string;
  private readonly logFile: string;
  private readonly self: ProcessRecord;
  /** what the node's previous agent left its fence helper to enforce (this boot, not closed) */
  readonly inherited: { deadline: number | undefined; dirs: string[] } | undefined;

  /** `runDir`: the node's <dataDir>/run, where the helper's files are kept. */
  constructor(runDir: string, log: (line: string) => void) {
    this.log = log;
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    this.stateFile = path.join(runDir, "fence.json");
    this.recordFile = path.join(runDir, "fence-helper.pid");
    this.logFile = path.join(runDir, "fence-helper.log");
    this.self = recordOf(process.pid)!;
    // The previous agent of this boot did not close (killed, crashed): its deadline and guests
    // hold until this agent's lease is renewed. Its helper is taken over, or started anew to
    // enforce them.
    const left = readFenceState(this.stateFile);
    if (left && !left.exit && left.agent.boot === this.self.boot) {
      this.inherited = { deadline: left.deadline, dirs: left.dirs };
      this.deadline = left.deadline;
      this.dirs = left.dirs;
      const helper = readLiveRecord(this.recordFile);
      if (left.dirs.length) this.log(helper ? `the fence helper of the node's previous agent runs (pid ${helper.pid}): taken over, its deadline holds until this node's lease is renewed` : "the node's previous agent left HA guests to fence and no fence helper: one is started");
      this.send();
    }
  }

  /** The node's lease was renewed by a renewal sent at `sentAt` (monotonic ms). */
  renewed(sentAt: number): void {
    this.deadline = sentAt + SELF_FENCE_AFTER_MS;
    this.send();
  }

  /** The run directories of the node's HA guests, running or about to start. */
  arm(dirs: string[]): void {
    const next = [...dirs].sort();
    if (JSON.stringify(next) === JSON.stringify(this.dirs)) return;
    this.dirs = next;
    this.send();
  }

  private send(): void {
    if (this.closed) return;
    const helper = readLiveRecord(this.recordFile);
    if (this.dirs.length === 0 && !helper) return;
    this.write({ agent: this.self, deadline: this.deadline, dirs: this.dirs });
    if (!helper) this.startHelper();
  }

  private write(state: FenceState): void {
    replaceFile(this.stateFile, state);
  }

  private startHelper(): void {
    // Its own session: a signal to the agent's process group does not reach it.
    // Its messages go to a file: a pipe would outlive its reader, the agent.
    const logFd = fs.openSync(this.logFile, "a", 0o600);
    let child;
    try {
      child = spawn(process.execPath, [HELPER, this.stateFile, this.recordFile], { detached: true, stdio: ["ignore", "ignore", logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    child.unref();
    const rec = child.pid !== undefined ? recordOf(child.pid) : undefined;
    if (rec) replaceFile(this.recordFile, rec);
    this.log(`fence helper started (pid ${child.pid}; its log ${this.logFile})`);
  }

  /** The agent stops cleanly (its HA guests stopped first): the helper exits. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (fs.existsSync(this.stateFile)) this.write({ agent: this.self, dirs: [], exit: true });
  }
}
