// A datastore on a gorde server: backup and reader sessions over the API, and every
// administrative command (snapshots, forget, prune, GC, verify, users, tokens, ACLs).
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";
import { ROUTES, type Route, type RouteName, type SnapshotJson, type SyncResult, routePath } from "../api/routes.ts";
import type { CallArgs, RouteBodyInput, RouteResult } from "../api/route-types.ts";
import { type BatchedChunk, decodeChunkBatch, encodeChunkBatch } from "../api/chunk-batch.ts";
import { MAX_CHUNK_SIZE } from "../format/magic.ts";
import { ServerConnection, parseServerUrl } from "../api/connection.ts";
import { ConnectionLostError, GordeError } from "../errors.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { readArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import { type DrillState, type Manifest, ManifestSchema } from "../format/manifest.ts";
import { type Group, formatGroup, parseSnapshotRef } from "../format/names.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";
import type { SnapshotReader } from "./restore.ts";
import { MAX_NOTES_BYTES, type PruneOutcome, type Repository, type RepositoryStatus, type TaskOptions, type TaskProgressEvent } from "./repository.ts";
import type { GcResult } from "../datastore/gc.ts";
import type { PruneOptions } from "../datastore/prune.ts";
import type { VerifyReport } from "../datastore/verify.ts";

export interface RemoteOptions {
  /** password or token secret (GORDE_PASSWORD) */
  secret?: string;
  /** pinned certificate fingerprint (--fingerprint, GORDE_FINGERPRINT) */
  fingerprint?: string;
  /** bytes per second, 0: unlimited */
  rate?: number;
  signal?: AbortSignal;
}

export type { TaskProgressEvent };

/** The trusted-fingerprints file: GORDE_FINGERPRINTS, or ~/.config/gorde/fingerprints. */
export function trustedFingerprintsFile(): string {
  return process.env.GORDE_FINGERPRINTS || path.join(process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config"), "gorde", "fingerprints");
}

/** The fingerprint trusted for `host:port` ("<host>:<port> <fingerprint>" lines, # comments). */
export function trustedFingerprint(host: string, port: number): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(trustedFingerprintsFile(), "utf8");
  } catch {
    return undefined;
  }
  const want = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    const [where, fp] = line.split(/\s+/);
    if (where === want && fp) return fp;
  }
  return undefined;
}

function parseManifest(raw: unknown, what: string): Manifest {
  const r = ManifestSchema.safeParse(raw);
  if (!r.success) throw new GordeError("corrupt", `the server sent an invalid manifest for ${what}.`);
  return r.data;
}

/**
 * Gathers chunks into batch uploads: a batch leaves when it is full, or as soon as the
 * event loop has nothing more to add (so a slow source never waits for a full batch).
 * Each chunk's promise settles with its batch.
 */
/** Sends a batch at once when it is full, else once on the next turn of the event loop, with what came meanwhile. */
class BatchTrigger {
  private scheduled = false;
  private readonly dispatch: () => void;

  constructor(dispatch: () => void) {
    this.dispatch = dispatch;
  }

  added(full: boolean): void {
    if (full) return this.dispatch();
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }
}

class ChunkBatcher {
  private chunks: BatchedChunk[] = [];
  private waiters: { resolve(): void; reject(e: unknown): void }[] = [];
  private bytes = 0;
  private readonly trigger = new BatchTrigger(() => this.dispatch());
  private readonly inflight = new Set<Promise<void>>();
  private readonly send: (body: Buffer) => Promise<unknown>;

  constructor(send: (body: Buffer) => Promise<unknown>) {
    this.send = send;
  }

  add(c: BatchedChunk): Promise<void> {
    return new Promise((resolve, reject) => {
      this.chunks.push(c);
      this.waiters.push({ resolve, reject });
      this.bytes += c.blob.length;
      this.trigger.added(this.chunks.length >= BATCH_CHUNKS || this.bytes >= BATCH_BYTES);
    });
  }

