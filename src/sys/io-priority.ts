// I/O priority for backup work, as vzdump's ionice: every thread of this process is put in
// the best-effort class at a low level while a backup job runs, so the guests' own I/O goes
// first, and put back afterwards. Threads started meanwhile (chunk workers) inherit it. The
// kernel's I/O scheduler decides what it is worth (BFQ honours it; mq-deadline mostly not).
import { execFile } from "node:child_process";
import fs from "node:fs";
import { promisify } from "node:util";

const run = promisify(execFile);

function threads(): string[] {
  return fs.readdirSync("/proc/self/task");
}

/** The I/O priority of a thread as `ionice` prints it (e.g. "best-effort: prio 7", "none: prio 0"). */
export async function ioPriority(tid: string | number = process.pid): Promise<string> {
  return (await run("ionice", ["-p", String(tid)])).stdout.trim();
}

/**
 * Runs `fn` with this process's threads at best-effort `level` (0 high .. 7 low). Without
 * `ionice` (util-linux) the work runs as it is and `onWarning` says so.
 */
export async function withIoPriority<T>(level: number, fn: () => Promise<T>, onWarning: (w: string) => void = () => undefined): Promise<T> {
  const tids = threads();
  const before = await Promise.all(tids.map((t) => ioPriority(t).catch(() => undefined)));
  try {
    await run("ionice", ["-c", "2", "-n", String(level), "-p", ...tids]);
  } catch (err) {
    onWarning(`could not lower the I/O priority: ${(err as Error).message.split("\n")[0]}`);
    return fn();
  }
  try {
    return await fn();
  } finally {
    // Back to what each thread had ("none" follows the CPU nice value, class 0).
    for (const [i, tid] of tids.entries()) {
      const m = /^(none|best-effort|realtime|idle)(?:: prio (\d))?/.exec(before[i] ?? "");
      const cls = { none: "0", realtime: "1", "best-effort": "2", idle: "3" }[(m?.[1] ?? "none") as "none"];
      await run("ionice", ["-c", cls, ...(cls === "1" || cls === "2" ? ["-n", m?.[2] ?? "4"] : []), "-p", tid]).catch(() => undefined);
    }
  }
}
