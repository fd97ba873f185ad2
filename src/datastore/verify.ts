// Verification: reads back every chunk a snapshot references and checks its CRC and its
// digest, as Proxmox Backup Server's verify does. A corrupt chunk is renamed to
// `<hex>.<n>.bad`, so the next backup that produces the same data stores it again; the
// result is recorded in the manifest's unprotected part (`verify`), and a backup does not
// use a snapshot whose verification failed as its base.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { DIGEST_SIZE, DYNAMIC_ENTRY_SIZE, MAX_CHUNK_FILE_SIZE } from "../format/magic.ts";
import { type SnapshotRef, formatSnapshot, parseSnapshotTime } from "../format/names.ts";
import { ChunkPool } from "./chunk-pool.ts";
import { type Datastore, type Lock, type SnapshotInfo, lockDir } from "./datastore.ts";
import { MAX_BAD_INDEX } from "./gc.ts";
import { loadArchiveIndexes } from "./snapshot-indexes.ts";
import { readRegularFile } from "../sys/bounded-read.ts";

/** Chunk reads in flight at once. */
const READS_IN_FLIGHT = 6;
/** Chunk errors listed per snapshot; the rest are counted. */
const MAX_CHUNK_ERRORS = 10;

export interface VerifyProgress {
  snapshot: string;
  /** chunks of this snapshot checked so far, of `total` */
  done: number;
  total: number;
  /** snapshots finished before this one, of `snapshotsTotal` */
  snapshotsDone: number;
  snapshotsTotal: number;
}

export interface VerifyOptions {
  /** worker pool for decoding; one is created (and closed) when absent */
  pool?: ChunkPool;
  signal?: AbortSignal;
  progress?: (e: VerifyProgress) => void;
  /** unix seconds recorded as the verification time (default: now) */
  now?: number;
}

export interface SnapshotVerifyResult {
  /** formatSnapshot: <type>/<id>/<time> */
  snapshot: string;
  ns: string[];
  state: "ok" | "failed" | "skipped";
  errors: string[];
  /** skipped because a newer gorde wrote it */
  newer?: true;
}

export interface BadChunk {
  digest: string;
  reason: string;
  /** path the corrupt chunk file was moved to; absent when it was left in place */
  renamedTo?: string;
}

export interface VerifyReport {
  snapshots: SnapshotVerifyResult[];
  /** distinct chunks read in this run */
  chunksChecked: number;
  badChunks: BadChunk[];
  missingChunks: string[];
  /** no snapshot failed */
  ok: boolean;
}

type ChunkState = { ok: true; encrypted: boolean } | { ok: false; missing: true } | { ok: false; missing: false; bad: BadChunk };

interface Run {
  store: Datastore;
  pool: ChunkPool;
  opts: VerifyOptions;
  /** per digest, across the snapshots of this run */
  cache: Map<string, Promise<ChunkState>>;
  report: VerifyReport;
}

/** Verifies the given snapshots; unfinished ones are reported as skipped. */
export async function verifySnapshots(store: Datastore, snaps: SnapshotInfo[], opts: VerifyOptions = {}): Promise<VerifyReport> {
  const pool = opts.pool ?? new ChunkPool();
  const run: Run = {
    store,
    pool,
    opts,
    cache: new Map(),
    report: { snapshots: [], chunksChecked: 0, badChunks: [], missingChunks: [], ok: true },
  };
  try {
    for (const [i, snap] of snaps.entries()) {
      opts.signal?.throwIfAborted();
      run.report.snapshots.push(await verifyOne(run, snap, i, snaps.length));
    }
  } finally {
    if (!opts.pool) await pool.close();
  }
  run.report.ok = run.report.snapshots.every((s) => s.state !== "failed");
  return run.report;
}

