// The fault suite's workbench: a local datastore, a `gorde server` (restartable on its port
// and state), users' data that changes a little between backups, the CLI run with a SIGKILL
// at a chosen moment, and the checks every fault is followed by: verify accepts the
// datastore, every snapshot known to be finished restores bit-exact, unfinished ones stay
// unfinished. Every process is started here and killed only by its own pid.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Prng } from "../../bench/prng.ts";
import { describeTree } from "../helpers.ts";
import { MAIN, type ServerProcess, freePort, gordeCommand, startServerProcess } from "../server-fixture.ts";
import { userBlocks, writeUserImage, writeUserTree } from "../user-data.ts";

export const ADMIN_PASSWORD = "faults-admin-1";
/** No process of the suite may run longer than this; one that does is a finding (a hang). */
export const CHILD_TIMEOUT_MS = 90_000;
/** The fake clock's step: every backup gets `--time` one hour after the one before. */
const HOUR = 3600;

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
  ms: number;
  /** whether the kill was sent before the process ended by itself */
  killed: boolean;
}

/**
 * A point in an operation's work: the `nth` call of `syscall` in the thread that is the first
 * to make that many (strace's `when=` counts per thread), and the datastore path that call
 * named in the traced run.
 */
export interface CallPoint {
  syscall: string;
  nth: number;
  path: string;
}

/** The calls that change a datastore: a kill lands before one of them. A CLI's start makes none of them. */
export const CHANGING_CALLS = ["utimensat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "rmdir", "mkdir", "mkdirat"];
/** strace's largest `when=` */
const MAX_NTH = 65535;

/** Why an operation cannot be killed at chosen calls here (no strace, or it cannot trace), or undefined. */
export function straceUnavailable(): string | undefined {
  const r = spawnSync("strace", ["-f", "-qq", "-o", "/dev/null", "-e", "trace=getpid", "true"], { stdio: "ignore" });
  if (r.error) return "strace is not installed (Debian: strace)";
  if (r.status !== 0) return "strace cannot trace here (ptrace refused)";
  return undefined;
}

/**
 * The calls of a traced run (strace -f output, in the order they were made) that name a
 * path under `under` and that `when=<n>` would stop: the n-th call of its name in its thread,
 * with no thread having made n of them before it.
 */
export function parseCallPoints(trace: string, under: string): CallPoint[] {
  const perThread = new Map<string, number>();
  const most = new Map<string, number>();
  const points: CallPoint[] = [];
  for (const line of trace.split("\n")) {
    const m = /^(\d+)\s+(\w+)\((.*)$/.exec(line);
    if (!m) continue; // "<... resumed>", exits, signals
    const syscall = m[2]!;
    const key = `${m[1]} ${syscall}`;
    const nth = (perThread.get(key) ?? 0) + 1;
    perThread.set(key, nth);
    const first = nth > (most.get(syscall) ?? 0);
    if (first) most.set(syscall, nth);
    const named = /"((?:[^"\\]|\\.)*)"/.exec(m[3]!)?.[1];
    if (first && named && (named === under || named.startsWith(under + "/")) && nth <= MAX_NTH) points.push({ syscall, nth, path: named });
  }
  return points;
}

/** What a finished snapshot must restore to. */
export interface Expected {
  tree: Map<string, string>;
  imageSha: string;
}

/** A repository the suite backs up into: a local datastore directory or a server's URL. */
export interface Repo {
  name: string;
  url: string;
  env: Record<string, string>;
  /** the netns its clients run in, if any */
  netns?: string;
}

export class Failure extends Error {}

export function check(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Failure(message);
}

export const sha256 = (file: string): string => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

export class FaultLab {
  readonly root: string;
  readonly src: string;
  readonly image: string;
  /** per repository name: finished snapshots and what they restore to */
  readonly expected = new Map<string, Map<string, Expected>>();
  /** every snapshot any backup finished, by name (names are unique: one clock for all repositories) */
  readonly made = new Map<string, Expected>();
  private readonly children = new Set<ChildProcess>();
  private clock = Date.parse("2026-01-01T00:00:00Z") / 1000;
  private round = 0;
  private restores = 0;
  private readonly prng: Prng;
  private readonly blocks = userBlocks(7);
  compileCache: string;

  constructor(root: string, seed: number) {
    this.root = root;
    this.prng = new Prng(seed);
    this.src = path.join(root, "src-tree");
    this.image = path.join(root, "src.img");
    this.compileCache = path.join(root, ".compile-cache");
    fs.mkdirSync(this.src, { recursive: true });
    writeUserTree(this.src, this.blocks, { seed });
    writeUserImage(this.image, this.blocks, { seed });
  }

