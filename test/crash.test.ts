// A backup killed with SIGKILL at any moment leaves a healthy datastore: the snapshot
// list still reads, verify passes, older snapshots restore bit-exact, the next backup
// works, and prune + gc clean up what the killed backups left behind.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

const MAIN = path.resolve(import.meta.dirname, "../src/cli/main.ts");
const KiB = 1024;
const MiB = 1024 * KiB;
const IMAGE_SIZE = 192 * MiB;
/** 96 slots of 2 MiB; 64 of them get 1.5 MiB of random data: 96 MiB in all. */
const SLOT = 2 * MiB;
const FILLED_SLOTS = 64;
const REGION = 1.5 * MiB;
const DIRS = 25;
const FILES_PER_DIR = 100;
const BIG_FILES = [3 * MiB, 4 * MiB, 5 * MiB];
/** Kill points as fractions of one (incremental) backup's wall time; 0 is right after spawn. */
const KILL_POINTS = [0, 0.1, 0.3, 0.5, 0.7, 0.9];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Set once the temporary directory exists: compiled code cached there makes each run start faster. */
let compileCache: string | undefined;

interface Watch {
  /** polled every millisecond from the spawn; `fromMs` of the run is when it first held */
  from?: () => boolean;
  /** SIGKILL this long after `from` first held (or after the spawn without `from`) */
  killAfterMs?: number;
}

/** Runs the CLI, watching for `watch.from` and killing it as `watch` says. */
function gorde(args: string[], watch: Watch = {}): Promise<Run & { fromMs?: number }> {
  const env = compileCache ? { ...process.env, NODE_COMPILE_CACHE: compileCache } : process.env;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    let timer: NodeJS.Timeout | undefined;
    let poll: NodeJS.Timeout | undefined;
    let fromMs: number | undefined;
    const arm = (): void => {
      if (watch.killAfterMs === undefined) return;
      if (watch.killAfterMs <= 0) child.kill("SIGKILL");
      else timer = setTimeout(() => child.kill("SIGKILL"), watch.killAfterMs);
    };
    if (!watch.from) arm();
    else {
      const from = watch.from;
      poll = setInterval(() => {
        if (!from()) return;
        clearInterval(poll);
        fromMs = performance.now() - started;
        arm();
      }, 1);
    }
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started, fromMs });
    });
  });
}

async function ok(args: string[]): Promise<Run> {
  const r = await gorde(args);
  assert.equal(r.code, 0, `gorde ${args.join(" ")} exited ${r.code ?? r.signal}: ${r.stderr}`);
  return r;
}

/** Both results once both have settled (no process is left running); the first error otherwise. */
async function settled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === "rejected") throw ra.reason;
  if (rb.status === "rejected") throw rb.reason;
  return [ra.value, rb.value];
}

interface SnapshotJson {
  snapshot: string;
  time: string;
  finished: boolean;
  protected: boolean;
}

