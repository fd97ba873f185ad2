// Backups to a gorde server survive a client or a server that dies mid-backup: a killed
// client's session is aborted by the server (nothing of it stays, the group lock is
// released); a killed server restarts on the same state and datastore with the same
// certificate, shows what the dead session left only as unfinished, and prune and gc
// clean that up; a server stopped with SIGTERM aborts its sessions. A backup that dies
// while it finishes leaves its snapshot whole or nothing, never half. Every time the
// client fails with one clear line, older snapshots restore bit-exact and the next
// backup works.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

const MAIN = path.resolve(import.meta.dirname, "../src/cli/main.ts");
const KiB = 1024;
const MiB = 1024 * KiB;
const IMAGE_SIZE = 64 * MiB;
/** 20 regions of 2 MiB random data, one every 3 MiB (at an unaligned offset): 40 MiB in all. */
const REGIONS = 20;
const REGION_STRIDE = 3 * MiB;
const REGION = 2 * MiB;
/** Regions rewritten before each backup that is killed: 16 MiB of new data to upload. */
const CHANGED_REGIONS = 8;
/**
 * The bandwidth limit of the backups that are killed: their uploads take a steady ~1.3 s
 * even on a busy machine, so the kill points land where they are meant to.
 */
const RATE = "12M";
/** Client kill points as fractions of one backup's wall time; 0 is right after the spawn. */
const CLIENT_KILL_POINTS = [0, 0.2, 0.5, 0.8];
/** Server kill points as fractions of one backup session, counted from the session's start. */
const SERVER_KILL_POINTS = [0, 0.4, 0.8];
const ADMIN_PASSWORD = "crash-test-secret";
/** No child process may run longer than this. */
const CHILD_TIMEOUT_MS = 30_000;
/** How long a server may take to abort the session of a client that is gone. */
const ABORT_WAIT_MS = 10_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** performance.now() when the process ended */
  end: number;
}

/** Every child process started here; whatever still runs is killed in `after`. */
const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Set once the temporary directory exists: compiled code cached there makes each run start faster. */
let compileCache: string | undefined;

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // A server that needs the first admin's password gets it only when a test says so.
  delete env.GORDE_ADMIN_PASSWORD;
  if (compileCache) env.NODE_COMPILE_CACHE = compileCache;
  return { ...env, ...extra };
}

/**
 * Runs the CLI with `env` added; with `kill` it is sent SIGKILL that many ms after the
 * spawn, or when that promise resolves. A run past CHILD_TIMEOUT_MS is killed and fails.
 */
function gorde(args: string[], env: Record<string, string>, kill?: number | Promise<void>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = track(spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env: childEnv(env) }));
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    let killer: NodeJS.Timeout | undefined;
    if (kill instanceof Promise) void kill.then(() => child.kill("SIGKILL"));
    else if (kill !== undefined) {
      if (kill <= 0) child.kill("SIGKILL");
      else killer = setTimeout(() => child.kill("SIGKILL"), kill);
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, CHILD_TIMEOUT_MS);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const end = performance.now();
      clearTimeout(timer);
      clearTimeout(killer);
      if (timedOut) reject(new Error(`gorde ${args.join(" ")} did not end within ${CHILD_TIMEOUT_MS} ms: ${stderr}`));
      else resolve({ code, signal, stdout, stderr, ms: end - started, end });
    });
  });
}

/** Both results once both have settled (no process is left running); the first error otherwise. */
async function settled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === "rejected") throw ra.reason;
  if (rb.status === "rejected") throw rb.reason;
  return [ra.value, rb.value];
}

