// The fault kinds: each kills (or starves of space, or cuts off) one operation at random
// points, then runs the lab's checks and the operation once more, which must succeed.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Prng } from "../../bench/prng.ts";
import { CLIENT_KEEP_ALIVE } from "../../src/host/api-host.ts";
import { ADMIN_PASSWORD, type CallPoint, type FaultLab, sha256, type ManagedServer, type Repo, type Run, check } from "./lab.ts";
import { drill, guestRestore } from "./node-kinds.ts";

export interface KindResult {
  kind: string;
  /** faults made */
  faults: number;
  /** of them, the operation died before it ended by itself (the rest had finished) */
  midway: number;
  /** outcomes beside death, counted by kind ("failed cleanly: datastore full", …) */
  outcomes: Map<string, number>;
  ms: number;
}

export interface KindContext {
  lab: FaultLab;
  faults: number;
  log(line: string): void;
  /** median time of a CLI start that does nothing: kill points are spread past it */
  startupMs: number;
  /** whether strace can kill an operation at a chosen call (else GC and prune are killed at random times) */
  traceable: boolean;
}

export interface Kind {
  /** what --kinds names it by */
  id: string;
  name: string;
  /** why it cannot run here, or undefined */
  unavailable?(): string | undefined;
  run(ctx: KindContext, result: KindResult): Promise<void>;
}

/** A point to kill at: one in ten during start-up, the rest spread over the work (and a little past its usual end). */
function killPoint(ctx: KindContext, workMs: number): number {
  const r = ctx.lab.random();
  if (r < 0.1) return (r / 0.1) * ctx.startupMs;
  return ctx.startupMs + ctx.lab.random() * Math.max(50, workMs - ctx.startupMs) * 1.1;
}

function count(result: KindResult, outcome: string): void {
  result.outcomes.set(outcome, (result.outcomes.get(outcome) ?? 0) + 1);
}

/** A run that was killed, or ended by itself with success: anything else is a failure. */
function killedOrDone(r: Run, what: string, result: KindResult): boolean {
  result.faults++;
  if (r.killed && r.code === null) {
    result.midway++;
    return false;
  }
  check(r.code === 0, `${what} failed by itself (${r.code ?? r.signal}): ${r.err.trim()}`);
  count(result, "finished before the kill");
  return true;
}

/**
 * Where the kills of a short operation go. GC and prune spend a few tens of milliseconds on
 * the datastore after a start of several hundred, less than the start's own jitter, so a
 * kill at a random time mostly lands before their work or after their end. With strace the
 * kill comes on entering one of the changes (atime set, unlink, rename, rmdir, mkdir) a
 * traced run of the same operation made in the datastore, each as likely, so the kills land
 * inside the work, between its changes; without strace, at a random time of the run.
 */
type KillPlan = { calls: CallPoint[] } | { ms: number };

async function killPlan(ctx: KindContext, repo: Repo, args: string[]): Promise<KillPlan> {
  if (ctx.traceable) {
    const calls = await ctx.lab.callPoints(repo, args, repo.url);
    const bySyscall = new Map<string, number>();
    for (const c of calls) bySyscall.set(c.syscall, (bySyscall.get(c.syscall) ?? 0) + 1);
    ctx.log(`  ${calls.length} changes traced to kill at: ${[...bySyscall].map(([k, n]) => `${k} ${n}`).join(", ")}`);
    return { calls };
  }
  return { ms: await timed(() => ctx.lab.ok(repo, args)) };
}

/** `args` run and SIGKILLed at a random point of its plan; what came of it counted and logged. */
async function killedRun(ctx: KindContext, result: KindResult, what: string, args: string[], plan: KillPlan): Promise<Run> {
  let r: Run;
  let where: string;
  if ("calls" in plan) {
    const at = plan.calls[Math.floor(ctx.lab.random() * plan.calls.length)]!;
    r = await ctx.lab.gorde(args, {}, { killAt: at });
    where = `${at.syscall} #${at.nth} (traced: ${path.relative(args[1]!, at.path) || "."})`;
  } else {
    const at = killPoint(ctx, plan.ms);
    r = await ctx.lab.gorde(args, {}, { killAfterMs: at });
    where = `${Math.round(at)} ms`;
  }
  killedOrDone(r, what, result);
  ctx.log(`  ${what} #${result.faults}: at ${where} → ${r.killed ? "killed" : "finished"}`);
  return r;
}

