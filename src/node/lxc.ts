// LXC for the demo containers: one container per guest, in its own network namespace with
// only a loopback device, its memory and CPU limited by cgroups, frozen and thawed with
// the cgroup freezer, and its service on port 80 forwarded from 127.0.0.1 on the host by
// a small forwarder (ct-forwarder.ts) that runs inside the container's network namespace.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { diesWithParent } from "../sys/dies-with-parent.ts";
import { readLiveRecord, recordOf, whenGone, writeRecord } from "../sys/processes.ts";
import { GordeError } from "../errors.ts";
import { join } from "./ct-forwarder.ts";

const run = promisify(execFile);

const FORWARDER = fileURLToPath(new URL("./ct-forwarder.ts", import.meta.url));
/** The service's port inside every container. */
const SERVICE_PORT = 80;
/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 10_000;

export interface CtRuntimeConfig {
  id: number;
  name: string;
  /** the container's root file system, a directory on the host */
  rootfs: string;
  /** the command LXC runs as the container's init, a path inside rootfs first */
  init: string;
  memoryMiB: number;
  cpus: number;
  /** host port on 127.0.0.1 forwarded to the container's port 80 */
  httpPort: number;
}

export interface CtProcess {
  /** the container's init pid (host view) */
  readonly pid: number;
  readonly name: string;
  /** file with the container's console output */
  readonly consoleLog: string;
  /** LXC's own log of this start (warnings and errors) */
  readonly lxcLog: string;
  /** resolves when the container stopped (by itself or by stop()) and its forwarding is gone */
  readonly exited: Promise<void>;
  /** lxc-freeze; resolves when FROZEN */
  freeze(): Promise<void>;
  /** lxc-unfreeze; resolves when RUNNING */
  thaw(): Promise<void>;
  state(): Promise<"RUNNING" | "FROZEN" | "STOPPED">;
  /** stops the forwarding, then the container: SIGTERM to init if it handles it, lxc-stop -k after `graceMs`; idempotent */
  stop(graceMs?: number): Promise<void>;
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").some((dir) => {
    try {
      fs.accessSync(path.join(dir, cmd), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** A host with only the unified hierarchy (cgroup2) has cgroup.controllers at the top. */
function cgroup2Only(): boolean {
  return fs.existsSync("/sys/fs/cgroup/cgroup.controllers");
}

function freezerAvailable(): boolean {
  if (cgroup2Only()) {
    // cgroup.freeze exists in every non-root cgroup of a kernel that can freeze (5.2+).
    return fs.readdirSync("/sys/fs/cgroup", { withFileTypes: true }).some((d) => d.isDirectory() && fs.existsSync(path.join("/sys/fs/cgroup", d.name, "cgroup.freeze")));
  }
  return fs
    .readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((l) => {
      const [, , type, options] = l.split(" ");
      return type === "cgroup" && (options ?? "").split(",").includes("freezer");
    });
}

export function lxcAvailable(): { ok: true } | { ok: false; why: string } {
  if (!onPath("lxc-start")) return { ok: false, why: "lxc-start is missing: install Debian's lxc package" };
  if (!onPath("nsenter")) return { ok: false, why: "nsenter is missing: install Debian's util-linux package" };
  const uid = process.geteuid?.();
  if (uid !== 0) return { ok: false, why: `containers need root and this process runs as uid ${uid}` };
  if (!freezerAvailable()) return { ok: false, why: "the cgroup freezer is not available, so containers could not be frozen for a backup" };
  return { ok: true };
}

/** The LXC configuration: limits for whichever cgroup layout the host has. */
function lxcConfig(c: CtRuntimeConfig, rootfs: string, consoleLog: string): string {
  const v2 = cgroup2Only();
  const cg = v2 ? "lxc.cgroup2" : "lxc.cgroup";
  const memory = c.memoryMiB * 1024 * 1024;
  // `cpus` CPUs' worth of CFS time per period works for any count; a cpuset cannot name more CPUs than the host has.
  const quota = c.cpus * 100_000;
  const lines = [
    `lxc.uts.name = ${c.name}`,
    `lxc.rootfs.path = dir:${rootfs}`,
    `lxc.init.cmd = ${c.init}`,
    // A network namespace with only lo: the service is reached through the forwarder alone.
    "lxc.net.0.type = empty",
    "lxc.autodev = 1",
    "lxc.mount.auto = proc:mixed sys:ro",
    `lxc.console.logfile = ${consoleLog}`,
    v2 ? `${cg}.memory.max = ${memory}` : `${cg}.memory.limit_in_bytes = ${memory}`,
    v2 ? `${cg}.cpu.max = ${quota} 100000` : `${cg}.cpu.cfs_period_us = 100000\n${cg}.cpu.cfs_quota_us = ${quota}`,
    // Without a user namespace the container's root is the host's root: keep it from the
    // kernel's modules, clock and raw I/O, and from devices other than the usual few
    // (as Debian's /usr/share/lxc/config/common.conf does).
    "lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio",
    `${cg}.devices.deny = a`,
    ...["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"].map((d) => `${cg}.devices.allow = ${d}`),
  ];
  return lines.join("\n") + "\n";
}

function firstLine(text: string): string {
  return text.split("\n").find((l) => l.trim())?.trim() ?? "";
}

/** The first error in LXC's log, without its prefix ("lxc-start ct100 <time> ERROR <where> - "), or "". */
function lxcLogError(file: string): string {
  const line = fs.readFileSync(file, "utf8").split("\n").find((l) => / ERROR /.test(l));
  return line?.replace(/^.* ERROR +\S+ - \S+ - /, "") ?? "";
}

async function lxcTool(tool: string, runDir: string, name: string, ...args: string[]): Promise<string> {
  try {
    return (await run(tool, ["-P", runDir, "-n", name, ...args])).stdout.trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new GordeError("io", `${tool} failed for container ${name}: ${firstLine(e.stderr || e.message).replace(/\.$/, "")}.`);
  }
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([p.then(() => true, () => true), new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)))]);
  clearTimeout(timer);
  return settled;
}