/** A running `gorde server`: its port and fingerprint as it printed them, its log so far. */
interface ServerProcess {
  child: ChildProcess;
  port: number;
  fingerprint: string;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts a server and waits for the lines that name its port and fingerprint. */
function startServer(stateDir: string, storeDir: string, listen: string, adminPassword?: string): Promise<ServerProcess> {
  const args = [MAIN, "server", "--listen", listen, "--state-dir", stateDir, "--datastore", `main=${storeDir}`];
  const env = childEnv(adminPassword === undefined ? {} : { GORDE_ADMIN_PASSWORD: adminPassword });
  const child = track(spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env }));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  return new Promise((resolve, reject) => {
    const server: ServerProcess = { child, port: 0, fingerprint: "", stdout: "", stderr: "", exited };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`gorde server did not start within ${CHILD_TIMEOUT_MS} ms: ${server.stderr}`));
    }, CHILD_TIMEOUT_MS);
    child.stderr!.setEncoding("utf8").on("data", (s: string) => (server.stderr += s));
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      server.stdout += s;
      const port = /^listening on 127\.0\.0\.1:(\d+)$/m.exec(server.stdout);
      const fp = /^fingerprint: ([0-9a-f:]{95})$/m.exec(server.stdout);
      if (port && fp && !server.port) {
        clearTimeout(timer);
        server.port = Number(port[1]);
        server.fingerprint = fp[1]!;
        resolve(server);
      }
    });
    child.on("error", reject);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`gorde server exited (${code ?? signal}) before it listened: ${server.stderr}`));
    });
  });
}

/** Sends `signal` and waits (bounded) for the server to exit. */
async function stopServer(server: ServerProcess, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  server.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), CHILD_TIMEOUT_MS)));
  const r = await Promise.race([server.exited, timeout]);
  clearTimeout(timer);
  if (!r) {
    server.child.kill("SIGKILL");
    assert.fail(`gorde server did not exit within ${CHILD_TIMEOUT_MS} ms of ${signal}: ${server.stderr}`);
  }
  return r;
}

/** performance.now() once the server's log, from offset `from` on, matches `re`. */
function waitForLog(server: ServerProcess, re: RegExp, from: number): Promise<number> {
  return new Promise((resolve) => {
    const check = (): boolean => {
      if (!re.test(server.stderr.slice(from))) return false;
      server.child.stderr!.off("data", check);
      resolve(performance.now());
      return true;
    };
    if (!check()) server.child.stderr!.on("data", check);
  });
}

interface SnapshotJson {
  snapshot: string;
  finished: boolean;
}

/** Byte-for-byte comparison of two files, block by block. */
function assertSameFile(actual: string, expected: string): void {
  const a = fs.openSync(actual, "r");
  const e = fs.openSync(expected, "r");
  try {
    const size = fs.fstatSync(e).size;
    assert.equal(fs.fstatSync(a).size, size, `${actual} has the size of ${expected}`);
    const ba = Buffer.allocUnsafe(8 * MiB);
    const be = Buffer.allocUnsafe(8 * MiB);
    for (let pos = 0; pos < size; pos += be.length) {
      const n = Math.min(be.length, size - pos);
      assert.equal(fs.readSync(a, ba, 0, n, pos), n);
      assert.equal(fs.readSync(e, be, 0, n, pos), n);
      if (!ba.subarray(0, n).equals(be.subarray(0, n))) {
        let i = 0;
        while (ba[i] === be[i]) i++;
        assert.fail(`${actual} differs from ${expected} at byte ${pos + i}`);
      }
    }
  } finally {
    fs.closeSync(a);
    fs.closeSync(e);
  }
}

/** Relative path → file contents, or null for a directory. */
type TreeState = Map<string, Buffer | null>;

function readTree(root: string): TreeState {
  const out: TreeState = new Map();
  const visit = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        out.set(r, null);
        visit(r);
      } else {
        assert.ok(d.isFile(), `${r} is a regular file`);
        out.set(r, fs.readFileSync(path.join(root, r)));
      }
    }
  };
  visit("");
  return out;
}

function assertSameTree(actualRoot: string, expected: TreeState): void {
  const actual = readTree(actualRoot);
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `entries of ${actualRoot}`);
  for (const [rel, data] of expected) {
    const got = actual.get(rel);
    if (data === null) assert.equal(got, null, `${rel} is a directory`);
    else assert.ok(got?.equals(data), `${rel} restored with its contents`);
  }
}