async function listSnapshots(repo: string): Promise<SnapshotJson[]> {
  const r = await ok(["snapshots", repo, "--json"]);
  const list = JSON.parse(r.stdout) as unknown;
  assert.ok(Array.isArray(list), "snapshots --json prints an array");
  for (const s of list as SnapshotJson[]) {
    assert.equal(typeof s.snapshot, "string");
    assert.match(s.snapshot, /^vm\/100\/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.equal(typeof s.finished, "boolean", `${s.snapshot}: finished is true or false`);
    assert.equal(typeof s.protected, "boolean");
  }
  return list as SnapshotJson[];
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

void describe("a backup killed with SIGKILL", () => {
  let tmp = "";
  let repo = "";
  let img = "";
  let tree = "";
  /** the first image, kept aside */
  let firstImg = "";
  let firstTree: TreeState = new Map();
  let firstSnapshot = "";
  let backupMs = 0;
  /** snapshots known to be finished, and those a killed backup left unfinished */
  const finished = new Set<string>();
  const unfinished = new Set<string>();
  let restores = 0;
  let round = 0;

  const backupArgs = (): string[] => ["backup", repo, "vm/100", `disk.img=${img}`, `data.tree=${tree}`, "--json"];

  /** A little new data: a few image regions, some files rewritten, one added, one removed. */
  const modify = (): void => {
    round++;
    const fd = fs.openSync(img, "r+");
    try {
      for (let i = 0; i < 2; i++) fs.writeSync(fd, randomBytes(300 * KiB), 0, 300 * KiB, randomInt(IMAGE_SIZE - 300 * KiB));
    } finally {
      fs.closeSync(fd);
    }
    for (let i = 0; i < 3; i++) {
      fs.writeFileSync(path.join(tree, `d${randomInt(DIRS)}`, `f${randomInt(FILES_PER_DIR)}`), randomBytes(randomInt(8 * KiB)));
    }
    const big = fs.openSync(path.join(tree, "big1"), "r+");
    try {
      fs.writeSync(big, randomBytes(128 * KiB), 0, 128 * KiB, randomInt(BIG_FILES[1]! - 128 * KiB));
    } finally {
      fs.closeSync(big);
    }
    fs.mkdirSync(path.join(tree, "added"), { recursive: true });
    fs.writeFileSync(path.join(tree, "added", `r${round}`), randomBytes(100 * KiB));
    fs.rmSync(path.join(tree, `d${randomInt(DIRS)}`, `f${randomInt(FILES_PER_DIR)}`), { force: true });
  };

  /** Restores both archives of `snapshot` and compares them with the expected image and tree. */
  const checkRestore = async (snapshot: string, expectedImg: string, expectedTree: TreeState): Promise<void> => {
    const n = restores++;
    const rImg = path.join(tmp, `restored-${n}.img`);
    const rTree = path.join(tmp, `restored-${n}.tree`);
    try {
      await settled(ok(["restore", repo, snapshot, "disk.img", rImg]), ok(["restore", repo, snapshot, "data.tree", rTree]));
      assertSameFile(rImg, expectedImg);
      assertSameTree(rTree, expectedTree);
    } finally {
      fs.rmSync(rImg, { force: true });
      fs.rmSync(rTree, { recursive: true, force: true });
    }
  };

  /** A backup that must succeed; returns its snapshot and how long it ran after making its snapshot directory. */
  const goodBackup = async (): Promise<{ snapshot: string; ms: number }> => {
    const r = await gorde(backupArgs(), { from: snapshotDirMade() });
    assert.equal(r.code, 0, `gorde backup exited ${r.code ?? r.signal}: ${r.stderr}`);
    const { snapshot } = JSON.parse(r.stdout) as { snapshot: string };
    finished.add(snapshot);
    return { snapshot, ms: r.ms - (r.fromMs ?? 0) };
  };

  const checkListing = async (): Promise<SnapshotJson[]> => {
    const list = await listSnapshots(repo);
    const names = list.map((s) => s.snapshot);
    for (const s of finished) assert.ok(names.includes(s), `${s} is still listed`);
    for (const s of list) {
      if (finished.has(s.snapshot)) assert.equal(s.finished, true, `${s.snapshot} is finished`);
      if (unfinished.has(s.snapshot)) assert.equal(s.finished, false, `${s.snapshot} stays unfinished`);
    }
    return list;
  };

  /**
   * True once the backup spawned after this call has made its snapshot directory: kill
   * points count from there, not from the spawn, whose start-up time a loaded machine
   * stretches past the whole of a small backup.
   */
  const snapshotDirMade = (): (() => boolean) => {
    const groupDir = path.join(repo, "vm", "100");
    const known = new Set(fs.existsSync(groupDir) ? fs.readdirSync(groupDir) : []);
    return () => fs.existsSync(groupDir) && fs.readdirSync(groupDir).some((n) => !n.startsWith(".") && !known.has(n));
  };

  /** Spawns a backup and kills it `ms` after it made its snapshot directory (at once for 0); records what it left. */
  const killedBackup = async (ms: number): Promise<string> => {
    const r = await gorde(backupArgs(), ms > 0 ? { from: snapshotDirMade(), killAfterMs: ms } : { killAfterMs: 0 });
    let outcome: string;
    if (r.code === 0) outcome = "finished before the kill";
    else {
      assert.equal(r.signal, "SIGKILL", `the backup was killed (exit ${r.code}: ${r.stderr})`);
      outcome = "killed";
    }
    const list = await checkListing();
    const added = list.filter((s) => !finished.has(s.snapshot) && !unfinished.has(s.snapshot));
    assert.ok(added.length <= 1, `one backup adds at most one snapshot: ${added.map((s) => s.snapshot).join(", ")}`);
    for (const s of added) {
      (s.finished ? finished : unfinished).add(s.snapshot);
      outcome += s.finished ? `, left finished ${s.snapshot}` : `, left unfinished ${s.snapshot}`;
    }
    if (r.code === 0) assert.ok(added[0]?.finished, "a backup that exited 0 left a finished snapshot");
    const partial = added.find((s) => !s.finished);
    if (partial) {
      // what the killed backup left cannot be read as if it were a snapshot
      const target = path.join(tmp, "never-restored.img");
      const res = await gorde(["restore", repo, partial.snapshot, "disk.img", target]);
      assert.equal(res.code, 2, `restore of an unfinished snapshot is refused: ${res.stderr}`);
      assert.match(res.stderr, /is unfinished/);
      assert.equal(fs.existsSync(target), false);
    }
    return outcome;
  };

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-crash-"));
    compileCache = path.join(tmp, "compile-cache");
    repo = path.join(tmp, "repo");
    const src = path.join(tmp, "src");
    img = path.join(src, "disk.img");
    tree = path.join(src, "tree");
    firstImg = path.join(tmp, "first.img");
    fs.mkdirSync(src);

    // Sparse image: random data at scattered, unaligned offsets, holes between.
    const fds = [fs.openSync(img, "w"), fs.openSync(firstImg, "w")];
    const slots = Array.from({ length: IMAGE_SIZE / SLOT }, (_, i) => i);
    for (let i = slots.length - 1; i > 0; i--) {
      const j = randomInt(i + 1);
      [slots[i], slots[j]] = [slots[j]!, slots[i]!];
    }
    for (const fd of fds) fs.ftruncateSync(fd, IMAGE_SIZE);
    for (const slot of slots.slice(0, FILLED_SLOTS)) {
      const data = randomBytes(REGION);
      const pos = slot * SLOT + randomInt(SLOT - REGION);
      for (const fd of fds) fs.writeSync(fd, data, 0, data.length, pos);
    }
    for (const fd of fds) fs.closeSync(fd);

    for (let d = 0; d < DIRS; d++) {
      fs.mkdirSync(path.join(tree, `d${d}`), { recursive: true });
      for (let f = 0; f < FILES_PER_DIR; f++) fs.writeFileSync(path.join(tree, `d${d}`, `f${f}`), randomBytes(randomInt(8 * KiB)));
    }
    for (const [i, size] of BIG_FILES.entries()) fs.writeFileSync(path.join(tree, `big${i}`), randomBytes(size));
    firstTree = readTree(tree);

    await ok(["init", repo]);
    firstSnapshot = (await goodBackup()).snapshot;
    // The duration the kill points are spread over: an incremental backup with new data.
    modify();
    backupMs = (await goodBackup()).ms;
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const point of KILL_POINTS) {
    void it(`killed at ${point * 100}% of a backup: the datastore stays healthy`, async (t) => {
      modify();
      const ms = Math.round(point * backupMs);
      const outcome = await killedBackup(ms);
      t.diagnostic(`backup writes its snapshot for ${Math.round(backupMs)} ms; killed ${ms} ms after making it: ${outcome}`);

      // verify passes: the killed backup damaged nothing that a snapshot references
      const v = await gorde(["verify", repo]);
      assert.equal(v.code, 0, `verify exits 0: ${v.stdout}${v.stderr}`);

      // The next backup works; it and the first snapshot restore bit-exact.
      const next = await goodBackup();
      // Kill points follow the machine's current pace: the last backup's duration.
      backupMs = next.ms;
      await settled(checkRestore(firstSnapshot, firstImg, firstTree), checkRestore(next.snapshot, img, readTree(tree)));
    });
  }

  void it("prune removes the unfinished snapshots; gc and verify pass afterwards", async (t) => {
    // One more kill without a backup after it: an unfinished newest snapshot is kept.
    modify();
    t.diagnostic(`last kill: ${await killedBackup(Math.round(0.5 * backupMs))}`);
    t.diagnostic(`${unfinished.size} unfinished snapshots left by ${KILL_POINTS.length + 1} killed backups`);
    assert.ok(unfinished.size > 0, "at least one kill left an unfinished snapshot to clean up");

    const list = await listSnapshots(repo);
    const newest = list.at(-1)!.snapshot;
    const prune = await ok(["prune", repo, "vm/100", "--keep-last", "100", "--json"]);
    const plan = JSON.parse(prune.stdout) as { snapshot: string; action: string }[];
    assert.equal(plan.length, list.length, "prune decides on every snapshot");
    for (const p of plan) {
      if (finished.has(p.snapshot)) assert.equal(p.action, "keep", `${p.snapshot} is kept`);
      else if (p.snapshot === newest) assert.equal(p.action, "keep-partial", `${p.snapshot} (newest, unfinished) is kept`);
      else assert.equal(p.action, "remove", `${p.snapshot} (unfinished) is removed`);
    }

    const remaining = await listSnapshots(repo);
    for (const s of remaining) {
      assert.ok(s.finished || s.snapshot === newest, `${s.snapshot}: only the newest may stay unfinished`);
    }
    assert.deepEqual(
      remaining.filter((s) => s.finished).map((s) => s.snapshot),
      [...finished].sort(),
      "every finished snapshot survives the prune",
    );
    const groupDir = path.join(repo, "vm", "100");
    assert.deepEqual(
      fs.readdirSync(groupDir).filter((n) => n.startsWith(".removing-")),
      [],
      "no half-removed snapshot directories",
    );

    const gc = await ok(["gc", repo, "--cutoff", "0", "--json"]);
    const r = JSON.parse(gc.stdout) as { missingChunks: number; removedChunks: number; removedTmp: number };
    t.diagnostic(`gc removed ${r.removedChunks} chunks and ${r.removedTmp} temporary files`);
    assert.equal(r.missingChunks, 0, "no referenced chunk is missing");
    assert.deepEqual(fs.readdirSync(path.join(repo, ".running")), [], "registrations of killed backups are cleaned up");

    const v = await gorde(["verify", repo]);
    assert.equal(v.code, 0, `verify exits 0 after gc: ${v.stdout}${v.stderr}`);
  });
});