async function verifyOne(run: Run, snap: SnapshotInfo, index: number, count: number): Promise<SnapshotVerifyResult> {
  const { store, opts } = run;
  const name = formatSnapshot(snap);
  const result = (state: SnapshotVerifyResult["state"], errors: string[]): SnapshotVerifyResult => ({
    snapshot: name,
    ns: snap.ns,
    state,
    errors,
  });
  // A snapshot a newer gorde wrote is not damage: this gorde cannot read it, so it says so.
  if (snap.error?.code === "unsupported") return { ...result("skipped", [snap.error.message]), newer: true };
  if (snap.error) return result("failed", [snap.error.message]);
  if (!snap.finished || !snap.manifest) return result("skipped", [`snapshot ${name} is unfinished.`]);

  let lock: Lock;
  try {
    lock = lockDir(snap.dir, "sh", `snapshot ${name}`);
  } catch (err) {
    // Removed meanwhile, or being removed.
    if (err instanceof GordeError && (err.code === "not-found" || err.code === "locked")) return result("skipped", [err.message]);
    throw err;
  }
  const errors: string[] = [];
  let badCount = 0;
  try {
    const digests = new Set<string>();
    for (const archive of snap.manifest.archives) {
      let bodies: { body: Buffer; stride: number; skip: number }[];
      try {
        const idx = await loadArchiveIndexes(store, snap, archive.name);
        bodies =
          idx.kind === "img"
            ? [{ body: idx.index.digests, stride: DIGEST_SIZE, skip: 0 }]
            : [idx.entries, idx.payload].map((d) => ({ body: d.entries, stride: DYNAMIC_ENTRY_SIZE, skip: 8 }));
      } catch (err) {
        errors.push((err as Error).message);
        continue;
      }
      for (const { body, stride, skip } of bodies) {
        for (let o = skip; o + DIGEST_SIZE <= body.length; o += stride) digests.add(body.toString("hex", o, o + DIGEST_SIZE));
      }
    }

    const list = [...digests];
    const states = await checkChunks(run, list, (done) =>
      opts.progress?.({ snapshot: name, done, total: list.length, snapshotsDone: index, snapshotsTotal: count }),
    );
    const encrypted = snap.manifest.cryptMode === "encrypt";
    let unlisted = 0;
    for (const [i, checked] of states.entries()) {
      const state = checked.ok && checked.encrypted !== encrypted ? wrongMode(run, list[i]!, name, encrypted) : checked;
      if (state.ok) continue;
      badCount++;
      if (errors.length >= MAX_CHUNK_ERRORS) unlisted++;
      else errors.push(state.missing ? `chunk ${list[i]} is missing.` : state.bad.reason);
    }
    if (unlisted > 0) errors.push(`${unlisted} more chunks are missing or corrupt.`);
  } finally {
    lock.release();
  }

  const state = errors.length > 0 ? "failed" : "ok";
  const time = opts.now ?? Math.floor(Date.now() / 1000);
  try {
    await store.updateUnprotected(snap, (u) => {
      u.verify = badCount > 0 ? { state, time, badChunks: badCount } : { state, time };
    });
  } catch (err) {
    if (!(err instanceof GordeError) && (err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    errors.push(`the verify state of ${name} could not be recorded: ${(err as Error).message}`);
  }
  return result(state, errors);
}

/**
 * A chunk whose crypt mode is not its snapshot's is not that snapshot's data: its server
 * could check neither. An encrypted blob under a plain snapshot's digest (which names
 * plain data) is moved aside, so the next backup stores the real chunk again; a plain
 * chunk under an encrypted snapshot's name stays (it is valid for plain snapshots).
 */
function wrongMode(run: Run, hex: string, snapshot: string, snapshotEncrypted: boolean): ChunkState {
  const bad: BadChunk = {
    digest: hex,
    reason: `chunk ${hex} is ${snapshotEncrypted ? "not encrypted" : "encrypted"} but snapshot ${snapshot} is ${snapshotEncrypted ? "encrypted" : "not"}: it is not this snapshot's data.`,
  };
  if (!snapshotEncrypted) {
    const to = quarantine(run.store.chunks.chunkPath(hex));
    if (to !== undefined) bad.renamedTo = to;
    const state: ChunkState = { ok: false, missing: false, bad };
    run.cache.set(hex, Promise.resolve(state));
  }
  run.report.badChunks.push(bad);
  return { ok: false, missing: false, bad };
}

/** Checks the chunks, a few reads in flight; results come back in the order of `digests`. */
async function checkChunks(run: Run, digests: string[], progress: (done: number) => void): Promise<ChunkState[]> {
  const out: ChunkState[] = new Array<ChunkState>(digests.length);
  let next = 0;
  let done = 0;
  progress(0);
  const lane = async (): Promise<void> => {
    while (next < digests.length && !run.opts.signal?.aborted) {
      const i = next++;
      out[i] = await checkChunk(run, digests[i]!);
      progress(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, digests.length) }, lane));
  run.opts.signal?.throwIfAborted();
  return out;
}

function checkChunk(run: Run, hex: string): Promise<ChunkState> {
  let p = run.cache.get(hex);
  if (!p) {
    p = readAndCheck(run, hex);
    run.cache.set(hex, p);
  }
  return p;
}

async function readAndCheck(run: Run, hex: string): Promise<ChunkState> {
  const { store, report } = run;
  const file = store.chunks.chunkPath(hex);
  let blob: Buffer;
  try {
    blob = await readRegularFile(file, MAX_CHUNK_FILE_SIZE, `chunk ${hex}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      report.missingChunks.push(hex);
      return { ok: false, missing: true };
    }
    // Not a regular file within a chunk's bound (a FIFO, a symlink, a directory, too large):
    // no chunk, moved aside as a corrupt one is.
    if (err instanceof GordeError && err.code === "corrupt") {
      const bad: BadChunk = { digest: hex, reason: err.message };
      const to = quarantine(file);
      if (to !== undefined) bad.renamedTo = to;
      report.badChunks.push(bad);
      return { ok: false, missing: false, bad };
    }
    // Possibly transient (EIO on a flaky disk): reported, but the file stays.
    const bad: BadChunk = { digest: hex, reason: `chunk ${hex} could not be read: ${(err as Error).message}.` };
    report.badChunks.push(bad);
    return { ok: false, missing: false, bad };
  }
  report.chunksChecked++;
  try {
    // Encrypted chunks (no key here) are checked by their CRC only.
    const { encrypted } = await run.pool.check(blob, hex);
    return { ok: true, encrypted };
  } catch (err) {
    // Only a chunk proven corrupt (CRC, digest, undecodable) is moved aside: not one
    // written by a newer gorde, nor one a failing worker could not check.
    if (!(err instanceof GordeError)) throw err;
    const bad: BadChunk = { digest: hex, reason: err.message };
    if (err.code === "corrupt") {
      const to = quarantine(file);
      if (to !== undefined) bad.renamedTo = to;
    }
    report.badChunks.push(bad);
    return { ok: false, missing: false, bad };
  }
}

/** Renames a corrupt chunk to `<file>.<n>.bad`, n the first free number (the last is reused). */
function quarantine(file: string): string | undefined {
  for (let n = 0; n <= MAX_BAD_INDEX; n++) {
    const to = `${file}.${n}.bad`;
    if (n < MAX_BAD_INDEX && fs.existsSync(to)) continue;
    try {
      fs.renameSync(file, to);
      return to;
    } catch (err) {
      // Another verification or a garbage collection moved it first.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }
  return undefined;
}

export interface VerifyAllOptions extends VerifyOptions {
  /** namespace to start from (default the root); its child namespaces are included */
  ns?: string[];
  /** skip snapshots whose last verification is less than this many days old */
  skipVerifiedWithinDays?: number;
}

/** Verifies every snapshot of every group in a namespace and the namespaces below it. */
export async function verifyAll(store: Datastore, opts: VerifyAllOptions = {}): Promise<VerifyReport> {
  const days = opts.skipVerifiedWithinDays;
  if (days !== undefined && !(Number.isFinite(days) && days >= 0)) {
    throw new GordeError("usage", `the number of days must be a non-negative number, got ${days}.`);
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const root = opts.ns ?? [];
  if (root.length > 0 && !fs.existsSync(store.nsDir(root))) {
    throw new GordeError("not-found", `namespace ${root.join("/")} does not exist.`);
  }
  const snaps: SnapshotInfo[] = [];
  // Snapshots whose manifest cannot be read: failed without reading any chunk.
  const unreadable: SnapshotVerifyResult[] = [];
  for (const ns of await namespaceTree(store, root)) {
    for (const group of await store.listGroups(ns)) {
      for (const name of await dirNames(store.groupDir(ns, group))) {
        const time = parseSnapshotTime(name);
        if (time === undefined) continue;
        const ref: SnapshotRef = { ...group, time };
        let snap: SnapshotInfo;
        try {
          snap = await store.snapshotInfo(ns, ref);
        } catch (err) {
          if (!(err instanceof GordeError)) throw err;
          if (err.code === "not-found") continue; // removed meanwhile
          unreadable.push({ snapshot: formatSnapshot(ref), ns, state: "failed", errors: [err.message] });
          continue;
        }
        const last = snap.manifest?.unprotected.verify;
        if (days !== undefined && last !== undefined && now - last.time < days * 86400) continue;
        snaps.push(snap);
      }
    }
  }
  const report = await verifySnapshots(store, snaps, { ...opts, now });
  if (unreadable.length > 0) {
    report.snapshots.push(...unreadable);
    report.ok = false;
  }
  return report;
}

/** `ns` and every namespace below it, parents first. */
export async function namespaceTree(store: Datastore, ns: string[]): Promise<string[][]> {
  const out: string[][] = [ns];
  for (const child of await dirNames(path.join(store.nsDir(ns), "ns"))) {
    out.push(...(await namespaceTree(store, [...ns, child])));
  }
  return out;
}

/** Subdirectories not starting with a dot, sorted; none when `dir` is missing. */
async function dirNames(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && !e.name.startsWith("."))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}