  /** The next backup time: an hour after the last, so names never collide and prune's buckets are clear. */
  nextTime(): string {
    this.clock += HOUR;
    return new Date(this.clock * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  }

  /**
   * A little new data, as between two backups of a live system: image blocks, files changed,
   * added, removed; with `bulk`, a file of that many new incompressible bytes besides.
   */
  modify(bulk = 0): void {
    this.round++;
    const r = this.prng;
    const fd = fs.openSync(this.image, "r+");
    try {
      const size = fs.fstatSync(fd).size;
      for (let i = 0; i < 3; i++) {
        const block = Buffer.alloc(64 * 1024, r.u32() & 0xff);
        for (let o = 0; o < block.length; o += 512) block.writeUInt32LE(r.u32(), o);
        fs.writeSync(fd, block, 0, block.length, (r.u32() % Math.floor(size / 4096)) * 4096);
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.writeFileSync(path.join(this.src, "etc/conf.d", `unit${r.u32() % 300}.conf`), `changed in round ${this.round}\n`);
    fs.mkdirSync(path.join(this.src, "var/spool"), { recursive: true });
    fs.writeFileSync(path.join(this.src, "var/spool", `job${this.round}`), Buffer.alloc(1000 + (r.u32() % 50_000), this.round & 0xff));
    fs.rmSync(path.join(this.src, "etc/conf.d", `unit${r.u32() % 300}.conf`), { force: true });
    const b = Buffer.allocUnsafe(bulk);
    for (let o = 0; o + 4 <= bulk; o += 4) b.writeUInt32LE(r.u32(), o);
    if (bulk) fs.writeFileSync(path.join(this.src, "var/spool/bulk.bin"), b);
  }

  /** What a backup of the source now restores to. */
  describeSource(): Expected {
    return { tree: describeTree(this.src), imageSha: sha256(this.image) };
  }

  random(): number {
    return this.prng.u32() / 2 ** 32;
  }

  /**
   * Runs the CLI (in `netns` if given); SIGKILLed `killAfterMs` after the spawn when given, or
   * by strace on entering the call `killAt` names (the call itself is not made).
   */
  async gorde(args: string[], env: Record<string, string> = {}, opts: { killAfterMs?: number; netns?: string; kill?: Promise<unknown>; killAt?: CallPoint } = {}): Promise<Run> {
    const [cmd, argv] = gordeCommand(args, opts.netns);
    const at = opts.killAt;
    if (!at) return this.spawn(cmd, argv, env, opts);
    const traced = ["-f", "-qq", "-o", "/dev/null", "-e", `trace=${at.syscall}`, "-e", `inject=${at.syscall}:signal=KILL:when=${at.nth}`, cmd, ...argv];
    const r = await this.spawn("strace", traced, env, opts);
    // strace ends as its tracee did: by SIGKILL when the injection came.
    return { ...r, killed: r.killed || r.signal === "SIGKILL" };
  }

  /** Runs `args` (which must succeed) under strace: the changes it made under `under`, the points a later run can be killed at. */
  async callPoints(repo: Repo, args: string[], under: string): Promise<CallPoint[]> {
    const log = path.join(this.root, "calls.strace");
    const [cmd, argv] = gordeCommand(args, repo.netns);
    const r = await this.spawn("strace", ["-f", "-qq", "-s", "4096", "-o", log, "-e", `trace=${CHANGING_CALLS.join(",")}`, cmd, ...argv], repo.env);
    check(r.code === 0, `gorde ${args.join(" ")} failed under strace (${r.code ?? r.signal}): ${r.err.trim()}`);
    const points = parseCallPoints(fs.readFileSync(log, "utf8"), under);
    fs.rmSync(log);
    check(points.length > 0, `gorde ${args.join(" ")} changed nothing under ${under}`);
    return points;
  }

  spawn(cmd: string, argv: string[], env: Record<string, string>, opts: { killAfterMs?: number; kill?: Promise<unknown> } = {}): Promise<Run> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const childEnv: NodeJS.ProcessEnv = { ...process.env, NODE_COMPILE_CACHE: this.compileCache, ...env };
      const child = spawn(cmd, argv, { env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
      this.children.add(child);
      let out = "";
      let err = "";
      let killed = false;
      child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
      child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
      const kill = (): void => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        killed = true;
        child.kill("SIGKILL");
      };
      const killer = opts.killAfterMs === undefined ? undefined : setTimeout(kill, Math.max(0, opts.killAfterMs));
      void opts.kill?.then(kill);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, CHILD_TIMEOUT_MS);
      child.on("error", reject);
      child.on("close", (code, signal) => {
        this.children.delete(child);
        clearTimeout(timer);
        clearTimeout(killer);
        if (timedOut) reject(new Failure(`${path.basename(cmd)} ${argv.slice(1).join(" ")} hung: killed after ${CHILD_TIMEOUT_MS / 1000} s; its errors: ${err.trim()}`));
        else resolve({ code, signal, out, err, ms: performance.now() - started, killed });
      });
    });
  }

