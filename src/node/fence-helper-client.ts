// The agent's side of the fence helper (fence-helper.ts): starts it in its own session, so
// it outlives the agent, and keeps it told of the fence deadline and of the run directories
// of the node's HA guests (told before such a guest starts, so no start escapes it).
import { type ChildProcess, spawn } from "node:child_process";
import { SELF_FENCE_AFTER_MS } from "../cluster/ha-timing.ts";

const HELPER = new URL("./fence-helper.ts", import.meta.url).pathname;

export class FenceHelper {
  private child: ChildProcess | undefined;
  private deadline: number | undefined;
  private dirs: string[] = [];
  private readonly log: (line: string) => void;
  private closed = false;

  constructor(log: (line: string) => void) {
    this.log = log;
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
    if (this.closed || (this.dirs.length === 0 && !this.child)) return;
    this.helper().stdin!.write(JSON.stringify({ deadline: this.deadline, dirs: this.dirs }) + "\n");
  }

  private helper(): ChildProcess {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    // Its own session: a signal to the agent's process group does not reach it.
    const child = spawn(process.execPath, [HELPER], { detached: true, stdio: ["pipe", "ignore", "pipe"] });
    child.stderr!.on("data", (b: Buffer) => {
      for (const l of b.toString().split("\n")) if (l) this.log(l);
    });
    child.stdin!.on("error", () => undefined);
    child.unref();
    this.child = child;
    this.log(`fence helper started (pid ${child.pid})`);
    return child;
  }

  /** The agent stops cleanly (its HA guests stopped first): the helper exits. */
  close(): void {
    this.closed = true;
    this.child?.stdin?.end(JSON.stringify({ exit: true }) + "\n");
  }
}
