// Processes that outlive the one that started them (a node's guests, its fence helper): a
// record of each (pid, start time, boot) so a later process finds it again and never takes
// another process that got the same pid for it, a watch that says when one is gone (it is
// not this process's child to wait for), and the processes that name a directory.
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "./atomic-write.ts";

/** How often a process that is not our child is looked at. */
const WATCH_MS = 100;

export interface ProcessRecord {
  pid: number;
  /** its start time in clock ticks since boot (/proc/<pid>/stat field 22) */
  start: string;
  /** the kernel's boot id: a pid of an earlier boot is nobody's */
  boot: string;
}

/** The state and start time of `pid`, or undefined when there is no such process. */
export function procStat(pid: number): { state: string; start: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields after its last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0] ?? "X", start: fields[19] ?? "" };
}

let bootId: string | undefined;
export function currentBoot(): string {
  bootId ??= fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  return bootId;
}

/** Whether the recorded process runs (a zombie does not: it holds nothing but its pid). */
export function recordLives(r: ProcessRecord): boolean {
  if (r.boot !== currentBoot()) return false;
  const s = procStat(r.pid);
  return s !== undefined && s.start === r.start && s.state !== "Z" && s.state !== "X";
}

/** The record of `pid` as it runs now; undefined when it is gone already. */
export function recordOf(pid: number): ProcessRecord | undefined {
  const s = procStat(pid);
  return s ? { pid, start: s.start, boot: currentBoot() } : undefined;
}

export async function writeRecord(file: string, r: ProcessRecord): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(r) + "\n", { mode: 0o600 });
}

/** The process `file` records, if it still runs; a missing or foreign file is nobody. */
export function readLiveRecord(file: string): ProcessRecord | undefined {
  let r: Partial<ProcessRecord>;
  try {
    r = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<ProcessRecord>;
  } catch {
    return undefined;
  }
  if (!Number.isInteger(r.pid) || (r.pid as number) <= 1 || typeof r.start !== "string" || typeof r.boot !== "string") return undefined;
  const rec = r as ProcessRecord;
  return recordLives(rec) ? rec : undefined;
}

/** When (ms since the epoch) the recorded process started. */
export function startedAtMs(r: ProcessRecord): number {
  const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync("/proc/stat", "utf8"))?.[1] ?? 0);
  // USER_HZ is 100 on every Linux architecture gorde runs on.
  return btime * 1000 + Number(r.start) * 10;
}

/** Resolves once the recorded process is gone (or a zombie); `stop()` ends the watch without resolving. */
export function whenGone(r: ProcessRecord): { gone: Promise<void>; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  const gone = new Promise<void>((resolve) => {
    const look = (): void => {
      if (!recordLives(r)) {
        clearInterval(timer);
        resolve();
      }
    };
    timer = setInterval(look, WATCH_MS);
    timer.unref();
    look();
  });
  return { gone, stop: () => clearInterval(timer) };
}

/** SIGKILLs the recorded process (if it is still that one) and waits until it is gone. */
export async function killRecorded(r: ProcessRecord, waitMs = 5000): Promise<void> {
  if (!recordLives(r)) return;
  try {
    process.kill(r.pid, "SIGKILL");
  } catch {
    return;
  }
  for (const deadline = Date.now() + waitMs; recordLives(r) && Date.now() < deadline; ) await sleep(20);
}

/** The processes (but this one) with an argument that is one of `dirs` or a path below one. */
export function processesNaming(dirs: readonly string[]): number[] {
  const out: number[] = [];
  if (!dirs.length) return out;
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