/** Whether `pid` handles SIGTERM: a container's init ignores signals it does not handle. */
function catchesSigterm(pid: number): boolean {
  try {
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}

/** The host end of the forwarding, listening before anything starts so a taken port refuses at once. */
async function listenLocal(port: number, name: string, sock: string, conns: Set<net.Socket>): Promise<net.Server> {
  const server = net.createServer((conn) => {
    conns.add(conn);
    conn.on("close", () => conns.delete(conn));
    join(conn, net.createConnection(sock));
  });
  try {
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new GordeError("exists", `port ${port} on 127.0.0.1 is in use; container ${name} needs it for its service.`);
    throw new GordeError("io", `cannot listen on 127.0.0.1:${port} for container ${name}: ${(err as Error).message}.`);
  }
  return server;
}

/** Starts the forwarder in the network namespace of `pid`; resolves once it listens. */
async function startForwarder(pid: number, sock: string, name: string): Promise<ChildProcess> {
  const fwd = spawn("nsenter", [`--net=/proc/${pid}/ns/net`, process.execPath, FORWARDER, sock, String(SERVICE_PORT)], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  fwd.stderr!.on("data", (b: Buffer) => {
    if (stderr.length < 4096) stderr += b.toString();
  });
  // Its stdin is never written: it closes when this process ends, and the forwarder with it.
  fwd.stdin!.on("error", () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      fwd.stdout!.once("data", () => resolve());
      fwd.once("error", reject);
      fwd.once("exit", (code) => reject(new Error(firstLine(stderr) || `exit code ${code}`)));
    });
  } catch (err) {
    fwd.kill("SIGKILL");
    throw new GordeError("io", `the port forwarder of container ${name} did not start: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
  fwd.stdout!.resume();
  return fwd;
}

/** What can be checked before a container starts: LXC, the config's values, its root file system and init. Returns the rootfs. */
function checkStartable(config: CtRuntimeConfig, name: string): string {
  const avail = lxcAvailable();
  if (!avail.ok) throw new GordeError("unsupported", `cannot start container ${name}: ${avail.why}.`);
  for (const [key, value] of Object.entries(config)) {
    if (/[\r\n]/.test(String(value))) throw new GordeError("usage", `the ${key} of container ${name} contains a line break.`);
  }
  const rootfs = path.resolve(config.rootfs);
  if (!fs.statSync(rootfs, { throwIfNoEntry: false })?.isDirectory()) throw new GordeError("not-found", `root file system ${rootfs} of container ${name} does not exist.`);
  const init = config.init.trim().split(/\s+/)[0] ?? "";
  try {
    if (!path.isAbsolute(init)) throw new Error("relative");
    fs.accessSync(path.join(rootfs, init), fs.constants.X_OK);
  } catch {
    throw new GordeError("not-found", `container ${name} has no init ${init || "(empty)"} in its root file system ${rootfs}.`);
  }
  return rootfs;
}

function ctFiles(runDir: string, name: string): { dir: string; config: string; console: string; lxcLog: string; sock: string; record: string } {
  const dir = path.join(runDir, name);
  return { dir, config: path.join(dir, "config"), console: path.join(dir, "console.log"), lxcLog: path.join(dir, "lxc.log"), sock: path.join(dir, "http.sock"), record: path.join(dir, "lxc-start.pid") };
}

/**
 * Starts container ct<id> with lxcpath `runDir` and forwards 127.0.0.1:<httpPort> to its
 * port 80. Resolves when it is RUNNING and the forwarding listens; nothing is left running
 * when it throws. The container outlives this process (a restarted node adopts it, adoptCt),
 * unless `diesWithAgent` (a drill's sandbox); its forwarding does not.
 */
export async function startCt(config: CtRuntimeConfig, runDir: string, opts: { diesWithAgent?: boolean } = {}): Promise<CtProcess> {
  const name = `ct${config.id}`;
  const rootfs = checkStartable(config, name);
  runDir = path.resolve(runDir);
  const f = ctFiles(runDir, name);
  if (Buffer.byteLength(f.sock) > MAX_SOCKET_PATH) throw new GordeError("usage", `run directory ${runDir} is too long for the forwarder's socket (at most ${MAX_SOCKET_PATH} bytes for ${f.sock}).`);
  fs.mkdirSync(f.dir, { recursive: true });
  if (fs.existsSync(f.config) && (await lxcTool("lxc-info", runDir, name, "-sH")) !== "STOPPED") {
    throw new GordeError("exists", `container ${name} is already running in ${runDir}.`);
  }

  const conns = new Set<net.Socket>();
  const server = await listenLocal(config.httpPort, name, f.sock, conns);
  fs.writeFileSync(f.config, lxcConfig(config, rootfs, f.console));
  // Both logs would otherwise grow across starts; these are this start's.
  fs.writeFileSync(f.console, "");
  fs.writeFileSync(f.lxcLog, "");
  fs.rmSync(f.record, { force: true });
  // In the foreground (-F), lxc-start lives as long as the container: its exit is the container's.
  const lxcArgs = ["-F", "-C", "-P", runDir, "-n", name, "-o", f.lxcLog, "-l", "WARN"];
  const child = opts.diesWithAgent ? spawn(...diesWithParent("lxc-start", lxcArgs), { stdio: "ignore" }) : spawn("lxc-start", lxcArgs, { stdio: "ignore", detached: true });
  child.unref();
  const childExit = once(child, "exit").then(
    () => undefined,
    () => undefined,
  );
  let childDone = false;
  void childExit.then(() => (childDone = true));

  // LXC's first error says why lxc-start failed; the console's last line, why an init that started stopped.
  const stoppedAtOnce = (): GordeError => {
    const lxcError = lxcLogError(f.lxcLog);
    if (lxcError) return new GordeError("io", `LXC could not start container ${name}: ${lxcError.replace(/\.$/, "")}.`);
    const last = fs.readFileSync(f.console, "utf8").trim().split("\n").at(-1)?.trim();
    return new GordeError("io", `container ${name} stopped at once; ${last ? `the last line on its console: ${last.replace(/\.$/, "")}` : "its console is empty"}.`);
  };
  let fwd: ChildProcess | undefined;
  let pid: number;
  try {
    const rec = child.pid !== undefined ? recordOf(child.pid) : undefined;
    if (rec) await writeRecord(f.record, rec);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (childDone) throw stoppedAtOnce();
      if ((await lxcTool("lxc-info", runDir, name, "-sH").catch(() => "")) === "RUNNING") break;
      if (Date.now() > deadline) throw new GordeError("io", `container ${name} is not running ${START_TIMEOUT_MS / 1000} s after lxc-start; see ${f.lxcLog}.`);
      await sleep(20);
    }
    pid = Number(await lxcTool("lxc-info", runDir, name, "-pH"));
    if (!Number.isInteger(pid) || pid <= 0) throw new GordeError("io", `container ${name} has no init process; see ${f.console}.`);
    fwd = await startForwarder(pid, f.sock, name);
  } catch (err) {
    server.close();
    // An init that exits at once makes the steps after RUNNING fail: the logs tell why.
    const stoppedItself = await settlesWithin(childExit, 500);
    if (!stoppedItself) await run("lxc-stop", ["-P", runDir, "-n", name, "-k"]).catch(() => undefined);
    await childExit;
    throw stoppedItself ? stoppedAtOnce() : err;
  }
  return ctProcess({ name, runDir, pid, files: f, server, conns, forwarder: fwd, monitorExit: childExit });
}

/**
 * The container LXC still runs in `runDir` (started by a node process that is gone), its
 * forwarding from 127.0.0.1:<httpPort> opened again; undefined when it does not run.
 */
export async function adoptCt(config: Pick<CtRuntimeConfig, "id" | "httpPort">, runDir: string): Promise<CtProcess | undefined> {
  const name = `ct${config.id}`;
  runDir = path.resolve(runDir);
  const f = ctFiles(runDir, name);
  const rec = readLiveRecord(f.record);
  if (!rec || !fs.existsSync(f.config)) return undefined;
  const args = fs.readFileSync(`/proc/${rec.pid}/cmdline`, "utf8").split("\0");
  if (!args.includes(runDir) || !args.includes(name)) return undefined; // another process has that pid now
  const state = await lxcTool("lxc-info", runDir, name, "-sH").catch(() => "STOPPED");
  if (state === "STOPPED") return undefined;
  const pid = Number(await lxcTool("lxc-info", runDir, name, "-pH"));
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const conns = new Set<net.Socket>();
  const server = await listenLocal(config.httpPort, name, f.sock, conns);
  let fwd: ChildProcess;
  try {
    fwd = await startForwarder(pid, f.sock, name);
  } catch (err) {
    server.close();
    throw err;
  }
  return ctProcess({ name, runDir, pid, files: f, server, conns, forwarder: fwd, monitorExit: whenGone(rec).gone });
}

/** A running container: its forwarding goes when lxc-start (its monitor) ends. */
function ctProcess(o: {
  name: string;
  runDir: string;
  pid: number;
  files: ReturnType<typeof ctFiles>;
  server: net.Server;
  conns: Set<net.Socket>;
  forwarder: ChildProcess;
  monitorExit: Promise<void>;
}): CtProcess {
  const { name, runDir, pid, server, conns, forwarder } = o;
  let childDone = false;
  void o.monitorExit.then(() => (childDone = true));
  let forwardingDown: Promise<void> | undefined;
  const stopForwarding = (): Promise<void> =>
    (forwardingDown ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of conns) c.destroy();
      if (forwarder.exitCode === null && forwarder.signalCode === null) {
        const gone = once(forwarder, "exit");
        forwarder.kill("SIGKILL");
        await gone;
      }
      fs.rmSync(o.files.sock, { force: true });
      await closed;
    })());
  // The forwarder holds the container's network namespace: it goes with the container.
  const exited = o.monitorExit.then(stopForwarding);

  const state = async (): Promise<"RUNNING" | "FROZEN" | "STOPPED"> => {
    const s = await lxcTool("lxc-info", runDir, name, "-sH");
    // LXC's passing states (STARTING, FREEZING, THAWED, STOPPING, ABORTING) count as running.
    return s === "FROZEN" || s === "STOPPED" ? s : "RUNNING";
  };

  let stopping: Promise<void> | undefined;
  return {
    pid,
    name,
    consoleLog: o.files.console,
    lxcLog: o.files.lxcLog,
    exited,
    async freeze() {
      if (childDone) throw new GordeError("io", `container ${name} is stopped; it cannot be frozen.`);
      await lxcTool("lxc-freeze", runDir, name);
    },
    async thaw() {
      if (childDone) throw new GordeError("io", `container ${name} is stopped; it cannot be thawed.`);
      await lxcTool("lxc-unfreeze", runDir, name);
    },
    state,
    stop(graceMs = 3000) {
      return (stopping ??= (async () => {
        await stopForwarding();
        // A frozen init cannot act on SIGTERM, and one without a handler ignores it.
        if (!childDone && catchesSigterm(pid) && (await state().catch(() => "STOPPED")) === "RUNNING") {
          try {
            process.kill(pid, "SIGTERM");
            await settlesWithin(exited, graceMs);
          } catch {
            // init is gone already
          }
        }
        if (!childDone) await run("lxc-stop", ["-P", runDir, "-n", name, "-k"]).catch(() => undefined);
        await exited;
      })());
    },
  };
}