  /** A command that must succeed. */
  async ok(repo: Repo, args: string[]): Promise<Run> {
    const r = await this.gorde(args, repo.env, { netns: repo.netns });
    check(r.code === 0, `gorde ${args.join(" ")} failed (${r.code ?? r.signal}): ${r.err.trim()}`);
    return r;
  }

  backupArgs(repo: Repo, time: string, extra: string[] = []): string[] {
    return ["backup", repo.url, "host/fault", `disk.img=${this.image}`, `data.tree=${this.src}`, "--time", time, "--json", ...extra];
  }

  /** A backup that must succeed; its snapshot is recorded as finished. */
  async goodBackup(repo: Repo, extra: string[] = []): Promise<string> {
    const r = await this.ok(repo, this.backupArgs(repo, this.nextTime(), extra));
    const { snapshot } = JSON.parse(r.out) as { snapshot: string };
    this.recordFinished(repo, snapshot, this.describeSource());
    return snapshot;
  }

  recordFinished(repo: Repo, snapshot: string, want: Expected): void {
    this.finished(repo).set(snapshot, want);
    this.made.set(snapshot, want);
  }

  finished(repo: Repo): Map<string, Expected> {
    let m = this.expected.get(repo.name);
    if (!m) this.expected.set(repo.name, (m = new Map<string, Expected>()));
    return m;
  }

  async snapshots(repo: Repo): Promise<{ snapshot: string; finished: boolean }[]> {
    const r = await this.ok(repo, ["snapshots", repo.url, "--json"]);
    return JSON.parse(r.out) as { snapshot: string; finished: boolean }[];
  }

  /**
   * The checks after every fault: the listing reads, every snapshot known finished is listed
   * finished and restores bit-exact, verify accepts the datastore. `gone` names snapshots the
   * fault was allowed to remove (a prune's or a forget's), dropped from the expected set.
   */
  async healthy(repo: Repo, opts: { gone?: Set<string> } = {}): Promise<void> {
    const listed = new Map((await this.snapshots(repo)).map((s) => [s.snapshot, s.finished]));
    const expected = this.finished(repo);
    for (const name of [...expected.keys()]) {
      if (!listed.has(name) && opts.gone?.has(name)) {
        expected.delete(name);
        continue;
      }
      check(listed.get(name) === true, `${repo.name}: snapshot ${name} was finished and is now ${listed.has(name) ? "listed unfinished" : "gone"}`);
    }
    const v = await this.gorde(["verify", repo.url, "--json"], repo.env, { netns: repo.netns });
    check(v.code === 0, `${repo.name}: verify fails after the fault (${v.code ?? v.signal}): ${v.err.trim()}`);
    for (const [snapshot, want] of expected) await this.restoresAs(repo, snapshot, want);
  }

  /** One snapshot restored and compared; throws what differs, or why it did not restore. */
  healthyOne(repo: Repo, snapshot: string, want: Expected): Promise<void> {
    return this.restoresAs(repo, snapshot, want);
  }

  private async restoresAs(repo: Repo, snapshot: string, want: Expected): Promise<void> {
    const n = this.restores++;
    const img = path.join(this.root, `restored-${n}.img`);
    const tree = path.join(this.root, `restored-${n}.tree`);
    try {
      const [a, b] = await Promise.all([
        this.gorde(["restore", repo.url, snapshot, "disk.img", img], repo.env, { netns: repo.netns }),
        this.gorde(["restore", repo.url, snapshot, "data.tree", tree], repo.env, { netns: repo.netns }),
      ]);
      check(a.code === 0 && b.code === 0, `${repo.name}: ${snapshot} does not restore: ${a.err.trim()} ${b.err.trim()}`);
      check(sha256(img) === want.imageSha, `${repo.name}: ${snapshot}'s image restores with other bytes`);
      const got = describeTree(tree);
      check(got.size === want.tree.size, `${repo.name}: ${snapshot}'s tree restores ${got.size} entries, not ${want.tree.size}`);
      for (const [p, d] of want.tree) check(got.get(p) === d, `${repo.name}: ${snapshot}'s tree restores ${p} differently`);
    } finally {
      fs.rmSync(img, { force: true });
      fs.rmSync(tree, { recursive: true, force: true });
    }
  }