  private dispatch(): void {
    if (this.chunks.length === 0) return;
    const chunks = this.chunks;
    const waiters = this.waiters;
    this.chunks = [];
    this.waiters = [];
    this.bytes = 0;
    const p = this.send(encodeChunkBatch(chunks)).then(
      () => waiters.forEach((w) => w.resolve()),
      (e: unknown) => waiters.forEach((w) => w.reject(e)),
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Sends what is gathered and waits for every batch in flight. */
  async flush(): Promise<void> {
    this.dispatch();
    await Promise.all([...this.inflight]);
  }
}

/**
 * Gathers chunk reads into batch requests, as ChunkBatcher does for uploads: a request
 * leaves at 16 chunks or when the event loop has nothing more to ask for.
 */
class ChunkFetcher {
  private wanted = new Map<string, { resolve(b: Buffer): void; reject(e: unknown): void }[]>();
  private readonly trigger = new BatchTrigger(() => this.dispatch());
  private readonly fetch: (digests: string[]) => Promise<Buffer>;

  constructor(fetch: (digests: string[]) => Promise<Buffer>) {
    this.fetch = fetch;
  }

  get(hex: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const list = this.wanted.get(hex);
      if (list) list.push({ resolve, reject });
      else this.wanted.set(hex, [{ resolve, reject }]);
      this.trigger.added(this.wanted.size >= BATCH_CHUNKS);
    });
  }

  private dispatch(): void {
    if (this.wanted.size === 0) return;
    const batch = this.wanted;
    this.wanted = new Map();
    const digests = [...batch.keys()];
    this.fetch(digests).then(
      (body) => {
        try {
          const got = new Map(decodeChunkBatch(body, MAX_CHUNK_SIZE + 1024, MAX_CHUNK_SIZE).map((c) => [c.hex, c.blob]));
          for (const [hex, waiters] of batch) {
            const blob = got.get(hex);
            // Each waiter gets its own copy: decoding moves a buffer to a worker thread.
            for (const w of waiters) {
              if (blob) w.resolve(Buffer.from(blob));
              else w.reject(new GordeError("corrupt", `the server's answer lacks chunk ${hex}.`));
            }
          }
        } catch (err) {
          for (const ws of batch.values()) for (const w of ws) w.reject(err);
        }
      },
      (err: unknown) => {
        for (const ws of batch.values()) for (const w of ws) w.reject(err);
      },
    );
  }
}

/** A batch leaves at this many chunks or bytes (whichever first). */
const BATCH_CHUNKS = 16;
const BATCH_BYTES = 4 * 1024 * 1024;

/** The fingerprint given, or the trusted one of host:port; refused when there is none. */
export function pinnedFingerprint(addr: { host: string; port: number }, given: string | undefined, what: "server" | "node"): string {
  const fingerprint = given || trustedFingerprint(addr.host, addr.port);
  if (!fingerprint) {
    throw new GordeError(
      "usage",
      `the ${what}'s certificate is not pinned: give its fingerprint with --fingerprint or GORDE_FINGERPRINT, or add "${addr.host}:${addr.port} <fingerprint>" to ${trustedFingerprintsFile()} (gorde ${what} prints it when it starts).`,
    );
  }
  return fingerprint;
}

type Routes = typeof ROUTES;
/**
 * Follows a task of a server or a node (the same routes on both) to its end: its events
 * to `onEvent`, from its first log line; aborting `signal` aborts the task there.
 */
