// QEMU for the demo VMs: the accelerator (KVM when it really boots a guest, TCG
// otherwise), a QMP client, and one VM process with its disks attached as named block
// nodes (so a live backup can re-point them), its serial console in a log file and its
// service forwarded from 127.0.0.1 with user networking that reaches nothing else.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { diesWithParent } from "../sys/dies-with-parent.ts";
import { killRecorded, readLiveRecord, recordLives, recordOf, whenGone, writeRecord } from "../sys/processes.ts";
import { GordeError } from "../errors.ts";
import type { GuestKit } from "./guest-kit.ts";

export const QEMU = "qemu-system-x86_64";

export type Accel = "kvm" | "tcg";

let accelChoice: Promise<{ accel: Accel; why: string }> | undefined;

/**
 * KVM when /dev/kvm exists and a kernel actually runs under it (on some machines KVM is
 * present but a guest never prints a line): a 4-second probe boot, done once per process.
 */
export function chooseAccel(kit: GuestKit, workDir: string): Promise<{ accel: Accel; why: string }> {
  accelChoice ??= (async () => {
    if (!fs.existsSync("/dev/kvm")) return { accel: "tcg" as const, why: "no /dev/kvm: using TCG (software emulation)" };
    const log = path.join(workDir, `kvm-probe-${process.pid}.log`);
    const child = spawn(QEMU, ["-machine", "q35", "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults", "-no-reboot", "-serial", `file:${log}`, "-kernel", kit.kernel, "-append", "console=ttyS0 panic=-1"], { stdio: "ignore" });
    const deadline = Date.now() + 4000;
    let booted = false;
    while (Date.now() < deadline && child.exitCode === null) {
      await sleep(100);
      if (fs.existsSync(log) && fs.statSync(log).size > 0) {
        booted = true;
        break;
      }
    }
    child.kill("SIGKILL");
    fs.rmSync(log, { force: true });
    return booted
      ? { accel: "kvm" as const, why: "KVM boots guests here" }
      : { accel: "tcg" as const, why: "/dev/kvm exists but a guest does not boot under it: using TCG (software emulation)" };
  })();
  return accelChoice;
}

/** The longest line QEMU's monitor may send (query-named-block-nodes of many disks stays far below). */
const MAX_QMP_LINE = 16 * 1024 * 1024;

/** One message of QEMU's monitor: its greeting, an event, or a command's answer or error. */
export type QmpMessage = { kind: "greeting" } | { kind: "event"; event: string; data?: unknown } | { kind: "return"; value: unknown } | { kind: "error"; desc: string };

/** One line from QEMU's monitor, checked: anything but a QMP message is refused in one sentence. */
export function parseQmpLine(line: string): QmpMessage {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new GordeError("invalid", "QEMU's monitor sent a line that is not JSON.");
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new GordeError("invalid", "QEMU's monitor sent a line that is not a JSON object.");
  const m = v as Record<string, unknown>;
  if (m.QMP) return { kind: "greeting" };
  if (m.event !== undefined) {
    if (typeof m.event !== "string") throw new GordeError("invalid", "QEMU's monitor sent an event without a name.");
    return { kind: "event", event: m.event, data: m.data };
  }
  if (m.error !== undefined) {
    const desc = (m.error as { desc?: unknown } | null)?.desc;
    return { kind: "error", desc: typeof desc === "string" && desc ? desc : "no reason given" };
  }
  if ("return" in m) return { kind: "return", value: m.return };
  throw new GordeError("invalid", "QEMU's monitor sent a message that is neither an answer nor an event.");
}