  /** The cleanup a user runs after faults: prune keeps the newest `keep`, GC with no grace; nothing may be left of what the faults wrote. */
  async cleanUp(repo: Repo, group: string, keep: number, datastoreDir?: string): Promise<void> {
    const p = await this.ok(repo, ["prune", repo.url, group, "--keep-last", String(keep), "--json"]);
    const removed = new Set((JSON.parse(p.out) as { snapshot: string; action: string }[]).filter((a) => a.action === "remove").map((a) => a.snapshot));
    await this.ok(repo, ["gc", repo.url, "--cutoff", "0"]);
    const left = (await this.snapshots(repo)).filter((s) => !s.finished);
    check(left.length === 0, `${repo.name}: unfinished snapshots left after prune: ${left.map((s) => s.snapshot).join(", ")}`);
    if (datastoreDir) {
      const stray = leftovers(datastoreDir);
      check(stray.length === 0, `${repo.name}: files the faults left after prune and GC: ${stray.slice(0, 5).join(", ")}`);
    }
    await this.healthy(repo, { gone: removed });
  }

  /** A server on a fixed port and state, so it can be killed and started again as the same server. */
  async startServer(name: string, opts: { netns?: string; host?: string; port?: number; storeDir?: string } = {}): Promise<ManagedServer> {
    const dir = path.join(this.root, name);
    const port = opts.port ?? (await freePort());
    const storeDir = opts.storeDir ?? path.join(dir, "store");
    const start = (): Promise<ServerProcess> =>
      startServerProcess({ stateDir: path.join(dir, "state"), datastores: { store: storeDir }, adminPassword: ADMIN_PASSWORD, port, netns: opts.netns, host: opts.host, env: { NODE_COMPILE_CACHE: this.compileCache } });
    const server = new ManagedServer(name, storeDir, await start(), start, opts.netns);
    this.servers.add(server);
    return server;
  }

  readonly servers = new Set<ManagedServer>();

  private readonly closers: (() => Promise<void>)[] = [];

  /** Something of the suite's own to stop when it ends (a node it started). */
  onClose(fn: () => Promise<void>): void {
    this.closers.push(fn);
  }

  /** Kills whatever of the suite's processes still runs (by pid, each one it started). */
  async close(): Promise<void> {
    for (const fn of this.closers) await fn().catch(() => undefined);
    for (const c of this.children) c.kill("SIGKILL");
    for (const s of this.servers) await s.process.stop("SIGKILL");
  }
}

export class ManagedServer {
  readonly name: string;
  readonly storeDir: string;
  process: ServerProcess;
  private readonly start: () => Promise<ServerProcess>;
  readonly netns: string | undefined;

  constructor(name: string, storeDir: string, process: ServerProcess, start: () => Promise<ServerProcess>, netns?: string) {
    this.name = name;
    this.storeDir = storeDir;
    this.process = process;
    this.start = start;
    this.netns = netns;
  }

  get repo(): Repo {
    return { name: this.name, url: this.process.url("store"), env: { GORDE_PASSWORD: ADMIN_PASSWORD, GORDE_FINGERPRINT: this.process.fingerprint }, netns: this.netns };
  }

  /** SIGKILL, by its pid, then the same server started again on its port and state. */
  async killAndRestart(): Promise<void> {
    await this.process.stop("SIGKILL");
    this.process = await this.start();
  }
}

/**
 * Temporary and half-removed files in a datastore that prune and GC (with no grace) must
 * have cleaned up. Two kinds GC removes only once they are old, so that it never takes a
 * live one: a snapshot a killed forget left renamed `.removing-*` (an hour) and a backup's
 * registration killed before its rename (a minute); younger ones are not counted.
 */
export function leftovers(datastoreDir: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      const ageMs = (): number => Date.now() - fs.lstatSync(p).mtimeMs;
      if (d.name.startsWith(".removing-")) {
        if (ageMs() > 60 * 60_000) out.push(path.relative(datastoreDir, p));
        continue;
      }
      if (path.basename(dir) === ".running" && d.name.startsWith(".") && ageMs() < 60_000) continue;
      if (/\.tmp(-|$)|\.partial$/.test(d.name)) out.push(path.relative(datastoreDir, p));
      if (d.isDirectory()) visit(p);
    }
  };
  visit(datastoreDir);
  return out;
}

export { MAIN };