export async function followTask(
  conn: ServerConnection,
  task: string,
  host: "server" | "node",
  onEvent?: (e: TaskProgressEvent) => void,
  signal?: AbortSignal,
): Promise<NonNullable<TaskProgressEvent["task"]>> {
  let end: TaskProgressEvent["task"] | undefined;
  /** log lines delivered: a stream followed again replays the log from its first line */
  let seen = 0;
  let lost: unknown;
  const abort = (): void => void conn.request("DELETE", routePath(ROUTES.abortTask, { id: task }), { once: true }).catch(() => undefined);
  signal?.addEventListener("abort", abort, { once: true });
  try {
    // The task runs on whether or not anyone follows it: a stream cut off (the connection
    // lost, a ping unanswered on a busy host) is followed again on a new connection.
    for (let attempt = 1; end === undefined && attempt <= FOLLOW_ATTEMPTS; attempt++) {
      if (attempt > 1) {
        signal?.throwIfAborted();
        await sleep(FOLLOW_RETRY_MS * (attempt - 1));
      }
      try {
        await conn.lines(routePath(ROUTES.taskEvents, { id: task }), (v) => {
          const e = v as TaskProgressEvent;
          if (e.type === "log" && e.n !== undefined) {
            if (e.n < seen) return;
            seen = e.n + 1;
          }
          if (e.type === "end") end = e.task;
          onEvent?.(e);
        });
      } catch (err) {
        // An answer (no such task, denied) is final; a lost connection is not.
        if (!(err instanceof ConnectionLostError)) throw err;
        lost = err;
      }
    }
  } finally {
    signal?.removeEventListener("abort", abort);
  }
  if (!end) throw new GordeError("io", `task ${task} could not be followed to its end (${lost instanceof Error ? lost.message.replace(/\.$/, "") : "its stream ended early"}); it may still be running: see its log on the ${host}.`);
  return end;
}

/** A task's stream is followed again this many times in all, after a growing pause. */
const FOLLOW_ATTEMPTS = 5;
const FOLLOW_RETRY_MS = 1000;

/** The server's tasks a client follows to their end, and what each ends with. */
interface TaskResults {
  gc: GcResult;
  verify: VerifyReport;
  sync: SyncResult;
}

export class RemoteRepository implements Repository {
  readonly kind = "remote" as const;
  readonly conn: ServerConnection;
  readonly store: string;
  readonly url: string;

  private constructor(conn: ServerConnection, store: string, url: string) {
    this.conn = conn;
    this.store = store;
    this.url = url;
  }

  /** Connects to the server of `url`; unless `serverOnly`, the URL must name a datastore. */
  static async connect(url: string, opts: RemoteOptions, serverOnly = false): Promise<RemoteRepository> {
    const addr = parseServerUrl(url);
    if (!serverOnly && addr.store === "") throw new GordeError("usage", `"${url}" names no datastore: expected https://<user>@<host>[:<port>]/<store>.`);
    if (!addr.authId) throw new GordeError("usage", `${url} names no user: use https://<user>@<host>/<store> (or <user>!<token>@).`);
    if (!opts.secret) throw new GordeError("usage", "set GORDE_PASSWORD to the password or token secret of the repository's user.");
    const fingerprint = pinnedFingerprint(addr, opts.fingerprint, "server");
    const conn = await ServerConnection.connect({
      host: addr.host,
      port: addr.port,
      authId: addr.authId,
      secret: opts.secret,
      fingerprint,
      rate: opts.rate,
      signal: opts.signal,
    });
    return new RemoteRepository(conn, addr.store, url);
  }

  close(): void {
    this.conn.close();
  }

  private path(name: RouteName, params: Readonly<Record<string, unknown>> = {}): string {
    return routePath(ROUTES[name], { store: this.store, ...params });
  }

  /** A JSON call to this repository's datastore (its `store` parameter filled in). */
  private call<N extends RouteName>(name: N, ...[opts]: CallArgs<Routes[N], "store">): Promise<RouteResult<Routes[N]>> {
    const r: Route = ROUTES[name];
    return this.conn.json(r.method, this.path(name, opts?.params), { query: opts?.query, json: opts?.json, once: r.method === "POST" });
  }

  // ---- backup