/** A QMP connection: commands answered in order, events passed to listeners. */
export class Qmp {
  private readonly socket: net.Socket;
  private buf = "";
  private queue: { resolve(v: unknown): void; reject(e: Error): void; cmd: string }[] = [];
  private listeners: ((ev: { event: string; data?: unknown }) => void)[] = [];
  private closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => this.onData(d));
    socket.on("close", () => {
      this.closed = true;
      for (const q of this.queue) q.reject(new GordeError("io", `QEMU closed its monitor before answering ${q.cmd}.`));
      this.queue = [];
    });
    socket.on("error", () => undefined);
  }

  static async connect(sock: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const s = net.createConnection(sock);
        await once(s, "connect");
        const q = new Qmp(s);
        await q.greeting();
        await q.execute("qmp_capabilities");
        return q;
      } catch (err) {
        if (Date.now() > deadline) throw new GordeError("io", `QEMU's monitor ${sock} does not answer: ${(err as Error).message}.`);
        await sleep(50);
      }
    }
  }

  private greetingWaiter: (() => void) | undefined;

  private greeting(): Promise<void> {
    return new Promise((resolve) => (this.greetingWaiter = resolve));
  }

  private onData(d: string): void {
    this.buf += d;
    try {
      let i;
      while ((i = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = parseQmpLine(line);
        if (msg.kind === "greeting") {
          this.greetingWaiter?.();
        } else if (msg.kind === "event") {
          for (const l of this.listeners) l({ event: msg.event, data: msg.data });
        } else {
          const q = this.queue.shift();
          if (!q) continue;
          if (msg.kind === "error") q.reject(new GordeError("io", `QEMU refused ${q.cmd}: ${msg.desc.replace(/\.$/, "")}.`));
          else q.resolve(msg.value);
        }
      }
      if (this.buf.length > MAX_QMP_LINE) throw new GordeError("invalid", `QEMU's monitor sent more than ${MAX_QMP_LINE} bytes without a line end.`);
    } catch (err) {
      // A monitor that speaks no QMP is one nobody can back up or fence through: closed.
      const e = err instanceof GordeError ? err : new GordeError("invalid", `QEMU's monitor failed: ${(err as Error).message}`);
      for (const q of this.queue) q.reject(e);
      this.queue = [];
      this.closed = true;
      this.socket.destroy();
    }
  }

  execute<T = unknown>(cmd: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new GordeError("io", `QEMU's monitor is closed; cannot run ${cmd}.`));
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve: resolve as (v: unknown) => void, reject, cmd });
      this.socket.write(JSON.stringify(args ? { execute: cmd, arguments: args } : { execute: cmd }) + "\n");
    });
  }

  onEvent(fn: (ev: { event: string; data?: unknown }) => void): () => void {
    this.listeners.push(fn);
    return () => (this.listeners = this.listeners.filter((l) => l !== fn));
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface VmConfig {
  /** numeric id, as in PVE (VM 100) */
  id: number;
  memoryMiB: number;
  cpus: number;
  disks: string[];
  /** host port on 127.0.0.1 forwarded to the guest's port 80 */
  httpPort: number;
  /** a virtio-serial port for the QEMU guest agent (org.qemu.guest_agent.0) */
  agent?: boolean;
}

export interface VmProcess {
  readonly pid: number;
  qmp: Qmp;
  accel: Accel;
  accelWhy: string;
  consoleLog: string;
  /** the guest agent's socket, when the VM has an agent port */
  agentSocket?: string;
  /** resolves, saying how, once QEMU is gone */
  readonly exited: Promise<string>;
  /** whether QEMU is gone */
  readonly done: boolean;
  /** SIGKILL, not through QMP (a stuck QEMU dies too); resolves once it is gone */
  kill(): Promise<void>;
  /** QMP quit, then SIGKILL after `graceMs` */
  stop(graceMs?: number): Promise<void>;
}

/** The kernel's ephemeral port range: the ports it hands out by itself. */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi)) return [lo!, hi!];
  } catch {
    // not Linux: the usual default
  }
  return [32768, 60999];
}

/** Ports below the ephemeral range, where only an explicit bind takes one. */
const PICK_FROM = 20000;

/**
 * A port on 127.0.0.1 that nothing listens on now, for a process that binds it later (a
 * guest's forwarded port, an etcd member). Picked at random below the kernel's ephemeral
 * range: a port from listen(0) is an ephemeral one, which any outgoing connection may take
 * between its release here and its bind there; below the range only an explicit bind can.
 */
