// Sync (offsite copy): this server pulls finished snapshots from another gorde server,
// downloading only the chunks its datastore lacks. Chunks are copied as they are stored
// there, so encrypted backups stay encrypted (this server never needs the key); each chunk
// is checked on arrival (CRC, and the digest of unencrypted ones) and each index against
// the manifest before the snapshot is made visible, manifest last.
import fsp from "node:fs/promises";
import path from "node:path";
import { ServerConnection } from "../api/connection.ts";
import { ROUTES, type SnapshotJson, type SyncResult, routePath } from "../api/routes.ts";
import { GordeError } from "../errors.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { type Datastore, MANIFEST_FILE } from "../datastore/datastore.ts";
import { SnapshotWriter } from "../datastore/snapshot-writer.ts";
import { ManifestSchema, sha256Hex } from "../format/manifest.ts";
import { formatGroup, formatSnapshot, parseGroup, parseSnapshotRef } from "../format/names.ts";
import { ownsGroup } from "../host/auth-roles.ts";
import type { Remote } from "./remotes.ts";
import { indexDigests } from "./sessions.ts";
import type { TaskContext } from "../host/tasks.ts";

export interface SyncOptions {
  /** the source: a remote an administrator configured */
  remote: Remote;
  ns: string[];
  /** only these groups (`vm/100`); all when absent */
  groups?: string[];
  /** only the newest N finished snapshots of each group */
  last?: number;
  store: Datastore;
  pool: () => Promise<ChunkPool>;
  /** owner of groups this sync creates */
  owner: string;
  task: TaskContext;
}

const PARALLEL = 8;

/**
 * Why a remote could not be reached, in a few words after its configured name: the task
 * log is read by whoever started the sync, who chose the remote by name, not its address.
 */
function unreachable(name: string, err: unknown): GordeError {
  const e = err as Error & { code?: string; cause?: { code?: string } };
  const code = e.cause?.code ?? e.code;
  const reason = /certificate fingerprint/.test(e.message)
    ? "its certificate does not match the configured fingerprint"
    : code === "ECONNREFUSED"
      ? "connection refused"
      : code === "ENOTFOUND" || code === "EAI_AGAIN"
        ? "its host name is not known"
        : code === "ETIMEDOUT"
          ? "timed out"
          : code === "EHOSTUNREACH" || code === "ENETUNREACH"
            ? "no route to it"
            : "the connection failed";
  return new GordeError("io", `cannot connect to remote ${name}: ${reason}.`, { cause: err });
}

export async function syncDatastore(o: SyncOptions): Promise<SyncResult> {
  const r = o.remote;
  o.task.log(`pulling from remote ${r.name}`);
  let conn: ServerConnection;
  try {
    conn = await ServerConnection.connect({ host: r.host, port: r.port, authId: r.authId, secret: r.secret, fingerprint: r.fingerprint, signal: o.task.signal });
  } catch (err) {
    o.task.signal.throwIfAborted();
    throw unreachable(r.name, err);
  }
  const result: SyncResult = { snapshots: 0, skipped: 0, chunks: 0, bytes: 0 };
  try {
    const ns = o.ns.join("/") || undefined;
    const list = await conn.call(ROUTES, "listSnapshots", { params: { store: r.store }, query: { ns } }).catch((err: unknown) => {
      o.task.signal.throwIfAborted();
      const code = err instanceof GordeError ? err.code : undefined;
      if (code === "denied") throw new GordeError("denied", `remote ${r.name} refused its configured user or secret, or denies it the datastore.`, { cause: err });
      if (code === "not-found") throw new GordeError("not-found", `remote ${r.name} has no datastore ${r.store} its configured user may see.`, { cause: err });
      throw unreachable(r.name, err);
    });
    const wanted = new Set(o.groups?.map((g) => formatGroup(parseGroup(g))));
    const byGroup = new Map<string, SnapshotJson[]>();
    for (const s of list) {
      if (!s.finished) continue;
      const g = s.snapshot.slice(0, s.snapshot.lastIndexOf("/"));
      if (wanted.size && !wanted.has(g)) continue;
      (byGroup.get(g) ?? byGroup.set(g, []).get(g)!).push(s);
    }
    const pool = await o.pool();
    for (const [group, snaps] of byGroup) {
      const g = parseGroup(group);
      const owner = await o.store.groupOwner(o.ns, g);
      if (owner !== null && !ownsGroup(o.owner, owner)) {
        o.task.log(`skipping ${group}: it belongs to ${owner} here, not to ${o.owner}`);
        result.skipped += snaps.length;
        continue;
      }
      // As for a backup: nobody takes over a group that has snapshots but no owner.
      if (owner === null && (await o.store.listSnapshots(o.ns, g)).length > 0) {
        o.task.log(`skipping ${group}: it has snapshots here but no owner; an admin must set one`);
        result.skipped += snaps.length;
        continue;
      }
      const pick = o.last ? snaps.slice(-o.last) : snaps;
      // A group new here is claimed as a backup claims it: under its lock, by the first
      // snapshot actually written, which takes the group away again if it does not finish.
      // Claimed before the pull, a group whose snapshots all vanished stayed, empty and owned.
      let unowned = owner === null;
      const claimGroup = async (): Promise<void> => {
        const now = await o.store.groupOwner(o.ns, g);
        if (now !== null && !ownsGroup(o.owner, now)) throw new GordeError("locked", `group ${group} was just created here by ${now}; it is not pulled.`);
        if (now === null) await o.store.setGroupOwner(o.ns, g, o.owner);
      };
      for (const s of pick) {
        o.task.signal.throwIfAborted();
        const ref = parseSnapshotRef(s.snapshot);
        if (ref.time === "latest") continue;
        const dir = o.store.snapshotDir(o.ns, { ...g, time: ref.time });
        const have = await fsp.stat(path.join(dir, MANIFEST_FILE)).catch(() => undefined);
        if (have) continue;
        const pulled = await pullSnapshot(conn, r.store, o, pool, s.snapshot, result, unowned ? claimGroup : undefined);
        if (pulled !== "pulled") {
          // Pruned or forgotten there since the listing (as PBS's pull says, vanished), or
          // being removed at this moment: nothing to copy now.
          o.task.log(
            pulled === "vanished"
              ? `skipped ${s.snapshot}: removed on remote ${r.name} since the listing`
              : `skipped ${s.snapshot}: in use on remote ${r.name} (a prune removing it); the next sync pulls it if it is still there`,
          );
          result.skipped++;
          continue;
        }
        unowned = false;
        o.task.progress({ snapshots: result.snapshots, chunks: result.chunks, bytes: result.bytes });
      }
    }
    o.task.log(`pulled ${result.snapshots} snapshots: ${result.chunks} new chunks, ${result.bytes} bytes`);
    return result;
  } finally {
    conn.close();
  }
}