  async openBackup(req: SessionRequest): Promise<BackupSession> {
    const started = await this.call("startBackup", {
      json: { ns: req.ns.join("/") || undefined, group: formatGroup(req.group), time: req.time, keyFingerprint: req.keyFingerprint },
    });
    const sid = started.session;
    const base = started.base ? { name: started.base.name, manifest: parseManifest(started.base.manifest, started.base.name) } : null;
    const ref = parseSnapshotRef(started.snapshot);
    if (ref.time === "latest") throw new GordeError("corrupt", "the server named no snapshot time.");
    let lost = false;
    this.conn.onLost(() => (lost = true));
    const files = new Map<string, Promise<Buffer>>();
    const baseFile = (file: string): Promise<Buffer> => {
      let p = files.get(file);
      if (!p) files.set(file, (p = this.conn.binary("GET", this.path("backupBaseFile", { session: sid, file }))));
      return p;
    };
    const batcher = new ChunkBatcher((body) => this.conn.json("PUT", this.path("uploadChunks", { session: sid }), { binary: body }));
    const alive = (): void => {
      if (lost) throw new GordeError("io", "the connection to the server was lost; the backup was abandoned and nothing of it was kept.");
    };
    return {
      ref: { type: ref.type, id: ref.id, time: ref.time },
      base,
      chunkDir: null,
      target: {
        kind: "remote",
        upload: (hex, blob, size) => {
          alive();
          return batcher.add({ hex, blob, size });
        },
      },
      baseIndexes: async (archive) => (base ? readArchiveIndexes(base.manifest, archive, base.name, baseFile) : undefined),
      baseLoader: (pool: ChunkPool) => ({
        load: async (hex: string) => pool.decode(await this.conn.binary("GET", this.path("backupBaseChunk", { session: sid, digest: hex })), hex),
      }),
      // The server checks, when the index arrives, that every chunk it names is stored.
      allStored: () => Promise.resolve(true),
      writeIndex: async (file, bytes) => {
        alive();
        await batcher.flush();
        await this.conn.json("PUT", this.path("uploadIndex", { session: sid, file }), { binary: bytes });
      },
      finish: async (manifest) => {
        alive();
        await this.call("finishBackup", { params: { session: sid }, json: manifest });
      },
      abort: async () => {
        if (!lost) await this.conn.request("DELETE", this.path("abortBackup", { session: sid }), { once: true }).catch(() => undefined);
      },
    };
  }

  // ---- restore

  async openReader(ns: string[], name: string): Promise<SnapshotReader> {
    const r = await this.call("openReader", {
      json: { ns: ns.join("/") || undefined, snapshot: name },
    });
    const sid = r.session;
    return {
      name: r.snapshot,
      manifest: parseManifest(r.manifest, r.snapshot),
      chunkDir: null,
      readFile: (file) => this.conn.binary("GET", this.path("readerFile", { session: sid, file })),
      loader: (pool) => {
        const fetcher = new ChunkFetcher((digests) => this.conn.binary("POST", this.path("readerChunks", { session: sid }), { json: { digests } }));
        return { load: async (hex) => pool.decode(await fetcher.get(hex), hex) };
      },
      close: async () => {
        await this.conn.request("DELETE", this.path("closeReader", { session: sid }), { once: true }).catch(() => undefined);
      },
    };
  }

  // ---- administration

  snapshots(ns: string[], group?: Group): Promise<SnapshotJson[]> {
    return this.call("listSnapshots", { query: { ns: ns.join("/") || undefined, group: group ? formatGroup(group) : undefined } });
  }

  /** Resolves `latest` here, as the datastore does: the group's newest finished snapshot. */
  async snapshot(ns: string[], name: string): Promise<SnapshotJson> {
    const ref = parseSnapshotRef(name);
    const list = await this.snapshots(ns, ref);
    if (ref.time === "latest") {
      const last = list.filter((x) => x.finished).at(-1);
      if (!last) throw new GordeError("not-found", `group ${formatGroup(ref)} has no finished snapshot.`);
      return last;
    }
    const s = list.find((x) => x.snapshot === name);
    if (!s) throw new GordeError("not-found", `snapshot ${name} does not exist.`);
    return s;
  }

  /** The snapshot's own name: `latest` resolved before a change, so that the answer names what changed. */
  private async exact(ns: string[], name: string): Promise<string> {
    return parseSnapshotRef(name).time === "latest" ? (await this.snapshot(ns, name)).snapshot : name;
  }