export async function freePort(): Promise<number> {
  const [lo] = ephemeralRange();
  if (lo - PICK_FROM >= 1000) {
    for (let i = 0; i < 64; i++) {
      const port = PICK_FROM + Math.floor(Math.random() * (lo - PICK_FROM));
      if (await portFree(port)) return port;
    }
  }
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether 127.0.0.1:port can be listened on. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

function vmFiles(runDir: string): { qmp: string; console: string; stderr: string; record: string; agent: string } {
  return { qmp: path.join(runDir, "qmp.sock"), console: path.join(runDir, "console.log"), stderr: path.join(runDir, "qemu.log"), record: path.join(runDir, "qemu.pid"), agent: path.join(runDir, "qga.sock") };
}

function accelWhy(accel: Accel): string {
  return accel === "kvm" ? "KVM boots guests here" : "using TCG (software emulation)";
}

function vmProcess(o: { pid: number; qmp: Qmp; accel: Accel; accelWhy: string; consoleLog: string; agentSocket?: string; exited: Promise<string>; signal(sig: NodeJS.Signals): void }): VmProcess {
  let done = false;
  void o.exited.then(() => (done = true));
  const kill = async (): Promise<void> => {
    if (!done) o.signal("SIGKILL");
    await o.exited;
    o.qmp.close();
  };
  return {
    pid: o.pid,
    qmp: o.qmp,
    accel: o.accel,
    accelWhy: o.accelWhy,
    consoleLog: o.consoleLog,
    agentSocket: o.agentSocket,
    exited: o.exited,
    get done() {
      return done;
    },
    kill,
    async stop(graceMs = 3000) {
      if (done) return;
      await o.qmp.execute("quit").catch(() => undefined);
      const t = setTimeout(() => o.signal("SIGKILL"), graceMs);
      await o.exited;
      clearTimeout(t);
      o.qmp.close();
    },
  };
}

/**
 * Starts a VM and connects to its monitor; the guest boots on its own from there. QEMU runs
 * in a session of its own and outlives this process (a restarted node adopts it, adoptVm),
 * unless `diesWithAgent` (a drill's sandbox).
 */
export async function startVm(config: VmConfig, kit: GuestKit, runDir: string, opts: { diesWithAgent?: boolean } = {}): Promise<VmProcess> {
  fs.mkdirSync(runDir, { recursive: true });
  for (const d of config.disks) if (!fs.existsSync(d)) throw new GordeError("not-found", `disk ${d} of VM ${config.id} does not exist.`);
  // QEMU would start and only fail to forward; nothing is started when the port is taken.
  if (!(await portFree(config.httpPort))) throw new GordeError("exists", `port ${config.httpPort} on 127.0.0.1 is in use; VM ${config.id} needs it for its service.`);
  const { accel, why } = await chooseAccel(kit, runDir);
  const f = vmFiles(runDir);
  fs.rmSync(f.qmp, { force: true });
  fs.rmSync(f.record, { force: true });
  const args = [
    "-name", `vm${config.id}`,
    "-machine", "q35",
    "-accel", accel,
    "-m", String(config.memoryMiB),
    "-smp", String(config.cpus),
    "-display", "none",
    "-nodefaults",
    "-no-reboot",
    "-serial", `file:${f.console}`,
    "-kernel", kit.kernel,
    "-initrd", kit.initrd,
    "-append", "console=ttyS0 quiet panic=-1",
    "-netdev", `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${config.httpPort}-:80`,
    "-device", "virtio-net-pci,netdev=net0",
    "-qmp", `unix:${f.qmp},server=on,wait=off`,
  ];
  const agentSocket = config.agent ? f.agent : undefined;
  if (agentSocket) {
    fs.rmSync(agentSocket, { force: true });
    args.push("-chardev", `socket,id=qga0,path=${agentSocket},server=on,wait=off`);
    args.push("-device", "virtio-serial-pci,id=vser0");
    args.push("-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0");
  }
  config.disks.forEach((file, i) => {
    args.push("-blockdev", `driver=file,node-name=disk${i}-file,filename=${file}`);
    args.push("-blockdev", `driver=raw,node-name=disk${i},file=disk${i}-file`);
    args.push("-device", `virtio-blk-pci,drive=disk${i},id=vblk${i}`);
  });
  // Its messages go to a file, not a pipe: a pipe whose reader is gone would end it.
  const stderr = fs.openSync(f.stderr, "w");
  let child: ChildProcess;
  try {
    child = opts.diesWithAgent
      ? spawn(...diesWithParent(QEMU, args), { stdio: ["ignore", "ignore", stderr] })
      : spawn(QEMU, args, { stdio: ["ignore", "ignore", stderr], detached: true });
  } finally {
    fs.closeSync(stderr);
  }
  child.unref();
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? `code ${code}`)));
  const failed = exited.then(() => {
    const text = fs.readFileSync(f.stderr, "utf8");
    const first = text.split("\n").find((l) => l && !l.includes("warning:")) ?? `exit code ${child.exitCode}`;
    throw new GordeError("io", `QEMU for VM ${config.id} stopped at once: ${first.replace(/^qemu-system-x86_64: /, "")}`);
  });
  let qmp: Qmp;
  try {
    const rec = child.pid !== undefined ? recordOf(child.pid) : undefined;
    if (rec) await writeRecord(f.record, rec);
    qmp = await Promise.race([Qmp.connect(f.qmp), failed]);
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    throw err;
  }
  return vmProcess({ pid: child.pid!, qmp, accel, accelWhy: why, consoleLog: f.console, agentSocket, exited, signal: (sig) => child.kill(sig) });
}

/**
 * The VM QEMU still runs in `runDir` (started by a node process that is gone), with its
 * monitor connected again; undefined when none runs there.
 */
export async function adoptVm(id: number, runDir: string): Promise<VmProcess | undefined> {
  const f = vmFiles(runDir);
  const rec = readLiveRecord(f.record);
  if (!rec) return undefined;
  const args = fs.readFileSync(`/proc/${rec.pid}/cmdline`, "utf8").split("\0");
  if (!args.includes(`unix:${f.qmp},server=on,wait=off`)) return undefined; // another process has that pid now
  const watch = whenGone(rec);
  const signal = (sig: NodeJS.Signals): void => {
    if (recordLives(rec)) process.kill(rec.pid, sig);
  };
  let qmp: Qmp;
  try {
    qmp = await Qmp.connect(f.qmp, 5000);
  } catch (err) {
    // Nobody could back it up, stop it or fence it: it goes, and the node may start it anew.
    watch.stop();
    await killRecorded(rec);
    throw new GordeError("io", `QEMU of VM ${id} ran (pid ${rec.pid}) but its monitor did not answer, so it was killed: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
  const accel: Accel = args[args.indexOf("-accel") + 1] === "kvm" ? "kvm" : "tcg";
  return vmProcess({
    pid: rec.pid,
    qmp,
    accel,
    accelWhy: accelWhy(accel),
    consoleLog: f.console,
    agentSocket: args.some((a) => a.includes(`path=${f.agent},`)) ? f.agent : undefined,
    exited: watch.gone.then(() => "gone"),
    signal,
  });
}