async function localRepo(lab: FaultLab, name: string, dir = path.join(lab.root, name)): Promise<Repo> {
  const repo = { name, url: dir, env: {} };
  await lab.ok(repo, ["init", dir]);
  return repo;
}

/** Keeps the number of snapshots (and so the restores of every check) small. */
async function trim(lab: FaultLab, repo: Repo, keep = 3, group = "host/fault"): Promise<void> {
  const p = await lab.ok(repo, ["prune", repo.url, group, "--keep-last", String(keep), "--json"]);
  for (const a of JSON.parse(p.out) as { snapshot: string; action: string }[]) if (a.action === "remove") lab.finished(repo).delete(a.snapshot);
}

/**
 * The backup after a fault, which must succeed. The server may still hold the dead session
 * (409): for a moment after a kill, and after a cut link until its unanswered ping ends the
 * connection (CLIENT_KEEP_ALIVE: at most one interval plus one timeout after the cut).
 */
async function nextBackup(lab: FaultLab, repo: Repo, result: KindResult): Promise<void> {
  const deadline = Date.now() + CLIENT_KEEP_ALIVE.everyMs + CLIENT_KEEP_ALIVE.timeoutMs;
  for (;;) {
    try {
      await lab.goodBackup(repo);
      return;
    } catch (e) {
      if (!/another backup of .* is running/.test((e as Error).message) || Date.now() > deadline) throw e;
      count(result, "next backup waited for the server to end the dead session");
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A backup SIGKILLed at a random point; what finished before the kill is expected to restore. */
async function killedBackup(ctx: KindContext, repo: Repo, workMs: number, result: KindResult, onKill?: () => Promise<void>): Promise<void> {
  const { lab } = ctx;
  lab.modify();
  const want = lab.describeSource();
  const at = killPoint(ctx, workMs);
  let r: Run;
  if (onKill) {
    // The fault is another process's death (the server's): the client goes on and must end by itself.
    const kill = new Promise<void>((resolve) => setTimeout(resolve, at)).then(onKill);
    r = await lab.gorde(lab.backupArgs(repo, lab.nextTime()), repo.env, { netns: repo.netns });
    await kill;
    result.faults++;
    if (r.code === 0) count(result, "finished before the kill");
    else {
      result.midway++;
      const lines = r.err.trim().split("\n");
      check(lines.length === 1, `the client of a killed server said more than one line: ${r.err.trim()}`);
      count(result, "client failed with one line");
    }
  } else {
    r = await lab.gorde(lab.backupArgs(repo, lab.nextTime()), repo.env, { killAfterMs: at, netns: repo.netns });
    killedOrDone(r, "the backup", result);
  }
  if (r.code === 0) lab.recordFinished(repo, (JSON.parse(r.out) as { snapshot: string }).snapshot, want);
  ctx.log(`  ${result.kind} #${result.faults}: at ${Math.round(at)} ms → ${r.code === 0 ? "finished" : r.killed ? "killed" : "failed"}`);
  await lab.healthy(repo);
  await nextBackup(lab, repo, result);
  await trim(lab, repo, 2);
}

/** How long an incremental backup takes (the killed ones are incremental too): the faster of two, after a first. */
async function incrementalMs(lab: FaultLab, repo: Repo): Promise<number> {
  if (!(await lab.snapshots(repo)).some((s) => s.finished)) await lab.goodBackup(repo);
  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    lab.modify();
    times.push(await timed(() => lab.goodBackup(repo)));
  }
  return Math.min(...times);
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

const localBackup: Kind = {
  id: "local-backup",
  name: "local backup",
  async run(ctx, result) {
    const repo = await localRepo(ctx.lab, "local-backup");
    const workMs = await incrementalMs(ctx.lab, repo);
    for (let i = 0; i < ctx.faults; i++) await killedBackup(ctx, repo, workMs, result);
    await ctx.lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

let mainServer: ManagedServer | undefined;
async function server(lab: FaultLab): Promise<ManagedServer> {
  mainServer ??= await lab.startServer("main");
  return mainServer;
}

const remoteBackup: Kind = {
  id: "remote-backup",
  name: "remote backup (client killed)",
  async run(ctx, result) {
    const srv = await server(ctx.lab);
    const workMs = await incrementalMs(ctx.lab, srv.repo);
    for (let i = 0; i < ctx.faults; i++) await killedBackup(ctx, srv.repo, workMs, result);
    await ctx.lab.cleanUp(srv.repo, "host/fault", 2, srv.storeDir);
  },
};

const serverRestart: Kind = {
  id: "server-restart",
  name: "server killed mid-backup, restarted",
  async run(ctx, result) {
    const srv = await server(ctx.lab);
    const workMs = await incrementalMs(ctx.lab, srv.repo);
    for (let i = 0; i < ctx.faults; i++) await killedBackup(ctx, srv.repo, workMs, result, () => srv.killAndRestart());
    await ctx.lab.cleanUp(srv.repo, "host/fault", 2, srv.storeDir);
  },
};

/**
 * Unique small files and a 4 MiB image in 64 KiB chunks (unique blocks, a block repeated,
 * zeros), backed up into host/garbage and forgotten: some seventy chunks for GC to remove.
 */
async function makeGarbage(lab: FaultLab, repo: Repo, round: number): Promise<void> {
  const dir = path.join(lab.root, "garbage");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir);
  const prng = new Prng(1000 + round);
  const fill = (b: Buffer): Buffer => {
    for (let o = 0; o + 4 <= b.length; o += 4) b.writeUInt32LE(prng.u32(), o);
    return b;
  };
  for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(dir, `f${i}`), fill(Buffer.allocUnsafe(4096 + (i % 7) * 1024)));
  const block = 64 * 1024;
  const repeated = fill(Buffer.allocUnsafe(block));
  const image = Buffer.alloc(64 * block);
  for (let i = 0; i < 64; i++) {
    if (i % 8 === 7) continue; // zeros
    if (i % 5 === 4) repeated.copy(image, i * block);
    else fill(image.subarray(i * block, (i + 1) * block));
  }
  const img = path.join(lab.root, "garbage.img");
  fs.writeFileSync(img, image);
  const r = await lab.ok(repo, ["backup", repo.url, "host/garbage", `g.tree=${dir}`, `g.img=${img}`, "--chunk-size", String(block), "--time", lab.nextTime(), "--json"]);
  await lab.ok(repo, ["forget", repo.url, (JSON.parse(r.out) as { snapshot: string }).snapshot]);
}

const gc: Kind = {
  id: "gc",
  name: "GC",
  async run(ctx, result) {
    const { lab } = ctx;
    const repo = await localRepo(lab, "gc");
    await lab.goodBackup(repo);
    await makeGarbage(lab, repo, 0);
    const plan = await killPlan(ctx, repo, ["gc", repo.url, "--cutoff", "0"]);
    for (let i = 0; i < ctx.faults; i++) {
      lab.modify();
      await lab.goodBackup(repo);
      await makeGarbage(lab, repo, i + 1);
      await killedRun(ctx, result, "GC", ["gc", repo.url, "--cutoff", "0"], plan);
      await lab.healthy(repo);
      await lab.ok(repo, ["gc", repo.url, "--cutoff", "0"]);
      await trim(lab, repo);
    }
    await lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

const prune: Kind = {
  id: "prune",
  name: "prune",
  async run(ctx, result) {
    const { lab } = ctx;
    const repo = await localRepo(lab, "prune");
    // Measured (or traced) as every fault's prune: two new snapshots over the two kept, two removed.
    for (let i = 0; i < 4; i++) {
      lab.modify();
      await lab.goodBackup(repo);
    }
    const plan = await killPlan(ctx, repo, ["prune", repo.url, "host/fault", "--keep-last", "2"]);
    for (const s of [...lab.finished(repo).keys()].sort().slice(0, -2)) lab.finished(repo).delete(s);
    for (let i = 0; i < ctx.faults; i++) {
      lab.modify();
      await lab.goodBackup(repo);
      lab.modify();
      await lab.goodBackup(repo);
      const args = ["prune", repo.url, "host/fault", "--keep-last", "2"];
      const dry = JSON.parse((await lab.ok(repo, [...args, "--dry-run", "--json"])).out) as { snapshot: string; action: string }[];
      const gone = new Set(dry.filter((a) => a.action === "remove").map((a) => a.snapshot));
      await killedRun(ctx, result, "prune", args, plan);
      await lab.healthy(repo, { gone });
      await lab.ok(repo, args);
      await lab.healthy(repo, { gone });
    }
    await lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

const verify: Kind = {
  id: "verify",
  name: "verify",
  async run(ctx, result) {
    const { lab } = ctx;
    const repo = await localRepo(lab, "verify");
    for (let i = 0; i < 3; i++) {
      lab.modify();
      await lab.goodBackup(repo);
    }
    const workMs = await timed(() => lab.ok(repo, ["verify", repo.url]));
    for (let i = 0; i < ctx.faults; i++) {
      await killedRun(ctx, result, "verify", ["verify", repo.url], { ms: workMs });
      await lab.healthy(repo);
      if (i % 4 === 3) {
        lab.modify();
        await lab.goodBackup(repo);
        await trim(lab, repo);
      }
    }
    await lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

/** The puller is the server that runs the sync: it is killed mid-pull and started again. */
const sync: Kind = {
  id: "sync",
  name: "sync (pulling server killed)",
  async run(ctx, result) {
    const { lab } = ctx;
    const main = await server(lab);
    const copy = await lab.startServer("copy");
    const copyServer = copy.repo.url.replace(/\/store$/, "");
    await lab.ok({ ...copy.repo, env: { ...copy.repo.env, GORDE_REMOTE_PASSWORD: ADMIN_PASSWORD } }, ["remote", "add", copyServer, "main", "--url", main.repo.url, "--remote-fingerprint", main.process.fingerprint]);
    const syncArgs = (): string[] => ["sync", copy.repo.url, "main", "--group", "host/fault"];
    /** What the copy holds finished must be what main holds: its expected set is main's, for what it lists finished. */
    const copyHealthy = async (): Promise<void> => {
      const mine = lab.finished(copy.repo);
      mine.clear();
      for (const s of await lab.snapshots(copy.repo)) {
        if (!s.finished) continue;
        const w = lab.made.get(s.snapshot);
        check(w, `copy: ${s.snapshot} is finished on the copy but no backup of main finished it`);
        mine.set(s.snapshot, w);
      }
      await lab.healthy(copy.repo);
    };
    lab.modify();
    await lab.goodBackup(main.repo);
    await trim(lab, main.repo);
    const workMs = await timed(() => lab.ok(copy.repo, syncArgs()));
    for (let i = 0; i < ctx.faults; i++) {
      lab.modify();
      await lab.goodBackup(main.repo);
      await trim(lab, main.repo);
      // The copy loses its newest snapshots and their chunks: the sync has them to pull again.
      const held = (await lab.snapshots(copy.repo)).map((s) => s.snapshot).sort();
      for (const s of held.slice(-2)) await lab.ok(copy.repo, ["forget", copy.repo.url, s]);
      await lab.ok(copy.repo, ["gc", copy.repo.url, "--cutoff", "0"]);
      const at = killPoint(ctx, workMs);
      const kill = new Promise<void>((resolve) => setTimeout(resolve, at)).then(() => copy.killAndRestart());
      const r = await lab.gorde(syncArgs(), copy.repo.env);
      await kill;
      result.faults++;
      if (r.code === 0) count(result, "finished before the kill");
      else {
        result.midway++;
        // The task's log comes first; the client's own word is its last line.
        check(/^gorde sync: \S.*[.)]$/.test(r.err.trim().split("\n").at(-1)!), `sync's client did not end with one sentence: ${r.err.trim()}`);
      }
      ctx.log(`  sync #${result.faults}: server killed at ${Math.round(at)} ms → ${r.code === 0 ? "finished" : "cut"}`);
      await copyHealthy();
      await lab.ok(copy.repo, syncArgs());
      await copyHealthy();
      const onMain = [...lab.finished(main.repo).keys()].sort();
      const onCopy = new Set((await lab.snapshots(copy.repo)).filter((s) => s.finished).map((s) => s.snapshot));
      check(
        onMain.every((s) => onCopy.has(s)),
        `copy: after a full sync it lacks ${onMain.filter((s) => !onCopy.has(s)).join(", ")}`,
      );
    }
    await lab.cleanUp(copy.repo, "host/fault", 2, copy.storeDir);
  },
};

/** Every chunk file's times set two days back: GC sees them all as old enough to go unless marked or touched. */
function ageChunks(datastoreDir: string): void {
  const old = new Date(Date.now() - 2 * 86_400_000);
  const visit = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) visit(p);
      else if (/^[0-9a-f]{64}$/.test(d.name)) fs.utimesSync(p, old, old);
    }
  };
  visit(path.join(datastoreDir, ".chunks"));
}

/**
 * GC beside a backup that reuses the chunks GC is about to remove (PBS's remove-then-touch
 * race): a snapshot is forgotten, every chunk aged, then a backup of the same data and a GC
 * with no grace start together, GC a random moment later. The backup's snapshot must
 * restore bit-exact: every chunk it reused must still be there.
 */
const gcBesideBackup: Kind = {
  id: "gc-race",
  name: "GC beside a backup reusing its garbage",
  async run(ctx, result) {
    const { lab } = ctx;
    const repo = await localRepo(lab, "gc-race");
    await lab.goodBackup(repo);
    for (let i = 0; i < ctx.faults; i++) {
      lab.modify(1024 * 1024);
      const forgotten = await lab.goodBackup(repo);
      await lab.ok(repo, ["forget", repo.url, forgotten]);
      lab.finished(repo).delete(forgotten);
      ageChunks(repo.url);
      const want = lab.describeSource();
      const delay = lab.random() * (ctx.startupMs + 300);
      const [b, g] = await Promise.all([
        lab.gorde(lab.backupArgs(repo, lab.nextTime())),
        new Promise((r) => setTimeout(r, delay)).then(() => lab.gorde(["gc", repo.url, "--cutoff", "0", "--json"])),
      ]);
      result.faults++;
      check(b.code === 0, `the backup beside GC failed: ${b.err.trim()}`);
      check(g.code === 0, `GC beside the backup failed: ${g.err.trim()}`);
      lab.recordFinished(repo, (JSON.parse(b.out) as { snapshot: string }).snapshot, want);
      const removed = (JSON.parse(g.out) as { removedChunks: number }).removedChunks;
      count(result, removed > 0 ? "GC removed chunks beside the backup" : "GC removed nothing (the backup had touched all)");
      ctx.log(`  ${result.kind} #${result.faults}: GC ${Math.round(delay)} ms after the backup, removed ${removed} chunks`);
      await lab.healthy(repo);
      await trim(lab, repo, 2);
    }
    await lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

function filesUnder(dir: string, match: (name: string) => boolean): string[] {
  const out: string[] = [];
  const visit = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else if (match(e.name)) out.push(p);
    }
  };
  visit(dir);
  return out.sort();
}

/** One random change to a file: a bit flipped, the file cut short, or its bytes swapped with another's of its kind. */
function corrupt(lab: FaultLab, file: string, others: string[]): string {
  const data = fs.readFileSync(file);
  const r = lab.random();
  if (r < 0.5 || data.length < 2) {
    const at = Math.floor(lab.random() * data.length);
    data[at]! ^= 1 << Math.floor(lab.random() * 8);
    fs.writeFileSync(file, data);
    return `bit flipped at byte ${at}`;
  }
  const other = others.filter((o) => o !== file && !fs.readFileSync(o).equals(data))[Math.floor(lab.random() * others.length)];
  if (r < 0.8 || !other) {
    const len = Math.floor(lab.random() * data.length);
    fs.truncateSync(file, len);
    return `cut to ${len} of ${data.length} bytes`;
  }
  fs.writeFileSync(file, fs.readFileSync(other));
  return `bytes swapped with ${path.basename(other).slice(0, 12)}`;
}

/**
 * Corruption: a chunk, an index or a manifest of the datastore changed at random. Every
 * restore either gives back exactly what was backed up or fails with one sentence; verify
 * fails and names every snapshot that no longer restores; a backup of the same data then
 * stores the bad chunks again (what it heals no longer fails verify), and the snapshots
 * still damaged are forgotten so that the next round starts from a sound datastore.
 */
const corruption: Kind = {
  id: "corruption",
  name: "corruption (bit flips, cuts, swaps)",
  async run(ctx, result) {
    const { lab } = ctx;
    const repo = await localRepo(lab, "corruption");
    for (let i = 0; i < 3; i++) {
      lab.modify();
      await lab.goodBackup(repo);
    }
    for (let i = 0; i < ctx.faults; i++) {
      // GC first: every chunk left is one a snapshot uses, so every change to one is damage.
      await lab.ok(repo, ["gc", repo.url, "--cutoff", "0"]);
      const chunks = filesUnder(path.join(repo.url, ".chunks"), (n) => /^[0-9a-f]{64}$/.test(n));
      const indexes = filesUnder(path.join(repo.url, "host"), (n) => /\.[fd]idx$/.test(n));
      const manifests = filesUnder(path.join(repo.url, "host"), (n) => n === "manifest.json");
      const r = lab.random();
      const [what, pool] = r < 0.5 ? ["chunk", chunks] : r < 0.75 ? ["index", indexes] : ["manifest", manifests];
      const file = pool[Math.floor(lab.random() * pool.length)]!;
      const how = corrupt(lab, file, pool);
      result.faults++;
      // Every snapshot: bit-exact, or refused in one sentence.
      const broken = new Set<string>();
      for (const [snapshot, want] of lab.finished(repo)) {
        try {
          await lab.healthyOne(repo, snapshot, want);
        } catch (e) {
          const m = (e as Error).message;
          check(!/restores with other bytes|restores .* differently|restores \d+ entries/.test(m), `${what} ${how}: a SILENTLY WRONG restore: ${m}`);
          broken.add(snapshot);
        }
      }
      const v = await lab.gorde(["verify", repo.url, "--json"]);
      const named = new Set((JSON.parse(v.out || '{"snapshots": []}') as { snapshots: { snapshot: string; state: string }[] }).snapshots.filter((s) => s.state === "failed").map((s) => s.snapshot));
      for (const b of broken) check(named.has(b), `${what} ${how}: ${b} no longer restores, but verify does not name it (${v.err.trim()})`);
      if (what !== "manifest") check(v.code !== 0, `${what} ${how}: verify did not find the damage`);
      count(result, v.code !== 0 ? `${what}: verify found it` : `${what}: harmless (an unprotected field)`);
      // The next backup of the same data stores the chunks verify moved aside again.
      await lab.goodBackup(repo);
      const again = await lab.gorde(["verify", repo.url, "--json"]);
      const still = new Set((JSON.parse(again.out) as { snapshots: { snapshot: string; state: string }[] }).snapshots.filter((s) => s.state === "failed").map((s) => s.snapshot));
      const healed = [...named].filter((n) => !still.has(n));
      if (healed.length) count(result, "healed by the next backup");
      ctx.log(`  corruption #${result.faults}: ${what} ${how} → ${named.size} snapshot(s) named by verify, ${broken.size} no longer restored, ${healed.length} healed by the next backup`);
      for (const s of still) {
        await lab.ok(repo, ["forget", repo.url, s]);
        lab.finished(repo).delete(s);
      }
      await lab.healthy(repo);
      await trim(lab, repo, 3);
      lab.modify();
    }
    await lab.cleanUp(repo, "host/fault", 2, repo.url);
  },
};

/** Whether this process may mount a tmpfs that nobody else sees (run.ts puts the suite in a mount namespace of its own). */
function tmpfsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "a small tmpfs needs root";
  if (process.env.GORDE_FAULTS_MOUNT_NS !== "1") return "the suite is not in a mount namespace of its own (run.ts makes one with unshare -m)";
  return undefined;
}

const TMPFS_MIB = 48;
/** New data of each ENOSPC backup and of each upload that is cut: 6 MiB. */
const BULK = 6 * 1024 * 1024;
/** Uploads whose link is cut are slowed to this rate, so that they last long enough to be cut. */
const CUT_RATE = "4M";
/** Link cuts are slow (a client needs up to 25 s to give up): at most this many of each kind. */
const MAX_CUTS = 8;

/** Fills the file system of `dir` so that `free` bytes are left (about: the file system rounds to pages). */
function leaveFree(dir: string, free: number): string {
  const filler = path.join(dir, "filler");
  fs.rmSync(filler, { force: true });
  const st = fs.statfsSync(dir);
  const avail = st.bavail * st.bsize;
  const size = Math.max(0, avail - free);
  if (size > 0) execFileSync("fallocate", ["-l", String(size), filler]);
  return filler;
}

/** A datastore on a small tmpfs, a backup with a random amount of space left: it succeeds, or fails with one sentence. */
function enospc(remote: boolean): Kind {
  return {
    id: remote ? "enospc-server" : "enospc-local",
    name: remote ? "ENOSPC, server's datastore" : "ENOSPC, local datastore",
    unavailable: tmpfsUnavailable,
    async run(ctx, result) {
      const { lab } = ctx;
      const mnt = path.join(lab.root, remote ? "small-remote" : "small-local");
      fs.mkdirSync(mnt, { recursive: true });
      execFileSync("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_MIB}m`, "tmpfs", mnt]);
      const space = path.join(mnt, "space");
      fs.mkdirSync(space);
      let srv: ManagedServer | undefined;
      try {
        let repo: Repo;
        if (remote) {
          srv = await lab.startServer("small-server", { storeDir: path.join(mnt, "store") });
          repo = srv.repo;
        } else repo = await localRepo(lab, "small-local", path.join(mnt, "store"));
        await lab.goodBackup(repo);
        for (let i = 0; i < ctx.faults; i++) {
          lab.modify(BULK);
          // Up to 14 MiB left: the 6 MiB of new data, compressed and chunked, fits or not, or in part.
          const free = Math.floor(lab.random() * 14 * 1024 * 1024);
          const filler = leaveFree(space, free);
          const want = lab.describeSource();
          const r = await lab.gorde(lab.backupArgs(repo, lab.nextTime()), repo.env);
          result.faults++;
          fs.rmSync(filler, { force: true });
          if (r.code === 0) {
            count(result, "fitted");
            lab.recordFinished(repo, (JSON.parse(r.out) as { snapshot: string }).snapshot, want);
          } else {
            result.midway++;
            const err = r.err.trim();
            check(err.split("\n").length === 1, `a backup out of space said more than one line: ${err}`);
            check(/full|space/.test(err), `a backup out of space does not say so: ${err}`);
            count(result, "failed with one sentence");
          }
          ctx.log(`  ${result.kind} #${result.faults}: ${Math.round(free / 1024)} KiB free → ${r.code === 0 ? "fitted" : r.err.trim()}`);
          await lab.healthy(repo);
          await nextBackup(lab, repo, result);
          await trim(lab, repo, 2);
          await lab.ok(repo, ["gc", repo.url, "--cutoff", "0"]);
        }
        await lab.cleanUp(repo, "host/fault", 2, remote ? srv!.storeDir : repo.url);
      } finally {
        if (srv) {
          await srv.process.stop("SIGKILL");
          lab.servers.delete(srv);
        }
        spawnSync("umount", ["-l", mnt]);
      }
    },
  };
}

/** The link between a client's namespace and the server's, and the server inside its own. */
interface LinkLab {
  server: ManagedServer;
  repo: Repo;
  cut(): void;
  heal(): void;
  close(): void;
}

const NS_PREFIX = "gordefault";

function ip(args: string[]): void {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")} failed: ${r.stderr.trim()}`);
}

function linkUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "network namespaces need root";
  if (spawnSync("ip", ["-V"]).error || spawnSync("nsenter", ["--version"]).error) return "ip (iproute2) or nsenter (util-linux) is missing";
  return undefined;
}

/**
 * Two namespaces joined by one veth pair, 10.231.9.1 (server) and .2 (client), no default
 * route: this process sends nothing to them; clients run inside the client's namespace.
 */
async function linkLab(lab: FaultLab): Promise<LinkLab> {
  for (const l of spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.split("\n")) {
    const name = l.split(" ")[0] ?? "";
    const pid = new RegExp(`^${NS_PREFIX}(\\d+)-`).exec(name)?.[1];
    if (pid && !fs.existsSync(`/proc/${pid}`)) spawnSync("ip", ["netns", "del", name]);
  }
  const srvNs = `${NS_PREFIX}${process.pid}-srv`;
  const cliNs = `${NS_PREFIX}${process.pid}-cli`;
  const close = (): void => {
    spawnSync("ip", ["netns", "del", srvNs]);
    spawnSync("ip", ["netns", "del", cliNs]);
  };
  try {
    for (const ns of [srvNs, cliNs]) {
      ip(["netns", "add", ns]);
      ip(["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(["-n", srvNs, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cliNs]);
    ip(["-n", srvNs, "addr", "add", "10.231.9.1/24", "dev", "eth0"]);
    ip(["-n", cliNs, "addr", "add", "10.231.9.2/24", "dev", "eth0"]);
    ip(["-n", srvNs, "link", "set", "eth0", "up"]);
    ip(["-n", cliNs, "link", "set", "eth0", "up"]);
    const server = await lab.startServer("linked", { netns: srvNs, host: "10.231.9.1", port: 8007 });
    return {
      server,
      repo: { ...server.repo, name: "linked", netns: cliNs },
      cut: () => ip(["-n", cliNs, "link", "set", "eth0", "down"]),
      heal: () => ip(["-n", cliNs, "link", "set", "eth0", "up"]),
      close,
    };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * The client's link cut for 1–30 s at a random point of an upload or a restore: the
 * operation finishes (the link came back in time) or fails with one sentence, and nothing
 * it did is visible half-done.
 */
function linkCut(during: "upload" | "restore"): Kind {
  return {
    id: `cut-${during}`,
    name: `link cut mid-${during}`,
    unavailable: linkUnavailable,
    async run(ctx, result) {
      const { lab } = ctx;
      const net = await linkLab(lab);
      try {
        const repo = net.repo;
        await lab.goodBackup(repo);
        lab.modify(BULK);
        const workMs = await timed(() => lab.goodBackup(repo, ["--rate", CUT_RATE]));
        const restoreTarget = path.join(lab.root, "cut-restore.img");
        const newest = (): string => [...lab.finished(repo).keys()].sort().at(-1)!;
        const restoreArgs = (): string[] => ["restore", repo.url, newest(), "disk.img", restoreTarget];
        const restoreMs = await timed(() => lab.ok(repo, restoreArgs()));
        fs.rmSync(restoreTarget);
        for (let i = 0; i < Math.min(ctx.faults, MAX_CUTS); i++) {
          const at = killPoint(ctx, during === "upload" ? workMs : restoreMs);
          const cutMs = 1000 + lab.random() * 29_000;
          let healed: Promise<void> = Promise.resolve();
          const cutter = new Promise<void>((resolve) => setTimeout(resolve, at)).then(() => {
            net.cut();
            healed = new Promise<void>((resolve) => setTimeout(resolve, cutMs)).then(() => net.heal());
          });
          let r: Run;
          let resume: (() => Promise<void>) | undefined;
          if (during === "upload") {
            lab.modify(BULK);
            r = await lab.gorde(lab.backupArgs(repo, lab.nextTime(), ["--rate", CUT_RATE]), repo.env, { netns: repo.netns });
            if (r.code === 0) lab.recordFinished(repo, (JSON.parse(r.out) as { snapshot: string }).snapshot, lab.describeSource());
          } else {
            const snapshot = newest();
            const partial = path.join(lab.root, ".cut-restore.img.gorde-partial");
            const stray = (): string[] => fs.readdirSync(lab.root).filter((n) => n.startsWith(".cut-restore.img.") && n !== ".cut-restore.img.gorde-partial");
            const whole = (what: string): void => check(sha256(restoreTarget) === lab.made.get(snapshot)?.imageSha, `${what} of ${snapshot} that said it worked wrote other bytes`);
            r = await lab.gorde(restoreArgs(), repo.env, { netns: repo.netns });
            if (r.code === 0) whole("a restore");
            else {
              check(!fs.existsSync(restoreTarget), `a restore cut off left its target ${restoreTarget} half-written`);
              // What it restored is kept, and the same restore, once the link is back, goes on from there.
              const kept = fs.existsSync(partial);
              check(kept === /are kept in .*gorde-partial, and the same restore goes on from there\.$/.test(r.err.trim()), `a restore cut off ${kept ? "kept its partial file without saying so" : "said it kept a partial file that is not there"}: ${r.err.trim()}`);
              resume = async () => {
                const again = await lab.gorde([...restoreArgs(), "--json"], repo.env, { netns: repo.netns });
                check(again.code === 0, `the same restore after the link came back failed: ${again.err.trim()}`);
                whole("a resumed restore");
                const resumed = (JSON.parse(again.out) as { resumedBytes?: number }).resumedBytes ?? 0;
                check(!kept || resumed > 0, `the restore after the cut fetched everything again though ${partial} was kept`);
                check(!fs.existsSync(partial), `a resumed restore left ${partial}`);
                count(result, kept ? "the same restore went on from what was kept" : "the same restore started over (nothing was in place)");
              };
            }
            check(stray().length === 0, `a restore cut off left ${stray().join(", ")} beside its target`);
          }
          await cutter;
          await healed;
          await resume?.();
          fs.rmSync(restoreTarget, { force: true });
          result.faults++;
          if (r.code === 0) count(result, "finished (the link came back in time)");
          else {
            result.midway++;
            check(r.err.trim().split("\n").length === 1, `a client cut off said more than one line: ${r.err.trim()}`);
            count(result, "failed with one sentence");
          }
          ctx.log(`  ${result.kind} #${result.faults}: cut at ${Math.round(at)} ms for ${(cutMs / 1000).toFixed(1)} s → ${r.code === 0 ? "finished" : r.err.trim()} (${(r.ms / 1000).toFixed(1)} s)`);
          await lab.healthy(repo);
          await nextBackup(lab, repo, result);
          await trim(lab, repo, 2);
        }
        await lab.cleanUp(repo, "host/fault", 2, net.server.storeDir);
      } finally {
        await net.server.process.stop("SIGKILL");
        lab.servers.delete(net.server);
        net.close();
      }
    },
  };
}

export const KINDS: Kind[] = [
  localBackup,
  remoteBackup,
  serverRestart,
  gc,
  gcBesideBackup,
  prune,
  verify,
  sync,
  guestRestore(server),
  drill(server),
  corruption,
  enospc(false),
  enospc(true),
  linkCut("upload"),
  linkCut("restore"),
];