  groups(ns: string[]): Promise<{ group: string; owner: string | null; count: number; last: string | null }[]> {
    return this.call("listGroups", { query: { ns: ns.join("/") || undefined } });
  }

  async forget(ns: string[], name: string): Promise<string> {
    const snapshot = await this.exact(ns, name);
    await this.call("forgetSnapshot", { query: { ns: ns.join("/") || undefined, snapshot } });
    return snapshot;
  }

  async setProtected(ns: string[], name: string, on: boolean): Promise<string> {
    const snapshot = await this.exact(ns, name);
    await this.call("setProtected", { json: { ns: ns.join("/") || undefined, snapshot, protected: on } });
    return snapshot;
  }

  async notes(ns: string[], name: string): Promise<string> {
    const s = await this.snapshot(ns, name);
    if (!s.finished) throw new GordeError("usage", `snapshot ${s.snapshot} is unfinished.`);
    return s.notes ?? "";
  }

  async setNotes(ns: string[], snapshot: string, notes: string): Promise<void> {
    if (notes.length > MAX_NOTES_BYTES) throw new GordeError("usage", "notes are limited to 64 KiB.");
    await this.call("setNotes", { json: { ns: ns.join("/") || undefined, snapshot, notes } });
  }

  /** Records the snapshot's newest restore drill in its unprotected part. */
  async setDrillState(ns: string[], snapshot: string, state: DrillState): Promise<void> {
    await this.call("setDrill", { json: { ns: ns.join("/") || undefined, snapshot, state } });
  }

  async setOwner(ns: string[], group: string, owner: string): Promise<void> {
    await this.call("setOwner", { json: { ns: ns.join("/") || undefined, group, owner } });
  }

  /** The server keeps damaged snapshots too, and answers 409 when a removal fails. */
  async prune(ns: string[], group: Group, keep: PruneOptions, dryRun: boolean): Promise<PruneOutcome> {
    const k = Object.fromEntries(Object.entries(keep).filter(([, v]) => v !== undefined && v > 0));
    const plan = await this.call("prune", { json: { ns: ns.join("/") || undefined, group: formatGroup(group), keep: k, dryRun } });
    return { plan, damaged: [], failed: [] };
  }

  /** GC runs as a task on the server, followed to its end. */
  async gc(opts: TaskOptions & { cutoffSeconds?: number } = {}): Promise<GcResult> {
    return await this.runTask("gc", { cutoffSeconds: opts.cutoffSeconds }, opts.onEvent, opts.signal);
  }

  /** Verify runs as a task on the server; damage found fails the task (a "corrupt" error here). */
  async verify(ns: string[], snapshot: string | undefined, opts: TaskOptions = {}): Promise<VerifyReport> {
    return await this.runTask("verify", { ns: ns.join("/") || undefined, snapshot }, opts.onEvent, opts.signal);
  }

  status(): Promise<RepositoryStatus> {
    return this.call("datastoreStatus");
  }

  /** The datastore's used space and dedup factor over time, as the server sampled them. */
  usageHistory(): Promise<RouteResult<Routes["datastoreHistory"]>> {
    return this.call("datastoreHistory");
  }

  async setMaintenance(mode: "none" | "read-only" | "offline"): Promise<void> {
    await this.call("setMaintenance", { json: { mode } });
  }

  /** Starts a task (GC, verify) and follows it to its end; throws when it failed. */
  async runTask<N extends keyof TaskResults>(name: N, body: RouteBodyInput<Routes[N]>, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<TaskResults[N]> {
    const r: Route = ROUTES[name];
    const { task } = await this.conn.json<{ task: string }>(r.method, this.path(name), { json: body, once: true });
    const end = await followTask(this.conn, task, "server", onEvent, signal);
    if (end.state !== "ok") throw new GordeError(name === "verify" && end.state === "failed" ? "corrupt" : "io", end.error ?? `task ${task} ${end.state}.`);
    // The server's task ran the route's job: its result has that job's shape.
    return end.result as TaskResults[N];
  }
}