/** Copies one snapshot, unless the remote no longer has it or holds it locked (a forget under way). */
async function pullSnapshot(
  conn: ServerConnection,
  remoteStore: string,
  o: SyncOptions,
  pool: ChunkPool,
  name: string,
  result: SyncResult,
  claimGroup: (() => Promise<void>) | undefined,
): Promise<"pulled" | "vanished" | "in-use"> {
  const ref = parseSnapshotRef(name);
  const opened = await conn.call(ROUTES, "openReader", { params: { store: remoteStore }, json: { ns: o.ns.join("/") || undefined, snapshot: name } }).catch((err: unknown) => {
    if (err instanceof GordeError && (err.code === "not-found" || err.code === "locked")) return err.code;
    throw err;
  });
  if (opened === "not-found") return "vanished";
  if (opened === "locked") return "in-use";
  const parsed = ManifestSchema.safeParse(opened.manifest);
  if (!parsed.success) throw new GordeError("corrupt", `the source server sent an invalid manifest for ${name}.`);
  const manifest = parsed.data;
  if (manifest.type !== ref.type || manifest.id !== ref.id || manifest.time !== ref.time) {
    throw new GordeError("corrupt", `the source server's manifest for ${name} names another snapshot.`);
  }
  const sid = opened.session;
  let writer: SnapshotWriter | undefined;
  try {
    writer = await SnapshotWriter.open(o.store, { ns: o.ns, group: { type: ref.type, id: ref.id }, time: manifest.time, copy: true, claimGroup });
    for (const f of manifest.archives.flatMap((a) => a.indexes)) {
      const bytes = await conn.binary("GET", routePath(ROUTES.readerFile, { session: sid, file: f.file }));
      if (bytes.length !== f.size || sha256Hex(bytes) !== f.csum) throw new GordeError("corrupt", `index ${f.file} of ${name} does not match its manifest.`);
      // A stored chunk of the other crypt mode is not this snapshot's data: fetched and checked (the worker decides).
      const want = manifest.cryptMode === "encrypt" ? "encrypted" : "plain";
      const missing = [...indexDigests(f.file, bytes, `index ${f.file} of ${name}`)].filter((hex) => o.store.chunks.storedKind(hex) !== want || !o.store.chunks.touch(hex));
      let next = 0;
      const w = writer;
      const worker = async (): Promise<void> => {
        while (next < missing.length) {
          o.task.signal.throwIfAborted();
          const hex = missing[next++]!;
          const blob = await conn.binary("GET", routePath(ROUTES.readerChunk, { session: sid, digest: hex }));
          const n = blob.length;
          const r = await pool.store(blob, hex, null, manifest.cryptMode === "encrypt");
          if (r.state === "new") {
            await w.stage(pool, [{ pending: r.pending!, bytes: n }]);
            result.chunks++;
            result.bytes += n;
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      await writer.writeIndex(f.file, bytes);
    }
    // A copy starts with its own verify state: none.
    const copy = { ...manifest, unprotected: manifest.unprotected.notes !== undefined ? { notes: manifest.unprotected.notes } : {} };
    await writer.finish(copy, pool);
    result.snapshots++;
    o.task.log(`pulled ${formatSnapshot(ref as typeof ref & { time: number })}`);
    return "pulled";
  } finally {
    await writer?.abort();
    await conn.request("DELETE", routePath(ROUTES.closeReader, { session: sid }), { once: true }).catch(() => undefined);
  }
}
