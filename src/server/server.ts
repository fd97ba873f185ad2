// `gorde server`: datastores over HTTPS (HTTP/2, TLS with a pinned self-signed
// certificate), users and tokens with ACLs, backup and reader sessions, long operations
// as tasks, Prometheus metrics and an OpenAPI document of the whole API.
import fs from "node:fs";
import fsp from "node:fs/promises";
import type http2 from "node:http2";
import path from "node:path";
import { z } from "zod";
import { BATCH_RECORD_HEADER, MAX_BATCH_BYTES, MAX_BATCH_CHUNKS, decodeChunkBatch, encodeChunkBatch } from "../api/chunk-batch.ts";
import { API_VERSION, type MaintenanceMode, ROUTES, type RouteName } from "../api/routes.ts";
import { GordeError, systemCode } from "../errors.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { Datastore, type SnapshotInfo } from "../datastore/datastore.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { garbageCollect } from "../datastore/gc.ts";
import { pruneGroup, snapshotJson } from "../datastore/group-ops.ts";
import { verifyAll, verifySnapshots } from "../datastore/verify.ts";
import { MAX_CHUNK_SIZE, ENCRYPTED_BLOB_HEADER_SIZE } from "../format/magic.ts";
import { type Group, formatGroup, formatSnapshot, parseGroup, parseNamespace, parseSnapshotRef } from "../format/names.ts";
import type { DrillState } from "../format/manifest.ts";
import { PlanRunner } from "../jobs/plan-runner.ts";
import { keepOptions } from "../schedule/plan.ts";
import type { JobRunner } from "../jobs/scheduler.ts";
import { accessHandlers } from "./access-handlers.ts";
import { type ApiHandler, apiDispatcher, listenHttps } from "./api-host.ts";
import { AuthStore, type Privilege, datastoreAclPath, groupAccess, ownsGroup, remoteAclPath } from "./auth.ts";
import type { LoginLimits } from "./login-limiter.ts";
import { HttpError, sendError } from "./http.ts";
import { ServerMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { BackupSession, ReaderSession, SessionTable } from "./sessions.ts";
import { type Remote, RemoteStore } from "./remotes.ts";
import { TaskManager } from "./tasks.ts";
import { syncDatastore } from "./sync.ts";
import { ensureCertificate } from "./tls.ts";
import { datastoreStatus } from "../datastore/status.ts";

export const DEFAULT_PORT = 8007;
/** who the tasks of the plan's jobs run as */
const PLAN_AUTH_ID = "plan";
const CHUNK_LIMIT = MAX_CHUNK_SIZE + ENCRYPTED_BLOB_HEADER_SIZE + 1024;
const INDEX_LIMIT = 256 * 1024 * 1024;
const BATCH_LIMIT = MAX_BATCH_BYTES + MAX_BATCH_CHUNKS * BATCH_RECORD_HEADER;

export interface ServerOptions {
  stateDir: string;
  host?: string;
  port?: number;
  /** datastore name → directory; a missing or empty directory is initialised */
  datastores: Record<string, string>;
  /** password of user admin, needed on the first start (empty state directory) */
  adminPassword?: string;
  /** a backup or reader session without a request for this long is aborted (default 5 min) */
  sessionIdleMs?: number;
  /** delay after a failed login (default 500 ms) */
  authFailureDelayMs?: number;
  /** throttling of failed logins (tests use small ones; defaults DEFAULT_LOGIN_LIMITS) */
  loginLimits?: Partial<LoginLimits>;
  log?: (line: string) => void;
}

export interface GordeServer {
  readonly host: string;
  readonly port: number;
  readonly fingerprint: string;
  close(): Promise<void>;
}

interface StoreEntry {
  name: string;
  store: Datastore;
  pool: ChunkPool | undefined;
}


export async function startServer(opts: ServerOptions): Promise<GordeServer> {
  await fsp.mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const log = opts.log ?? (() => undefined);
  const auth = await AuthStore.open(opts.stateDir, { failureDelayMs: opts.authFailureDelayMs, loginLimits: opts.loginLimits, log });
  if (auth.isEmpty()) {
    if (!opts.adminPassword) {
      throw new GordeError("usage", "the state directory is new: set GORDE_ADMIN_PASSWORD to the password of the first user, admin.");
    }
    await auth.createFirstAdmin("admin", opts.adminPassword);
    log("created user admin with the role Admin on /");
  }
  const stores = new Map<string, StoreEntry>();
  for (const [name, dir] of Object.entries(opts.datastores)) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(name)) throw new GordeError("usage", `datastore name "${name}" may use only letters, digits, '.', '_' and '-'.`);
    stores.set(name, { name, store: await openOrInit(dir), pool: undefined });
  }
  if (stores.size === 0) throw new GordeError("usage", "the server needs at least one --datastore <name>=<dir>.");
  const maintenanceFile = path.join(opts.stateDir, "maintenance.json");
  const maintenance = await loadMaintenance(maintenanceFile);
  const tasks = await TaskManager.open(path.join(opts.stateDir, "tasks"));
  const remotes = await RemoteStore.open(opts.stateDir);
  const cert = await ensureCertificate(opts.stateDir);
  const bodies = new BodyBuffers();
  /** finish requests whose answer is not sent yet */
  let finishing = 0;
  const sessions = new SessionTable(opts.sessionIdleMs ?? 5 * 60_000);
  const metrics = new ServerMetrics(() => [...stores.values()].map((e) => ({ name: e.name, store: e.store })), tasks);

  const poolOf = async (e: StoreEntry): Promise<ChunkPool> => {
    if (!e.pool) {
      // One more worker than cores, as on the client: a worker waiting in syncfs leaves the cores busy.
      const pool = new ChunkPool();
      await pool.init(e.store.chunks.dir, 0, Buffer.alloc(0));
      e.pool ??= pool;
      if (e.pool !== pool) await pool.close();
    }
    return e.pool;
  };

  // ---- permissions
  const privs = (authId: string, store: string, ns: string[]): Set<Privilege> => auth.privileges(authId, datastoreAclPath(store, ns));
  const deny = (authId: string, what: string): never => {
    throw new HttpError(403, `permission denied: ${authId} may not ${what}.`);
  };
  const storeFor = (authId: string, name: string, access: "read" | "write" | "admin"): StoreEntry => {
    const e = stores.get(name);
    // An unknown store and a store the caller may not see answer alike.
    if (!e || !auth.anyPrivilegesBelow(authId, datastoreAclPath(name))) throw new HttpError(404, `no datastore ${name}.`);
    const mode = maintenance[name] ?? "none";
    if (mode === "offline" && access !== "admin") throw new HttpError(503, `datastore ${name} is offline for maintenance.`);
    if (mode === "read-only" && access === "write") throw new HttpError(503, `datastore ${name} is read-only for maintenance; no backups or changes now.`);
    return e;
  };
  const groupAcc = async (authId: string, e: StoreEntry, ns: string[], g: Group) => {
    const owner = await e.store.groupOwner(ns, g);
    return { owner, acc: groupAccess(privs(authId, e.name, ns), owner !== null && ownsGroup(authId, owner)) };
  };
  const ownTask = (authId: string, id: string) => {
    const t = tasks.get(id);
    if (!t || (t.authId !== authId && !auth.can(authId, "/", "Sys.Audit"))) throw new HttpError(404, `no task ${id}.`);
    return t;
  };
  const needSys = (authId: string, priv: Privilege, what: string): void => {
    if (!auth.can(authId, "/", priv)) deny(authId, what);
  };

  // ---- long operations as tasks (asked for over the API, or run by the plan's jobs)
  const taskProgress = (task: { progress(p: object): void }) => {
    let last = 0;
    return (p: object & { done: number; total: number }): void => {
      if (Date.now() - last < 200 && p.done < p.total) return;
      last = Date.now();
      task.progress({ ...p });
    };
  };
  const startGc = (authId: string, e: StoreEntry, cutoffMs: number | undefined) =>
    tasks.start({ type: "gc", authId, store: e.name }, async (task) => {
      const r = await garbageCollect(e.store, { cutoffMs, signal: task.signal, progress: taskProgress(task) });
      task.log(`removed ${r.removedChunks} chunks (${r.removedBytes} bytes), ${r.pendingChunks} pending, dedup factor ${r.dedupFactor.toFixed(2)}`);
      for (const w of r.warnings) task.log(`warning: ${w}`);
      return r;
    });
  const startVerify = (authId: string, e: StoreEntry, v: { ns: string[]; snaps?: SnapshotInfo[]; target?: string; outdatedDays?: number }) =>
    tasks.start({ type: "verify", authId, store: e.name, target: v.target }, async (task) => {
      const progress = taskProgress(task);
      const pool = await poolOf(e);
      const r = v.snaps
        ? await verifySnapshots(e.store, v.snaps, { pool, signal: task.signal, progress })
        : await verifyAll(e.store, { ns: v.ns, pool, signal: task.signal, progress, skipVerifiedWithinDays: v.outdatedDays });
      for (const s of r.snapshots) task.log(`${s.snapshot}: ${s.state}${s.errors.length ? ` (${s.errors.join("; ")})` : ""}`);
      if (!r.ok) throw new GordeError("corrupt", `verification found damage: ${r.badChunks.length} bad and ${r.missingChunks.length} missing chunks.`);
      return r;
    });

  const startSync = (authId: string, e: StoreEntry, b: { remote: Remote; ns: string[]; groups?: string[]; last?: number }) =>
    tasks.start({ type: "sync", authId, store: e.name, target: `remote ${b.remote.name}` }, (task) => syncDatastore({ ...b, store: e.store, pool: () => poolOf(e), owner: authId, task }));
  const findSnap = async (e: StoreEntry, ns: string[], name: string): Promise<SnapshotInfo> => e.store.findSnapshot(ns, parseSnapshotRef(name));

  // The plan's prune, GC and verify jobs run here, as tasks like those asked for over the API.
  const planJobs: JobRunner = async (job, ctx) => {
    const storeName = "datastore" in job && job.datastore ? job.datastore : stores.size === 1 ? [...stores.keys()][0]! : undefined;
    const e = storeName === undefined ? undefined : stores.get(storeName);
    if (!e) throw new GordeError("usage", storeName ? `job ${job.name} names datastore ${storeName}, which this server does not have.` : `job ${job.name} must name its datastore: this server has several.`);
    const runTask = async (t: { id: string }): Promise<unknown> => {
      ctx.log(`task ${t.id}`);
      const abort = (): void => void tasks.abort(t.id);
      ctx.signal.addEventListener("abort", abort);
      const done = await tasks.wait(t.id).finally(() => ctx.signal.removeEventListener("abort", abort));
      if (done.state !== "ok") throw new GordeError("io", `task ${t.id} ${done.state}: ${done.error ?? "no reason given"}`);
      return done.result;
    };
    if (job.type === "gc") {
      const r = (await runTask(startGc(PLAN_AUTH_ID, e, undefined))) as { removedBytes: number; removedChunks: number };
      return { bytes: r.removedBytes, message: `removed ${r.removedChunks} chunks` };
    }
    if (job.type === "verify") {
      const r = (await runTask(startVerify(PLAN_AUTH_ID, e, { ns: [], outdatedDays: job["outdated-after"] }))) as { snapshots: unknown[] };
      return { message: `${r.snapshots.length} snapshots verified` };
    }
    if (job.type === "prune") {
      const wanted = job.guests === "all" || job.guests === undefined ? undefined : new Set(job.guests.map(String));
      const keep = keepOptions(job.keep);
      let removed = 0;
      for (const g of await e.store.listGroups([])) {
        if (g.type === "host" || (wanted && !wanted.has(g.id)) || job.exclude?.includes(Number(g.id))) continue;
        const r = await pruneGroup(e.store, [], g, keep, false);
        removed += r.plan.filter((d) => d.action === "remove").length;
        ctx.log(`${formatGroup(g)}: ${r.plan.filter((d) => d.action === "remove").length} removed${r.failed.length ? `, could not remove ${r.failed.join("; ")}` : ""}`);
      }
      return { message: `${removed} snapshots removed` };
    }
    if (job.type === "sync") {
      // The plan is applied by an administrator (Sys.Modify), who names the remote.
      const remote = remotes.get(job.remote);
      if (!remote) throw new GordeError("not-found", `job ${job.name} names remote ${job.remote}, which this server does not have: add it with gorde remote add.`);
      const r = (await runTask(startSync(job.owner ?? PLAN_AUTH_ID, e, { remote, ns: [], groups: job.groups, last: job.last }))) as {
        snapshots: number;
        chunks: number;
        bytes: number;
      };
      return { bytes: r.bytes, newBytes: r.bytes, message: `pulled ${r.snapshots} snapshots, ${r.chunks} chunks` };
    }
    throw new GordeError("unsupported", `a ${job.type} job does not run on the backup server.`);
  };
  const plan = await PlanRunner.open({
    planFile: path.join(opts.stateDir, "plan.yaml"),
    historyFile: path.join(opts.stateDir, "history.db"),
    host: "backup server",
    kinds: ["prune", "gc", "verify", "sync"],
    runner: () => planJobs,
    log,
  });

  const handlers: Record<RouteName, ApiHandler> = {
    version: () => ({ json: { version: "0.1.0", api: API_VERSION } }),
    openapi: () => ({ json: openApiDocument() }),
    metrics: async ({ authId }) => {
      needSys(authId, "Sys.Audit", "read the metrics");
      return { text: await metrics.render() };
    },
    listDatastores: ({ authId }) => ({
      json: [...stores.values()]
        .filter((e) => auth.anyPrivilegesBelow(authId, datastoreAclPath(e.name)))
        .map((e) => ({ name: e.name, maintenance: maintenance[e.name] ?? "none" })),
    }),
    datastoreStatus: async ({ authId, params }) => {
      const e = storeFor(authId, params.store!, "read");
      const p = privs(authId, e.name, []);
      if (!p.has("Datastore.Audit") && !p.has("Datastore.Backup")) deny(authId, `see the status of ${e.name}`);
      return { json: { name: e.name, maintenance: maintenance[e.name] ?? "none", ...(await datastoreStatus(e.store)) } };
    },
    setMaintenance: async ({ authId, params, body }) => {
      const e = storeFor(authId, params.store!, "admin");
      if (!privs(authId, e.name, []).has("Datastore.Modify")) deny(authId, `change the maintenance mode of ${e.name}`);
      const { mode } = body as { mode: MaintenanceMode };
      maintenance[e.name] = mode;
      await writeFileAtomic(maintenanceFile, Buffer.from(JSON.stringify(maintenance, null, 2) + "\n"));
      log(`datastore ${e.name}: maintenance mode ${mode}`);
      return { json: { ok: true } };
    },
    listGroups: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store!, "read");
      const ns = parseNamespace(query.ns as string | undefined);
      const out = [];
      for (const g of await e.store.listGroups(ns)) {
        const { owner, acc } = await groupAcc(authId, e, ns, g);
        if (!acc.list) continue;
        const snaps = await e.store.listSnapshots(ns, g);
        const last = snaps.filter((s) => s.finished).at(-1);
        out.push({ group: formatGroup(g), owner, count: snaps.length, last: last ? formatSnapshot(last) : null });
      }
      return { json: out };
    },
    listSnapshots: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store!, "read");
      const ns = parseNamespace(query.ns as string | undefined);
      const groups = query.group ? [parseGroup(query.group as string)] : await e.store.listGroups(ns);
      const out = [];
      for (const g of groups) {
        const { owner, acc } = await groupAcc(authId, e, ns, g);
        if (!acc.list) {
          // A group that does not exist yet has no snapshots to hide (a node asks before its first backup).
          if (query.group && owner === null && (await e.store.listSnapshots(ns, g)).length === 0) continue;
          if (query.group) deny(authId, `list the snapshots of ${formatGroup(g)}`);
          continue;
        }
        for (const s of await e.store.listSnapshots(ns, g)) out.push(snapshotJson(s, owner));
      }
      return { json: out };
    },
    forgetSnapshot: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(query.ns as string | undefined);
      // Permission before existence: no probing for snapshots of groups one may not see.
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(query.snapshot as string))).acc.prune) deny(authId, `forget ${query.snapshot as string}`);
      const s = await findSnap(e, ns, query.snapshot as string);
      await e.store.forget(s);
      log(`${authId} forgot ${e.name}:${formatSnapshot(s)}`);
      return { json: { ok: true } };
    },
    setNotes: async ({ authId, params, body }) => {
      const b = body as { ns?: string; snapshot: string; notes: string };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `change the notes of ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      if (!s.finished) throw new HttpError(400, `snapshot ${formatSnapshot(s)} is unfinished.`);
      await e.store.updateUnprotected(s, (u) => {
        u.notes = b.notes;
      });
      return { json: { ok: true } };
    },
    setDrill: async ({ authId, params, body }) => {
      const b = body as { ns?: string; snapshot: string; state: DrillState };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      // Who may write a snapshot's notes may record its drill: the node's identity, with its own groups.
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `record a drill of ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      if (!s.finished) throw new HttpError(400, `snapshot ${formatSnapshot(s)} is unfinished.`);
      await e.store.setDrillState(s, b.state);
      log(`${authId} recorded a ${b.state.result} drill of ${e.name}:${formatSnapshot(s)}`);
      return { json: { ok: true } };
    },
    setProtected: async ({ authId, params, body }) => {
      const b = body as { ns?: string; snapshot: string; protected: boolean };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `protect ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      await e.store.setProtected(s, b.protected);
      return { json: { ok: true } };
    },
    setOwner: async ({ authId, params, body }) => {
      const b = body as { ns?: string; group: string; owner: string };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      const g = parseGroup(b.group);
      if (!(await groupAcc(authId, e, ns, g)).acc.changeOwner) deny(authId, `change the owner of ${b.group}`);
      if ((await e.store.listSnapshots(ns, g)).length === 0) throw new HttpError(404, `group ${b.group} does not exist.`);
      await e.store.setGroupOwner(ns, g, b.owner);
      log(`${authId} gave ${e.name}:${b.group} to ${b.owner}`);
      return { json: { ok: true } };
    },
    prune: async ({ authId, params, body }) => {
      const b = body as { ns?: string; group: string; keep: Record<string, number>; dryRun?: boolean };
      const e = storeFor(authId, params.store!, b.dryRun ? "read" : "write");
      const ns = parseNamespace(b.ns);
      const g = parseGroup(b.group);
      if (!(await groupAcc(authId, e, ns, g)).acc.prune) deny(authId, `prune ${b.group}`);
      const r = await pruneGroup(e.store, ns, g, b.keep, b.dryRun === true);
      if (r.failed.length) throw new HttpError(409, `could not remove ${r.failed.join("; ")}`);
      return { json: r.plan.map((p) => ({ snapshot: p.snapshot, action: p.action })) };
    },
    gc: ({ authId, params, body }) => {
      const e = storeFor(authId, params.store!, "write");
      if (!privs(authId, e.name, []).has("Datastore.Modify")) deny(authId, `run garbage collection on ${e.name}`);
      const { cutoffSeconds } = body as { cutoffSeconds?: number };
      const t = startGc(authId, e, cutoffSeconds === undefined ? undefined : cutoffSeconds * 1000);
      return { json: { task: t.id } };
    },
    verify: async ({ authId, params, body }) => {
      const b = body as { ns?: string; snapshot?: string; outdatedDays?: number };
      const e = storeFor(authId, params.store!, "read");
      const ns = parseNamespace(b.ns);
      let snaps: SnapshotInfo[] | undefined;
      if (b.snapshot !== undefined) {
        if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.verify) deny(authId, `verify ${b.snapshot}`);
        snaps = [await findSnap(e, ns, b.snapshot)];
      } else if (!privs(authId, e.name, ns).has("Datastore.Verify")) {
        deny(authId, `verify datastore ${e.name}`);
      }
      const t = startVerify(authId, e, { ns, snaps, target: b.snapshot, outdatedDays: b.outdatedDays });
      return { json: { task: t.id } };
    },
    startBackup: async ({ authId, params, body, connection }) => {
      const b = body as { ns?: string; group: string; time?: number; keyFingerprint: string | null };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      const g = parseGroup(b.group);
      const p = privs(authId, e.name, ns);
      if (!p.has("Datastore.Backup")) deny(authId, `back up into ${e.name}`);
      const { owner, acc } = await groupAcc(authId, e, ns, g);
      if (owner !== null && !acc.backup) deny(authId, `back up into ${b.group}, which belongs to ${owner}`);
      if (owner === null && (await e.store.listSnapshots(ns, g)).length > 0) deny(authId, `back up into ${b.group}, which has no owner; an admin must set one`);
      const s = await BackupSession.open({
        authId,
        storeName: e.name,
        store: e.store,
        pool: await poolOf(e),
        ns,
        group: g,
        time: b.time,
        keyFingerprint: b.keyFingerprint,
        newGroup: owner === null,
        connection,
      });
      sessions.backups.set(s.id, s);
      log(`${authId} started backup ${e.name}:${formatSnapshot(s.ref)}`);
      const base = s.base?.manifest && s.base.manifest.keyFingerprint === b.keyFingerprint ? { name: formatSnapshot(s.base), manifest: s.base.manifest } : null;
      return { json: { session: s.id, snapshot: formatSnapshot(s.ref), time: s.ref.time, base } };
    },
    backupBaseFile: async ({ authId, params }) => ({ binary: await sessions.backup(params.session!, authId).baseFile(params.file!) }),
    backupBaseChunk: async ({ authId, params }) => {
      const s = sessions.backup(params.session!, authId);
      return { binary: await readChunk(await poolOf(stores.get(s.storeName)!), s.baseChunkPath(params.digest!)) };
    },
    uploadChunk: async ({ authId, params, query, body }) => {
      const s = sessions.backup(params.session!, authId);
      const before = s.stats.newChunks;
      const stored = await s.putChunk(params.digest!, query.size as number, body as Buffer);
      metrics.chunkReceived(s.storeName, s.stats.newChunks > before, (body as Buffer).length);
      return { json: { stored } };
    },
    uploadChunks: async ({ authId, params, body }) => {
      const s = sessions.backup(params.session!, authId);
      const b = body as Buffer;
      const bytes = b.length;
      const records = decodeChunkBatch(b, CHUNK_LIMIT, MAX_CHUNK_SIZE);
      // The body is a recycled buffer we own whole (see bodies below): it moves to a worker and comes back.
      const owned = b.byteOffset === 0 && bodies.owns(b.buffer as ArrayBuffer) ? (b.buffer as ArrayBuffer) : (new Uint8Array(b).buffer as ArrayBuffer);
      const refs = records.map((r) => ({ hex: r.hex, size: r.size, offset: r.blob.byteOffset - b.byteOffset, length: r.blob.length }));
      const before = { ...s.stats };
      const res = await s.putChunks(owned, refs);
      bodies.give(res.body);
      metrics.chunksReceived(s.storeName, s.stats.newChunks - before.newChunks, s.stats.existingChunks - before.existingChunks, bytes);
      return { json: { stored: res.stored } };
    },
    uploadIndex: async ({ authId, params, body }) => {
      await sessions.backup(params.session!, authId).putIndex(params.file!, body as Buffer);
      return { json: { ok: true } };
    },
    finishBackup: async ({ authId, params, body, stream }) => {
      const s = sessions.backup(params.session!, authId);
      // Counted until its answer is out: a graceful stop lets it arrive.
      finishing++;
      stream.once("close", () => finishing--);
      try {
        const name = await s.finish(body);
        sessions.backups.delete(s.id);
        metrics.backupDone(s.storeName, "ok", s.stats.newBytes);
        const shadowed = s.stats.shadowedChunks ? `; ${s.stats.shadowedChunks} encrypted uploads under the names of stored unencrypted chunks were dropped` : "";
        log(`${authId} finished backup ${s.storeName}:${name} (${s.stats.newChunks} new chunks${shadowed})`);
        return { json: { snapshot: name } };
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 400)) {
          await sessions.abortBackup(s);
          metrics.backupDone(s.storeName, "failed", 0);
        }
        throw err;
      }
    },
    abortBackup: async ({ authId, params }) => {
      const s = sessions.backup(params.session!, authId);
      await sessions.abortBackup(s);
      metrics.backupDone(s.storeName, "failed", 0);
      log(`${authId} aborted backup ${s.storeName}:${formatSnapshot(s.ref)}`);
      return { json: { ok: true } };
    },
    openReader: async ({ authId, params, body, connection }) => {
      const b = body as { ns?: string; snapshot: string };
      const e = storeFor(authId, params.store!, "read");
      const ns = parseNamespace(b.ns);
      const ref = parseSnapshotRef(b.snapshot);
      if (!(await groupAcc(authId, e, ns, ref)).acc.read) deny(authId, `read ${b.snapshot}`);
      const snap = await e.store.findSnapshot(ns, ref);
      if (snap.error) throw snap.error;
      if (!snap.finished) throw new HttpError(400, `snapshot ${formatSnapshot(snap)} is unfinished and cannot be read.`);
      const r = new ReaderSession({ authId, storeName: e.name, store: e.store, ns, snap, connection });
      sessions.readers.set(r.id, r);
      return { json: { session: r.id, snapshot: formatSnapshot(snap), manifest: snap.manifest } };
    },
    readerFile: async ({ authId, params }) => ({ binary: await sessions.reader(params.session!, authId).file(params.file!) }),
    readerChunk: async ({ authId, params }) => {
      const s = sessions.reader(params.session!, authId);
      const file = s.chunkPath(params.digest!);
      metrics.chunkServed(s.storeName);
      return { binary: s.served(params.digest!, await readChunk(await poolOf(stores.get(s.storeName)!), file)) };
    },
    readerChunks: async ({ authId, params, body }) => {
      const s = sessions.reader(params.session!, authId);
      const { digests } = body as { digests: string[] };
      const files = digests.map((hex) => s.chunkPath(hex));
      const datas = await (await poolOf(stores.get(s.storeName)!)).readFiles(files.map((f) => Buffer.from(f)));
      const chunks = datas.map((d, i) => {
        if (d instanceof GordeError) {
          if (systemCode(d) === "ENOENT") throw new HttpError(404, `chunk ${digests[i]} is missing from the datastore; run verify.`);
          throw d;
        }
        return { hex: digests[i]!, size: 0, blob: s.served(digests[i]!, d) };
      });
      for (let i = 0; i < chunks.length; i++) metrics.chunkServed(s.storeName);
      return { binary: encodeChunkBatch(chunks) };
    },
    closeReader: ({ authId, params }) => {
      sessions.closeReader(sessions.reader(params.session!, authId));
      return { json: { ok: true } };
    },
    listTasks: ({ authId, query }) => {
      const all = auth.can(authId, "/", "Sys.Audit");
      const list = tasks.list({
        running: query.running === undefined ? undefined : query.running === "true",
        store: query.store as string | undefined,
        limit: (query.limit as number | undefined) ?? 100,
        authId: all ? undefined : authId,
      });
      return { json: list };
    },
    getTask: ({ authId, params }) => ({ json: ownTask(authId, params.id!) }),
    taskLog: async ({ authId, params, query }) => {
      ownTask(authId, params.id!);
      return { json: await tasks.readLog(params.id!, { offset: query.offset as number | undefined, limit: query.limit as number | undefined }) };
    },
    taskEvents: async ({ authId, params, stream }) => {
      ownTask(authId, params.id!);
      stream.respond({ ":status": 200, "content-type": "application/x-ndjson" });
      await new Promise<void>((resolve) => {
        const stop = tasks.subscribe(params.id!, (ev) => {
          if (stream.destroyed) return;
          stream.write(JSON.stringify(ev) + "\n");
          if (ev.type === "end") {
            stream.end();
            resolve();
          }
        });
        stream.once("close", () => {
          stop();
          resolve();
        });
      });
      return { handled: true };
    },
    abortTask: ({ authId, params }) => {
      const t = ownTask(authId, params.id!);
      if (t.authId !== authId && !auth.can(authId, "/", "Sys.Modify")) deny(authId, `abort task ${t.id}`);
      if (!tasks.abort(t.id)) throw new HttpError(409, `task ${t.id} is not running.`);
      return { json: { ok: true } };
    },
    getPlan: ({ authId }) => {
      needSys(authId, "Sys.Audit", "read the plan");
      return { json: plan.current() };
    },
    applyPlan: async ({ authId, body }) => {
      needSys(authId, "Sys.Modify", "apply a plan");
      await plan.apply((body as { text: string }).text);
      log(`${authId} applied a plan`);
      return { json: plan.current() };
    },
    listRuns: ({ authId, query }) => {
      needSys(authId, "Sys.Audit", "read the job history");
      return { json: plan.history.list({ job: query.job as string | undefined, limit: query.limit as number | undefined }) };
    },
    ...accessHandlers(auth, log),
    listRemotes: ({ authId }) => ({ json: remotes.list().filter((r) => auth.can(authId, remoteAclPath(r.name), "Remote.Audit")) }),
    addRemote: async ({ authId, body }) => {
      if (!auth.can(authId, remoteAclPath(), "Remote.Modify")) deny(authId, "add remotes");
      const r = await remotes.add(body as { name: string; url: string; fingerprint: string; secret: string });
      log(`${authId} added remote ${r.name} (${r.url})`);
      return { json: r };
    },
    removeRemote: async ({ authId, params }) => {
      if (!auth.can(authId, remoteAclPath(), "Remote.Modify")) deny(authId, "remove remotes");
      await remotes.remove(params.name!);
      log(`${authId} removed remote ${params.name}`);
      return { json: { ok: true } };
    },
    sync: ({ authId, params, body }) => {
      const b = body as { remote: string; ns?: string; groups?: string[]; last?: number };
      const e = storeFor(authId, params.store!, "write");
      const ns = parseNamespace(b.ns);
      if (!privs(authId, e.name, ns).has("Datastore.Backup")) deny(authId, `sync into ${e.name}`);
      // Permission before existence: an unknown remote and one the caller may not read answer alike.
      if (!auth.can(authId, remoteAclPath(b.remote), "Remote.Read")) deny(authId, `sync from remote ${b.remote}`);
      const remote = remotes.get(b.remote);
      if (!remote) throw new HttpError(404, `no remote ${b.remote}; an administrator adds it with gorde remote add.`);
      return { json: { task: startSync(authId, e, { remote, ns, groups: b.groups, last: b.last }).id } };
    },
  };

  const dispatch = apiDispatcher({
    routes: ROUTES,
    handlers,
    auth,
    binaryLimit: (name) =>
      name === "uploadChunks" ? { limit: BATCH_LIMIT, alloc: (n) => bodies.take(n) } : { limit: name === "uploadChunk" ? CHUNK_LIMIT : INDEX_LIMIT },
    sendFile,
    done: (name, status, ms) => metrics.request(name, status, ms),
    log,
  });
  const host = opts.host ?? "0.0.0.0";
  const listener = await listenHttps({
    host,
    port: opts.port ?? DEFAULT_PORT,
    cert,
    dispatch,
    onSessionClosed: (session) => void sessions.connectionClosed(session),
  });
  const port = listener.port;

  return {
    host,
    port,
    fingerprint: cert.fingerprint,
    async close() {
      // No new connections; a finish already sent gets its answer (up to 5 s), then every
      // open session is aborted and the connections closed.
      const closed = listener.closed();
      const deadline = Date.now() + 5000;
      while (finishing > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await sessions.close();
      listener.destroyConnections();
      await closed;
      await plan.close();
      await tasks.close();
      for (const e of stores.values()) {
        await e.pool?.close();
        e.store.close();
      }
    },
  };
}

/**
 * Batch bodies are recycled: a fresh multi-megabyte buffer per request kept V8's garbage
 * collector busy on both threads. A buffer is owned whole by one request at a time.
 */
class BodyBuffers {
  private readonly free: ArrayBuffer[] = [];
  private readonly mine = new WeakSet<ArrayBuffer>();

  take(n: number): Buffer {
    const i = this.free.findIndex((ab) => ab.byteLength >= n && ab.byteLength <= 2 * n + (1 << 20));
    const ab = i >= 0 ? this.free.splice(i, 1)[0]! : new ArrayBuffer(Math.ceil(n / (1 << 20)) * (1 << 20));
    this.mine.add(ab);
    return Buffer.from(ab, 0, n);
  }

  owns(ab: ArrayBuffer): boolean {
    return this.mine.has(ab);
  }

  give(ab: ArrayBuffer): void {
    this.mine.add(ab);
    if (this.free.length < 8) this.free.push(ab);
  }
}

/** A chunk file read in a worker thread: one round trip, where the thread pool takes several. */
async function readChunk(pool: ChunkPool, file: string): Promise<Buffer> {
  const [data] = await pool.readFiles([Buffer.from(file)]);
  if (data instanceof GordeError) {
    if (systemCode(data) === "ENOENT") throw new HttpError(404, `chunk ${path.basename(file)} is missing from the datastore; run verify.`);
    throw data;
  }
  return data!;
}

/** Streams a file (a chunk) as the answer; 404 when it vanished. */
function sendFile(stream: http2.ServerHttp2Stream, file: string): Promise<void> {
  return new Promise((resolve) => {
    stream.respondWithFile(
      file,
      { "content-type": "application/octet-stream" },
      {
        onError: (err) => {
          sendError(stream, (err as NodeJS.ErrnoException).code === "ENOENT" ? new HttpError(404, `chunk ${path.basename(file)} is missing from the datastore.`) : err);
          resolve();
        },
      },
    );
    stream.once("close", () => resolve());
  });
}

async function openOrInit(dir: string): Promise<Datastore> {
  const names = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    throw err;
  });
  if (names.length === 0) return Datastore.init(dir);
  return Datastore.open(dir);
}

async function loadMaintenance(file: string): Promise<Record<string, MaintenanceMode>> {
  if (!fs.existsSync(file)) return {};
  const schema = z.record(z.string(), z.enum(["none", "read-only", "offline"]));
  const r = schema.safeParse(JSON.parse(await fsp.readFile(file, "utf8")));
  if (!r.success) throw new GordeError("invalid", `${file} is not a valid maintenance file.`);
  return r.data;
}