/**
 * The client failed on its own (not killed) with one line on stderr, no stack trace, that
 * says what went wrong: the server is gone or going.
 */
function assertOneLineError(r: Run, what: string): string {
  assert.equal(r.signal, null, `${what}: the client was not killed`);
  assert.notEqual(r.code, 0, `${what}: the client exits non-zero`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `${what}: one line on stderr, not:\n${r.stderr}`);
  assert.match(lines[0]!, /^gorde backup: \S/, `${what}: the error names the command`);
  assert.doesNotMatch(r.stderr, /^\s+at |\[object |undefined/m, `${what}: no stack trace or raw object`);
  assert.match(lines[0]!, /server|connection/, `${what}: the error says the server is gone`);
  return lines[0]!;
}

// The timeout guards against a hang only: on two loaded cores these runs take minutes.
void describe("a backup to a gorde server whose client or server dies", { timeout: 600_000 }, () => {
  let tmp = "";
  let stateDir = "";
  let storeDir = "";
  let img = "";
  let tree = "";
  let server: ServerProcess | undefined;
  let port = 0;
  let fingerprint = "";
  /** offsets of the random regions of the image */
  const regions: number[] = [];
  /** the first snapshot and the newest finished one, with copies of what they hold */
  let first = { snapshot: "", img: "", tree: new Map() as TreeState };
  let last = { snapshot: "", img: "", tree: new Map() as TreeState };
  /** wall time of one backup with new data, and of its session on the server */
  let backupMs = 0;
  let sessionMs = 0;
  /** from the last index stored to the manifest written: the client's finish */
  let finishMs = 0;
  /** snapshots known to be finished, and those a killed server left unfinished */
  const finished = new Set<string>();
  const unfinished = new Set<string>();
  let restores = 0;
  let round = 0;

  const repo = (): string => `https://admin@127.0.0.1:${port}/main`;
  const env = (): Record<string, string> => ({ GORDE_PASSWORD: ADMIN_PASSWORD, GORDE_FINGERPRINT: fingerprint });
  const backupArgs = (): string[] => ["backup", repo(), "vm/100", `disk.img=${img}`, `root.tree=${tree}`, "--json"];
  /** a backup to be killed: new data, uploaded at a steady pace */
  const targetArgs = (): string[] => [...backupArgs(), "--rate", RATE];

  const ok = async (args: string[]): Promise<Run> => {
    const r = await gorde(args, env());
    assert.equal(r.code, 0, `gorde ${args.join(" ")} exited ${r.code ?? r.signal}: ${r.stderr}`);
    return r;
  };

  const listSnapshots = async (): Promise<SnapshotJson[]> => {
    const list = JSON.parse((await ok(["snapshots", repo(), "--json"])).stdout) as SnapshotJson[];
    assert.ok(Array.isArray(list), "snapshots --json prints an array");
    for (const s of list) assert.equal(typeof s.finished, "boolean", `${s.snapshot}: finished is true or false`);
    return list;
  };

  /** New data for the next backup: some image regions and tree files rewritten, a file added. */
  const modify = (): void => {
    round++;
    const fd = fs.openSync(img, "r+");
    try {
      const picked = [...regions].sort(() => Math.random() - 0.5).slice(0, CHANGED_REGIONS);
      for (const pos of picked) fs.writeSync(fd, randomBytes(REGION), 0, REGION, pos);
    } finally {
      fs.closeSync(fd);
    }
    for (let i = 0; i < 2; i++) fs.writeFileSync(path.join(tree, `d${randomInt(3)}`, `f${randomInt(10)}`), randomBytes(randomInt(8 * KiB)));
    fs.writeFileSync(path.join(tree, `added-${round}`), randomBytes(64 * KiB));
  };

  /** A backup that must succeed; the source as it was is kept for later restores. */
  const goodBackup = async (args = backupArgs()): Promise<Run & { snapshot: string }> => {
    const r = await ok(args);
    const { snapshot } = JSON.parse(r.stdout) as { snapshot: string };
    finished.add(snapshot);
    const copy = path.join(tmp, `last-${round}.img`);
    fs.copyFileSync(img, copy);
    if (last.img && last.img !== first.img) fs.rmSync(last.img);
    last = { snapshot, img: copy, tree: readTree(tree) };
    return { ...r, snapshot };
  };

  /** Restores both archives of `snap` and compares them with what was backed up. */
  const checkRestore = async (snap: { snapshot: string; img: string; tree: TreeState }): Promise<void> => {
    const n = restores++;
    const rImg = path.join(tmp, `restored-${n}.img`);
    const rTree = path.join(tmp, `restored-${n}.tree`);
    try {
      await settled(ok(["restore", repo(), snap.snapshot, "disk.img", rImg, "--json"]), ok(["restore", repo(), snap.snapshot, "root.tree", rTree, "--json"]));
      assertSameFile(rImg, snap.img);
      assertSameTree(rTree, snap.tree);
    } finally {
      fs.rmSync(rImg, { force: true });
      fs.rmSync(rTree, { recursive: true, force: true });
    }
  };

  /**
   * What a failed backup left: the listing keeps every finished snapshot; a new finished
   * one is allowed only when the server completed the backup before the failure (it is
   * then restored and compared like the others); with `allowUnfinished`, a new
   * unfinished one is recorded.
   */
  const checkLeftovers = (list: SnapshotJson[], allowUnfinished: boolean): string => {
    const names = list.map((s) => s.snapshot);
    for (const s of finished) assert.ok(names.includes(s), `${s} is still listed`);
    for (const s of list) if (finished.has(s.snapshot)) assert.equal(s.finished, true, `${s.snapshot} is still finished`);
    const added = list.filter((s) => !finished.has(s.snapshot) && !unfinished.has(s.snapshot));
    assert.ok(added.length <= 1, `one backup adds at most one snapshot: ${added.map((s) => s.snapshot).join(", ")}`);
    const s = added[0];
    if (!s) return "nothing left";
    if (s.finished) {
      // The failure came after the server had begun to write the manifest: a whole snapshot.
      finished.add(s.snapshot);
      adopt(s.snapshot);
      return `completed before the kill: ${s.snapshot}`;
    }
    assert.ok(allowUnfinished, `${s.snapshot} is left unfinished`);
    unfinished.add(s.snapshot);
    return `left unfinished ${s.snapshot}`;
  };

  /**
   * The newest snapshot before the failure restores bit-exact and the next backup works
   * (it is restored after the next failure, or at the end).
   */
  const checkHealthyAfter = async (): Promise<number> => {
    await checkRestore(last);
    return (await goodBackup()).ms;
  };

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-server-crash-"));
    compileCache = path.join(tmp, "compile-cache");
    stateDir = path.join(tmp, "state");
    storeDir = path.join(tmp, "store");
    const src = path.join(tmp, "src");
    img = path.join(src, "disk.img");
    tree = path.join(src, "tree");
    fs.mkdirSync(src);

    // Sparse image: random data at unaligned offsets, holes between.
    const fd = fs.openSync(img, "w");
    fs.ftruncateSync(fd, IMAGE_SIZE);
    for (let i = 0; i < REGIONS; i++) {
      const pos = i * REGION_STRIDE + randomInt(REGION_STRIDE - REGION);
      regions.push(pos);
      fs.writeSync(fd, randomBytes(REGION), 0, REGION, pos);
    }
    fs.closeSync(fd);
    for (let d = 0; d < 3; d++) {
      fs.mkdirSync(path.join(tree, `d${d}`), { recursive: true });
      for (let f = 0; f < 10; f++) fs.writeFileSync(path.join(tree, `d${d}`, `f${f}`), randomBytes(randomInt(8 * KiB)));
    }
    fs.writeFileSync(path.join(tree, "big"), randomBytes(MiB));

    server = await startServer(stateDir, storeDir, "127.0.0.1:0", ADMIN_PASSWORD);
    port = server.port;
    fingerprint = server.fingerprint;
    assert.ok(port > 0, "the server prints the port it listens on");

    await goodBackup();
    first = { ...last, img: path.join(tmp, "first.img") };
    fs.renameSync(last.img, first.img);
    last = first;
    // The durations kill points are spread over: an incremental backup with new data, and
    // its session, from the server's "started backup" to the client's exit.
    modify();
    const from = server.stderr.length;
    const run = goodBackup(targetArgs());
    const seen = await watchFinish(server, from, run);
    const r = await run;
    assert.ok(seen.started && seen.lastIndex && seen.manifest, `the session's start, last index and manifest are seen: ${server.stderr.slice(from)}`);
    backupMs = r.ms;
    sessionMs = r.end - seen.started;
    finishMs = seen.manifest - seen.lastIndex;
  });

  after(async () => {
    for (const child of children) child.kill("SIGKILL");
    await sleep(100);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** The server that runs now (they are replaced when one is killed). */
  const live = (): ServerProcess => {
    assert.ok(server, "a server is running");
    return server;
  };

  /** Restarts the server on the same port, state and datastore, without the admin password. */
  const restart = async (): Promise<void> => {
    server = await startServer(stateDir, storeDir, `127.0.0.1:${port}`);
    assert.equal(server.port, port, "the server listens on the same port again");
    assert.equal(server.fingerprint, fingerprint, "the restarted server presents the same certificate");
    assert.doesNotMatch(server.stderr, /created user/, "the restarted server keeps its users");
  };

  /** The snapshot a killed backup completed: the newest, restored like the others. */
  const adopt = (snapshot: string): void => {
    const copy = path.join(tmp, `adopted-${round}.img`);
    fs.copyFileSync(img, copy);
    if (last.img !== first.img) fs.rmSync(last.img);
    last = { snapshot, img: copy, tree: readTree(tree) };
  };

  /** An unfinished snapshot is refused by restore with one clear line. */
  const assertNotReadable = async (snapshot: string): Promise<void> => {
    const target = path.join(tmp, "never-restored.img");
    const r = await gorde(["restore", repo(), snapshot, "disk.img", target, "--json"], env());
    assert.notEqual(r.code, 0, `restore of unfinished ${snapshot} is refused`);
    assert.match(r.stderr, /^gorde restore: .*unfinished/, `restore of unfinished ${snapshot}: ${r.stderr}`);
    assert.equal(fs.existsSync(target), false);
  };

  /** The session the server's log shows started since `from`, once it does; undefined if `run` ended first. */
  const sessionStarted = async (srv: ServerProcess, from: number, run: Promise<Run>): Promise<{ snapshot: string; at: number } | undefined> => {
    const re = /started backup main:(vm\/100\/\S+)/;
    // The server logs the start before it answers, but its log and the client's exit come
    // through two pipes: a client that ended may be seen before the line that preceded it.
    const ended = run.then(
      () => sleep(5000),
      () => sleep(5000),
    );
    const at = await Promise.race([waitForLog(srv, re, from), ended.then(() => undefined)]);
    return at === undefined ? undefined : { snapshot: re.exec(srv.stderr.slice(from))![1]!, at };
  };

  /**
   * When the session starts (the server's log), and when its snapshot directory gets the
   * last index the client uploads (its finish request comes next) and the manifest, polled
   * every ms until `run` ends; with `stopAtIndex` it returns once the last index is there.
   */
  const watchFinish = async (
    srv: ServerProcess,
    from: number,
    run: Promise<Run>,
    stopAtIndex = false,
  ): Promise<{ started?: number; lastIndex?: number; manifest?: number }> => {
    let ended = false;
    run.then(
      () => (ended = true),
      () => (ended = true),
    );
    const session = await sessionStarted(srv, from, run);
    if (!session) return {};
    const out: { started?: number; lastIndex?: number; manifest?: number } = { started: session.at };
    const dir = path.join(storeDir, session.snapshot);
    while (!ended && out.manifest === undefined) {
      if (out.lastIndex === undefined && fs.existsSync(path.join(dir, "root.tree.payload.didx"))) {
        out.lastIndex = performance.now();
        if (stopAtIndex) return out;
      }
      if (fs.existsSync(path.join(dir, "manifest.json"))) out.manifest = performance.now();
      await sleep(1);
    }
    return out;
  };

  /** Waits until the client is (most likely) in its finish request; false if `run` ended first. */
  const finishing = async (srv: ServerProcess, from: number, run: Promise<Run>): Promise<boolean> => {
    const { lastIndex } = await watchFinish(srv, from, run, true);
    if (lastIndex === undefined) return false;
    await sleep(Math.round(finishMs / 2));
    return true;
  };

  /** After a client was killed: the server aborts its session, its lock goes, nothing half-done is visible. */
  const afterClientKill = async (r: Run): Promise<string> => {
    let outcome: string;
    if (r.code === 0) outcome = "finished before the kill";
    else {
      assert.equal(r.signal, "SIGKILL", `the backup was killed (exit ${r.code}: ${r.stderr})`);
      outcome = "killed";
    }
    // The server aborts the session once it sees the connection close: a bounded wait.
    const killed = performance.now();
    let list = await listSnapshots();
    while (list.some((s) => !s.finished) && performance.now() - killed < ABORT_WAIT_MS) {
      await sleep(50);
      list = await listSnapshots();
    }
    const waited = Math.round(performance.now() - killed);
    assert.deepEqual(
      list.filter((s) => !s.finished).map((s) => s.snapshot),
      [],
      `no unfinished snapshot remains ${ABORT_WAIT_MS} ms after the client died`,
    );
    const left = checkLeftovers(list, false);
    if (r.code === 0) assert.match(left, /^completed/, "a backup that exited 0 left a finished snapshot");
    const nextMs = await checkHealthyAfter();
    return `${outcome}, ${left}; listing clean after ${waited} ms; next backup ${Math.round(nextMs)} ms`;
  };

  void describe("the client is killed", () => {
    for (const point of CLIENT_KILL_POINTS) {
      void it(`at ${point * 100}% of a backup: the server aborts its session and nothing of it stays`, async (t) => {
        modify();
        const ms = Math.round(point * backupMs);
        const r = await gorde(targetArgs(), env(), ms);
        t.diagnostic(`backup takes ${Math.round(backupMs)} ms; killed after ${ms} ms: ${await afterClientKill(r)}`);
      });
    }

    void it("as it finishes: the snapshot is whole or gone", async (t) => {
      modify();
      const srv = live();
      const from = srv.stderr.length;
      let fire = (): void => undefined;
      const run = gorde(targetArgs(), env(), new Promise<void>((resolve) => (fire = resolve)));
      const reached = await finishing(srv, from, run);
      fire();
      const r = await run;
      assert.ok(reached, `the backup stored its last index before it ended: ${r.stderr}`);
      t.diagnostic(`killed ${Math.round(finishMs / 2)} ms after its last index was stored: ${await afterClientKill(r)}`);
    });
  });

  void describe("the server is killed", () => {
    for (const point of SERVER_KILL_POINTS) {
      void it(`at ${point * 100}% of a backup session: the client fails clearly, the restarted server shows nothing new as finished`, async (t) => {
        modify();
        const srv = live();
        const from = srv.stderr.length;
        const run = gorde(targetArgs(), env());
        const started = await sessionStarted(srv, from, run);
        const delay = Math.round(point * sessionMs);
        if (started) await sleep(delay);
        const exit = await stopServer(srv, "SIGKILL");
        server = undefined;
        const r = await run;
        assert.ok(started, `the client started a session before it ended: ${r.stderr}`);
        assert.equal(exit.signal, "SIGKILL");
        const outcome = r.code === 0 ? "the backup finished before the kill" : `client: ${assertOneLineError(r, "server killed")} (exit ${r.code})`;

        await restart();
        const list = await listSnapshots();
        const left = checkLeftovers(list, true);
        if (r.code === 0) assert.match(left, /^completed/, "a backup that exited 0 left a finished snapshot");
        const partial = list.find((s) => !s.finished && !finished.has(s.snapshot) && left.endsWith(s.snapshot));
        if (partial) await assertNotReadable(partial.snapshot);

        const v = await ok(["verify", repo(), "--json"]);
        assert.equal((JSON.parse(v.stdout) as { ok: boolean }).ok, true, `verify passes: ${v.stdout}`);
        const nextMs = await checkHealthyAfter();
        t.diagnostic(`session takes ${Math.round(sessionMs)} ms; killed ${delay} ms into it; ${outcome}; ${left}; next backup ${Math.round(nextMs)} ms`);
      });
    }

    void it("prune removes what the killed servers left; gc and verify pass", async (t) => {
      t.diagnostic(`${unfinished.size} unfinished snapshots left by ${SERVER_KILL_POINTS.length} killed servers`);
      assert.ok(unfinished.size > 0, "a killed server leaves its session's snapshot directory, shown as unfinished");
      const prune = await ok(["prune", repo(), "vm/100", "--keep-last", "100", "--json"]);
      const plan = JSON.parse(prune.stdout) as { snapshot: string; action: string }[];
      assert.deepEqual(plan.map((p) => p.snapshot).sort(), [...finished, ...unfinished].sort(), "prune decides on every snapshot");
      for (const p of plan) assert.equal(p.action, finished.has(p.snapshot) ? "keep" : "remove", p.snapshot);
      unfinished.clear();

      const list = await listSnapshots();
      assert.deepEqual(list.map((s) => s.snapshot).sort(), [...finished].sort(), "only the finished snapshots remain");
      assert.ok(list.every((s) => s.finished));

      const gc = await ok(["gc", repo(), "--cutoff", "0", "--json"]);
      const r = JSON.parse(gc.stdout) as { missingChunks: number; removedChunks: number; removedTmp: number };
      t.diagnostic(`gc removed ${r.removedChunks} chunks and ${r.removedTmp} temporary files`);
      assert.equal(r.missingChunks, 0, "no referenced chunk is missing");
      assert.deepEqual(fs.readdirSync(path.join(storeDir, ".running")), [], "registrations of the killed servers' backups are cleaned up");

      const v = await ok(["verify", repo(), "--json"]);
      assert.equal((JSON.parse(v.stdout) as { ok: boolean }).ok, true, `verify passes after gc: ${v.stdout}`);
      await checkRestore(first);
    });
  });

  void describe("the server is stopped with SIGTERM", () => {
    for (const [when, expect] of [
      ["halfway through the session", "it aborts the session, the client fails clearly, nothing stays"],
      ["as the client finishes", "the client fails clearly, the snapshot is whole or gone"],
    ] as const) {
      void it(`${when}: ${expect}`, async (t) => {
        modify();
        const srv = live();
        const from = srv.stderr.length;
        const run = gorde(targetArgs(), env());
        let reached: boolean;
        if (when.startsWith("half")) {
          reached = (await sessionStarted(srv, from, run)) !== undefined;
          if (reached) await sleep(Math.round(0.5 * sessionMs));
        } else {
          reached = await finishing(srv, from, run);
        }
        const exit = await stopServer(srv, "SIGTERM");
        server = undefined;
        const r = await run;
        assert.ok(reached, `the backup got that far before it ended: ${r.stderr}`);
        assert.equal(exit.code, 0, `the server exits 0 on SIGTERM: ${srv.stderr}`);
        assert.match(srv.stderr, /server stopped\n$/);
        const outcome = r.code === 0 ? "the backup finished before the stop" : `client: ${assertOneLineError(r, "server stopped")} (exit ${r.code})`;

        await restart();
        const list = await listSnapshots();
        const left = checkLeftovers(list, false);
        if (r.code === 0) assert.match(left, /^completed/, "a backup that exited 0 left a finished snapshot");
        const nextMs = await checkHealthyAfter();
        t.diagnostic(`${outcome}; ${left}; next backup ${Math.round(nextMs)} ms`);
      });
    }

    void it("the newest and the first snapshot restore at the end", async () => {
      await settled(checkRestore(first), checkRestore(last));
    });
  });
});
