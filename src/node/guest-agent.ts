// The QEMU guest agent, spoken over the VM's agent socket: a backup freezes the guest's
// file systems for the instant its point-in-time view is taken (so the view is
// application-consistent, as vzdump does with qemu-ga) and thaws them right after.
// The channel is synchronised first with guest-sync-delimited: an answer left over from an
// earlier, abandoned exchange must not be taken for this one.
import net from "node:net";
import { GordeError } from "../errors.ts";

const SYNC_TIMEOUT_MS = 3000;
const FREEZE_TIMEOUT_MS = 10_000;

export class GuestAgent {
  private readonly socket: net.Socket;
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (b: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, b]);
      this.waiter?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on("error", () => undefined);
  }

  /** Connects and synchronises; undefined when no agent answers in time (none installed, not started). */
  static async connect(socketPath: string): Promise<GuestAgent | undefined> {
    const socket = net.connect(socketPath);
    const ok = await new Promise<boolean>((resolve) => {
      socket.once("connect", () => resolve(true));
      socket.once("error", () => resolve(false));
    });
    if (!ok) return undefined;
    const agent = new GuestAgent(socket);
    const id = Math.floor(Math.random() * 2 ** 31);
    try {
      socket.write(JSON.stringify({ execute: "guest-sync-delimited", arguments: { id } }) + "\n");
      // Everything before the 0xFF delimiter is stale.
      for (;;) {
        const line = await agent.line(SYNC_TIMEOUT_MS, true);
        if ((line as { return?: unknown }).return === id) return agent;
      }
    } catch {
      agent.close();
      return undefined;
    }
  }

  /** The next JSON line (after a 0xFF delimiter when `delimited`). */
  private async line(timeoutMs: number, delimited = false): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (delimited) {
        const ff = this.buffered.indexOf(0xff);
        if (ff >= 0) {
          this.buffered = this.buffered.subarray(ff + 1);
          delimited = false;
        }
      }
      const nl = this.buffered.indexOf(0x0a);
      if (!delimited && nl >= 0) {
        const text = this.buffered.subarray(0, nl).toString("utf8").trim();
        this.buffered = this.buffered.subarray(nl + 1);
        if (text) return JSON.parse(text) as unknown;
        continue;
      }
      if (this.closed) throw new GordeError("io", "the guest agent closed its channel.");
      const left = deadline - Date.now();
      if (left <= 0) throw new GordeError("io", "the guest agent did not answer in time.");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  async execute(command: string): Promise<unknown> {
    this.socket.write(JSON.stringify({ execute: command }) + "\n");
    const r = (await this.line(FREEZE_TIMEOUT_MS)) as { return?: unknown; error?: { desc?: string } };
    if (r.error) throw new GordeError("io", `the guest agent refused ${command}: ${r.error.desc ?? "no reason given"}.`);
    return r.return;
  }

  close(): void {
    this.socket.destroy();
  }
}
