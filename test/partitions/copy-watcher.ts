// The history of every guest copy, taken from the processes themselves: /proc is sampled
// every 50 ms. A copy is a container's lxc-start or a VM's qemu started for
// `<node's dataDir>/run/<id>`, with every process seen below it; it counts as running from
// its start (its start time in /proc, not when a sample first saw it) until none of its
// processes is left but as a zombie: a stopped (SIGSTOP) copy runs. Checked afterwards:
// never two copies of one guest at once.
import fs from "node:fs";

const SAMPLE_MS = 50;
/** A guest's first process, by the command name /proc shows (at most 15 characters). */
const GUEST_COMM = new Set(["lxc-start", "qemu-system-x86"]);
/** /proc's start times count clock ticks since boot (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

export interface Copy {
  guest: number;
  node: string;
  /** the copy's first process: its pid and start time (ticks since boot), together unique */
  pid: number;
  /** ms since the epoch */
  start: number;
  /** ms since the epoch: the first sample it was gone in; null while it runs */
  end: number | null;
}

interface ProcInfo {
  ppid: number;
  startTicks: number;
  zombie: boolean;
  comm: string;
}

function readProc(pid: string): ProcInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces and parentheses: the fields follow its last ")".
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), startTicks: Number(f[19]), zombie: f[0] === "Z", comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) };
  } catch {
    return undefined; // gone meanwhile
  }
}

function cmdline(pid: string): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return [];
  }
}

function bootTimeMs(): number {
  const uptime = Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]);
  return Date.now() - uptime * 1000;
}

export class CopyWatcher {
  readonly copies: Copy[] = [];
  samples = 0;
  private readonly members = new Map<Copy, Set<string>>(); // "pid:startTicks" of each process of the copy
  private readonly boot = bootTimeMs();
  private readonly timer: NodeJS.Timeout;
  private readonly nodes: Record<string, string>;
  private readonly guests: number[];

  /** Watches the copies of `guests` run from each node's data directory (node name → dataDir). */
  constructor(nodes: Record<string, string>, guests: number[]) {
    this.nodes = nodes;
    this.guests = guests;
    this.sample();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  /** The copies of `guest` running now (by the last sample). */
  runningNow(guest: number): Copy[] {
    return this.copies.filter((c) => c.guest === guest && c.end === null);
  }

  /** Every pair of copies of one guest whose lives overlapped, in words. */
  overlaps(): string[] {
    const found: string[] = [];
    for (let i = 0; i < this.copies.length; i++) {
      for (let j = i + 1; j < this.copies.length; j++) {
        const a = this.copies[i]!;
        const b = this.copies[j]!;
        if (a.guest !== b.guest) continue;
        const aEnd = a.end ?? Infinity;
        const bEnd = b.end ?? Infinity;
        if (a.start < bEnd && b.start < aEnd) found.push(`guest ${a.guest}: ${describe(a)} and ${describe(b)}`);
      }
    }
    return found;
  }

  stop(): void {
    clearInterval(this.timer);
    this.sample();
  }

  /** Whether the process, or one of its ancestors, belongs to a copy known already. */
  private isMember(key: string, procs: Map<string, ProcInfo>): boolean {
    const known = (k: string): boolean => [...this.members.values()].some((m) => m.has(k));
    for (let k = key, hops = 0; hops < 64; hops++) {
      if (known(k)) return true;
      const ppid = String(procs.get(k.split(":")[0]!)?.ppid ?? 0);
      const parent = procs.get(ppid);
      if (!parent) return false;
      k = `${ppid}:${parent.startTicks}`;
    }
    return false;
  }

  private sample(): void {
    const now = Date.now();
    const procs = new Map<string, ProcInfo>();
    for (const p of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(p)) continue;
      const info = readProc(p);
      if (info) procs.set(p, info);
    }
    const alive = new Set<string>();
    for (const [pid, info] of procs) if (!info.zombie) alive.add(`${pid}:${info.startTicks}`);
    // Every process below a copy's is the copy's too (a container's init and its services).
    for (const [copy, members] of this.members) {
      if (copy.end !== null) continue;
      let grew = true;
      while (grew) {
        grew = false;
        for (const [pid, info] of procs) {
          const key = `${pid}:${info.startTicks}`;
          if (members.has(key) || info.zombie) continue;
          const parent = procs.get(String(info.ppid));
          if (parent && members.has(`${info.ppid}:${parent.startTicks}`)) {
            members.add(key);
            grew = true;
          }
        }
      }
    }
    // A copy has ended once none of its processes is left but as a zombie.
    for (const [copy, members] of this.members) {
      if (copy.end === null && ![...members].some((k) => alive.has(k))) copy.end = now;
    }
    // New copies: a guest's lxc-start or qemu, by its run directory.
    for (const [pid, info] of procs) {
      if (info.zombie || !GUEST_COMM.has(info.comm)) continue;
      const argv = cmdline(pid);
      for (const [node, dataDir] of Object.entries(this.nodes)) {
        for (const guest of this.guests) {
          const runDir = `${dataDir}/run/${guest}`;
          if (!argv.some((a) => a === runDir || a.includes(`${runDir}/`))) continue;
          const key = `${pid}:${info.startTicks}`;
          if (this.isMember(key, procs)) continue; // a process of a known copy (lxc-start forks itself)
          // lxc-start daemonizes: its fork may outlive it, reparented before a sample saw both.
          // One run directory holds one copy (lxc refuses a second), so the node's running copy is this one.
          const same = this.copies.find((c) => c.guest === guest && c.node === node && c.end === null);
          if (same) {
            this.members.get(same)!.add(key);
            continue;
          }
          const copy: Copy = { guest, node, pid: Number(pid), start: Math.round(this.boot + (info.startTicks / TICKS_PER_S) * 1000), end: null };
          this.copies.push(copy);
          this.members.set(copy, new Set([key]));
        }
      }
    }
    this.samples++;
  }
}

function describe(c: Copy): string {
  const t = (ms: number): string => new Date(ms).toISOString().slice(11, 23);
  return `on ${c.node} (pid ${c.pid}) ${t(c.start)}–${c.end === null ? "running" : t(c.end)}`;
}
