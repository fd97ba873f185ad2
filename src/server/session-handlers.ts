// The session routes: a backup session (base files and chunks, chunk and index uploads,
// finish, abort) and a reader session (files and chunks of a finished snapshot).
import { BATCH_RECORD_HEADER, MAX_BATCH_BYTES, MAX_BATCH_CHUNKS, decodeChunkBatch, encodeChunkBatch } from "../api/chunk-batch.ts";
import path from "node:path";
import type { ROUTES, RouteName } from "../api/routes.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { GordeError, systemCode } from "../errors.ts";
import { MAX_CHUNK_FILE_SIZE, MAX_CHUNK_SIZE, MAX_INDEX_FILE_SIZE } from "../format/magic.ts";
import { formatSnapshot, parseGroup, parseNamespace, parseSnapshotRef } from "../format/names.ts";
import type { ApiHandlers } from "../host/api-host.ts";
import { HttpError } from "../host/http.ts";
import type { ServerContext } from "./server-context.ts";
import { BackupSession, ReaderSession } from "./sessions.ts";

const CHUNK_LIMIT = MAX_CHUNK_FILE_SIZE;
const INDEX_LIMIT = MAX_INDEX_FILE_SIZE;
const BATCH_LIMIT = MAX_BATCH_BYTES + MAX_BATCH_CHUNKS * BATCH_RECORD_HEADER;

type BackupRoute = "startBackup" | "backupBaseFile" | "backupBaseChunk" | "uploadChunk" | "uploadChunks" | "uploadIndex" | "finishBackup" | "abortBackup";
type ReaderRoute = "openReader" | "readerFile" | "readerChunk" | "readerChunks" | "closeReader";

/** What the backup routes keep between requests. */
export class Uploads {
  readonly bodies = new BodyBuffers();
  /** finish requests whose answer is not sent yet */
  finishing = 0;

  /** The size limit (and buffer allocator) of a route's binary body. */
  limit(name: RouteName): { limit: number; alloc?: (n: number) => Buffer } {
    return name === "uploadChunks" ? { limit: BATCH_LIMIT, alloc: (n) => this.bodies.take(n) } : { limit: name === "uploadChunk" ? CHUNK_LIMIT : INDEX_LIMIT };
  }
}

export function backupHandlers(ctx: ServerContext, uploads: Uploads): ApiHandlers<typeof ROUTES, BackupRoute> {
  const { stores, sessions, metrics, log, privs, deny, storeFor, groupAcc, poolOf } = ctx;
  const { bodies } = uploads;
  return {
    startBackup: async ({ authId, params, body, connection }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
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
      await sessions.addBackup(s);
      log(`${authId} started backup ${e.name}:${formatSnapshot(s.ref)}`);
      const base = s.base?.manifest && s.base.manifest.keyFingerprint === b.keyFingerprint ? { name: formatSnapshot(s.base), manifest: s.base.manifest } : null;
      return { json: { session: s.id, snapshot: formatSnapshot(s.ref), time: s.ref.time, base } };
    },
    backupBaseFile: async ({ authId, params }) => ({ binary: await sessions.backup(params.session, authId).baseFile(params.file) }),
    backupBaseChunk: async ({ authId, params }) => {
      const s = sessions.backup(params.session, authId);
      return { binary: await readChunk(await poolOf(stores.get(s.storeName)!), s.baseChunkPath(params.digest)) };
    },
    uploadChunk: async ({ authId, params, query, body }) => {
      const s = sessions.backup(params.session, authId);
      const before = s.stats.newChunks;
      const stored = await s.putChunk(params.digest, query.size, body);
      metrics.chunkReceived(s.storeName, s.stats.newChunks > before, body.length);
      return { json: { stored } };
    },
    uploadChunks: async ({ authId, params, body }) => {
      const s = sessions.backup(params.session, authId);
      const b = body;
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
      await sessions.backup(params.session, authId).putIndex(params.file, body);
      return { json: { ok: true } };
    },
    finishBackup: async ({ authId, params, body, stream }) => {
      const s = sessions.backup(params.session, authId);
      // Counted until its answer is out: a graceful stop lets it arrive.
      uploads.finishing++;
      stream.once("close", () => uploads.finishing--);
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
      const s = sessions.backup(params.session, authId);
      await sessions.abortBackup(s);
      metrics.backupDone(s.storeName, "failed", 0);
      log(`${authId} aborted backup ${s.storeName}:${formatSnapshot(s.ref)}`);
      return { json: { ok: true } };
    },
  };
}

export function readerHandlers(ctx: ServerContext): ApiHandlers<typeof ROUTES, ReaderRoute> {
  const { stores, sessions, metrics, deny, storeFor, groupAcc, poolOf } = ctx;
  return {
    openReader: async ({ authId, params, body, connection }) => {
      const b = body;
      const e = storeFor(authId, params.store, "read");
      const ns = parseNamespace(b.ns);
      const ref = parseSnapshotRef(b.snapshot);
      if (!(await groupAcc(authId, e, ns, ref)).acc.read) deny(authId, `read ${b.snapshot}`);
      const snap = await e.store.findSnapshot(ns, ref);
      if (snap.error) throw snap.error;
      if (!snap.finished) throw new HttpError(400, `snapshot ${formatSnapshot(snap)} is unfinished and cannot be read.`);
      const r = new ReaderSession({ authId, storeName: e.name, store: e.store, ns, snap, connection });
      sessions.addReader(r);
      return { json: { session: r.id, snapshot: formatSnapshot(snap), manifest: snap.manifest } };
    },
    readerFile: async ({ authId, params }) => ({ binary: await sessions.reader(params.session, authId).file(params.file) }),
    readerChunk: async ({ authId, params }) => {
      const s = sessions.reader(params.session, authId);
      const file = s.chunkPath(params.digest);
      metrics.chunkServed(s.storeName);
      return { binary: s.served(params.digest, await readChunk(await poolOf(stores.get(s.storeName)!), file)) };
    },
    readerChunks: async ({ authId, params, body }) => {
      const s = sessions.reader(params.session, authId);
      const { digests } = body;
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
      sessions.closeReader(sessions.reader(params.session, authId));
      return { json: { ok: true } };
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
