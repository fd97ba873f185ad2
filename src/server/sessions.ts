// Backup and reader sessions of the server. A backup session holds its group's lock and
// an invisible snapshot directory until `finish` writes the manifest; a session whose
// connection closes, or that stays idle too long, is aborted and leaves nothing behind.
// A reader session holds a shared lock on a finished snapshot and serves only the chunks
// its opened indexes name.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import type { BatchRecord, ChunkPool } from "../datastore/chunk-pool.ts";
import { type Datastore, type Lock, type SnapshotInfo, lockDir } from "../datastore/datastore.ts";
import { SnapshotWriter, type StagedChunk } from "../datastore/snapshot-writer.ts";
import { decodeDynamicIndex } from "../format/dynamic-index.ts";
import { decodeFixedIndex } from "../format/fixed-index.ts";
import { DIGEST_SIZE, FORMAT_VERSION, magicKind, MAX_INDEX_FILE_SIZE } from "../format/magic.ts";
import { type Manifest, ManifestSchema, decodeManifest, encodeManifest, manifestFormat, sha256Hex } from "../format/manifest.ts";
import { type Group, type SnapshotRef, formatGroup, formatSnapshot } from "../format/names.ts";
import { HttpError } from "../host/http.ts";
import { readRegularFile } from "../sys/bounded-read.ts";

/** Every digest an index file names (its kind from the file name). */
export function indexDigests(file: string, bytes: Buffer, what: string): Set<string> {
  const out = new Set<string>();
  if (file.endsWith(".fidx")) {
    const idx = decodeFixedIndex(bytes, what);
    for (let o = 0; o < idx.digests.length; o += DIGEST_SIZE) out.add(idx.digests.toString("hex", o, o + DIGEST_SIZE));
  } else if (file.endsWith(".didx")) {
    const idx = decodeDynamicIndex(bytes, what);
    for (let i = 0; i < idx.count; i++) out.add(idx.digest(i).toString("hex"));
  } else {
    throw new HttpError(400, `${file} is not an index file name (.fidx or .didx).`);
  }
  return out;
}

interface SessionBase {
  id: string;
  authId: string;
  storeName: string;
  store: Datastore;
  ns: string[];
  lastActivity: number;
  /** called when the HTTP/2 connection that opened the session closes */
  connection: object;
}

export class BackupSession implements SessionBase {
  readonly id = randomBytes(18).toString("base64url");
  readonly authId: string;
  readonly storeName: string;
  readonly store: Datastore;
  readonly ns: string[];
  readonly ref: SnapshotRef;
  readonly base: SnapshotInfo | undefined;
  readonly keyFingerprint: string | null;
  readonly connection: object;
  lastActivity = Date.now();
  /** chunks uploaded (or found stored) in this session */
  readonly chunks = new Set<string>();
  readonly indexes = new Map<string, { csum: string; size: number }>();
  private baseChunks: Set<string> | undefined;
  private baseAll: Set<string> | undefined;
  private readonly writer: SnapshotWriter;
  private readonly pool: ChunkPool;
  stats = { newChunks: 0, newBytes: 0, receivedBytes: 0, existingChunks: 0, shadowedChunks: 0 };

  private constructor(init: { authId: string; storeName: string; pool: ChunkPool; writer: SnapshotWriter; keyFingerprint: string | null; connection: object }) {
    this.authId = init.authId;
    this.storeName = init.storeName;
    this.writer = init.writer;
    this.store = init.writer.store;
    this.pool = init.pool;
    this.ns = init.writer.ns;
    this.ref = init.writer.ref;
    this.base = init.writer.base;
    this.keyFingerprint = init.keyFingerprint;
    this.connection = init.connection;
  }

  /** Locks the group, picks the base, creates the (invisible) snapshot directory. */
  static async open(init: {
    authId: string;
    storeName: string;
    store: Datastore;
    pool: ChunkPool;
    ns: string[];
    group: Group;
    time?: number;
    keyFingerprint: string | null;
    /** the group has no owner yet: record the caller */
    newGroup: boolean;
    connection: object;
  }): Promise<BackupSession> {
    const { store, ns, group } = init;
    // Under the group lock: two first backups of one group by different users cannot both
    // become its owner.
    const claimGroup = async (): Promise<void> => {
      const owner = await store.groupOwner(ns, group);
      if (owner !== null && owner !== init.authId) throw new HttpError(409, `group ${formatGroup(group)} was just created by ${owner}.`);
      await store.setGroupOwner(ns, group, init.authId);
    };
    const writer = await SnapshotWriter.open(store, { ns, group, time: init.time, claimGroup: init.newGroup ? claimGroup : undefined });
    return new BackupSession({ ...init, writer });
  }

  /** A file of the base snapshot (its indexes), for the client's incremental backup. */
  async baseFile(file: string): Promise<Buffer> {
    const entry = this.base?.manifest?.archives.flatMap((a) => a.indexes).find((i) => i.file === file);
    if (!this.base || !entry) throw new HttpError(404, `the base snapshot has no index ${file}.`);
    const bytes = await readRegularFile(path.join(this.base.dir, file), MAX_INDEX_FILE_SIZE, `index ${file} of ${formatSnapshot(this.base)}`);
    this.baseChunks ??= new Set();
    for (const d of indexDigests(file, bytes, `index ${file} of ${formatSnapshot(this.base)}`)) this.baseChunks.add(d);
    return bytes;
  }

  /** Every chunk the base snapshot names (read once). */
  private async baseDigests(): Promise<Set<string>> {
    if (this.baseAll) return this.baseAll;
    const all = new Set<string>();
    const base = this.base;
    for (const f of base?.manifest?.archives.flatMap((a) => a.indexes) ?? []) {
      const bytes = await readRegularFile(path.join(base!.dir, f.file), MAX_INDEX_FILE_SIZE, `index ${f.file} of ${formatSnapshot(base!)}`);
      for (const d of indexDigests(f.file, bytes, `index ${f.file} of ${formatSnapshot(base!)}`)) all.add(d);
    }
    return (this.baseAll = all);
  }

  /** A chunk of the base: only those named by a base index the client fetched. */
  baseChunkPath(hex: string): string {
    if (!this.baseChunks?.has(hex)) throw new HttpError(403, `chunk ${hex} is not named by an index of the base snapshot fetched in this session.`);
    return this.store.chunks.chunkPath(hex);
  }

  /** One uploaded chunk: a batch of one (the same checks, counts and commits). */
  async putChunk(hex: string, size: number, blob: Buffer): Promise<boolean> {
    const own = new Uint8Array(blob).buffer as ArrayBuffer;
    const r = await this.putChunks(own, [{ hex, size, offset: 0, length: blob.length }]);
    return r.stored === 1;
  }

  /**
   * A batch of uploaded chunks in `body` (owned whole by the caller, handed over to a
   * worker and given back for reuse). Every record is checked (CRC, the session's crypt
   * mode, the digest of a plain chunk), including a chunk that is stored already, so an
   * upload proves its data; a digest repeated in the batch is checked and stored once.
   * The first refused record is thrown after the others are taken. `stored` counts the
   * records the datastore now holds for this backup: it does not tell whether a chunk
   * was new (docs/server.md, "Chunk uploads").
   */
  async putChunks(body: ArrayBuffer, records: BatchRecord[]): Promise<{ stored: number; body: ArrayBuffer }> {
    const encrypted = this.keyFingerprint !== null;
    let stored = 0;
    let refused: Error | undefined;
    let todo = records;
    for (let attempt = 1; todo.length > 0; attempt++) {
      const r = await this.pool.storeBatch(body, todo, encrypted);
      body = r.body;
      const again: BatchRecord[] = [];
      const fresh: StagedChunk[] = [];
      for (const [i, rec] of todo.entries()) {
        const res = r.results[i]!;
        if (res instanceof GordeError) {
          refused ??= res.code === "io" ? res : new HttpError(400, res.message);
          continue;
        }
        if (attempt === 1) this.stats.receivedBytes += rec.length;
        if (res.state === "exists") {
          // Marks it used for a GC running now; removed since the worker looked: stored again from this upload.
          if (!this.store.chunks.touch(rec.hex)) {
            again.push(rec);
            continue;
          }
          this.stats.existingChunks++;
          if (res.shadowed) this.stats.shadowedChunks++;
        } else if (res.state === "new") {
          fresh.push({ pending: res.pending!, bytes: rec.length });
          this.stats.newChunks++;
          this.stats.newBytes += rec.size;
        }
        this.chunks.add(rec.hex);
        stored++;
      }
      // Committed once a batch is full, at the latest when the backup finishes.
      await this.writer.stage(this.pool, fresh);
      if (again.length > 0 && attempt === 3) {
        refused ??= new HttpError(503, `chunk ${again[0]!.hex} was removed while it was uploaded; send it again.`);
        break;
      }
      todo = again;
    }
    if (refused) throw refused;
    return { stored, body };
  }

  /**
   * Stores an index file after checking that every chunk it names was uploaded in this
   * backup or is named by the base snapshot (and still stored), as PBS does: an index
   * cannot name a chunk of another owner that the client never proved it holds.
   */
  async putIndex(file: string, bytes: Buffer): Promise<void> {
    const what = `index ${file}`;
    const digests = indexDigests(file, bytes, what);
    let base: Set<string> | undefined;
    for (const hex of digests) {
      if (this.chunks.has(hex)) continue;
      base ??= await this.baseDigests();
      if (!base.has(hex)) throw new HttpError(400, `${what} names chunk ${hex}, which was neither uploaded in this backup nor is in its base snapshot.`);
      if (!this.store.chunks.exists(hex)) throw new HttpError(400, `${what} names chunk ${hex} of the base snapshot, which is missing from the datastore; run verify.`);
    }
    await this.writer.writeIndex(file, bytes);
    this.indexes.set(file, { csum: sha256Hex(bytes), size: bytes.length });
  }

  /** Checks the manifest against the session and writes it: the snapshot becomes visible. */
  async finish(raw: unknown): Promise<string> {
    const parsed = ManifestSchema.safeParse(raw);
    if (!parsed.success) {
      const { path: at, message } = firstIssue(parsed.error);
      throw new HttpError(400, `the manifest is invalid at ${at || "top level"}: ${message}.`);
    }
    const m: Manifest = parsed.data;
    const name = formatSnapshot(this.ref);
    // Stored at the lowest version that holds it (encodeManifest), whatever the client said.
    if (m.format > FORMAT_VERSION) throw new HttpError(400, `the manifest has format ${m.format}; this server reads up to format ${FORMAT_VERSION}.`);
    if (m.format < manifestFormat(m)) throw new HttpError(400, `the manifest says format ${m.format} but has members of format ${manifestFormat(m)}.`);
    if (m.type !== this.ref.type || m.id !== this.ref.id || m.time !== this.ref.time) {
      throw new HttpError(400, `the manifest names another snapshot than the session's ${name}.`);
    }
    if (m.keyFingerprint !== this.keyFingerprint || (m.cryptMode === "encrypt") !== (this.keyFingerprint !== null)) {
      throw new HttpError(400, "the manifest's encryption does not match the session's key.");
    }
    // A sealed manifest (format 3) is checked as every reader will check it; the signature
    // of an encrypted one needs the key, which only clients have.
    try {
      decodeManifest(encodeManifest(m), "the manifest");
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
    if (m.unprotected.verify !== undefined) throw new HttpError(400, "a new manifest cannot carry a verify state.");
    if (m.unprotected.drill !== undefined) throw new HttpError(400, "a new manifest cannot carry a drill result.");
    const named = new Set<string>();
    for (const a of m.archives) {
      for (const f of a.indexes) {
        const got = this.indexes.get(f.file);
        if (!got) throw new HttpError(400, `the manifest names index ${f.file}, which was not uploaded.`);
        if (got.csum !== f.csum || got.size !== f.size) throw new HttpError(400, `the manifest's checksum of ${f.file} does not match the uploaded file.`);
        named.add(f.file);
      }
    }
    for (const f of this.indexes.keys()) if (!named.has(f)) throw new HttpError(400, `index ${f} was uploaded but the manifest does not name it.`);
    await this.writer.finish(m, this.pool);
    return name;
  }

  /** Removes everything of an unfinished session (a finish under way completes first). */
  async abort(): Promise<void> {
    await this.writer.abort();
  }
}

export class ReaderSession implements SessionBase {
  readonly id = randomBytes(18).toString("base64url");
  readonly authId: string;
  readonly storeName: string;
  readonly store: Datastore;
  readonly ns: string[];
  readonly snap: SnapshotInfo;
  readonly connection: object;
  lastActivity = Date.now();
  private readonly allowed = new Set<string>();
  private lock: Lock | undefined;
  done = false;

  constructor(init: { authId: string; storeName: string; store: Datastore; ns: string[]; snap: SnapshotInfo; connection: object }) {
    this.authId = init.authId;
    this.storeName = init.storeName;
    this.store = init.store;
    this.ns = init.ns;
    this.snap = init.snap;
    this.connection = init.connection;
    this.lock = lockDir(init.snap.dir, "sh", `snapshot ${formatSnapshot(init.snap)}`);
  }

  async file(file: string): Promise<Buffer> {
    const entry = this.snap.manifest?.archives.flatMap((a) => a.indexes).find((i) => i.file === file);
    if (!entry) throw new HttpError(404, `snapshot ${formatSnapshot(this.snap)} has no index ${file}.`);
    const bytes = await readRegularFile(path.join(this.snap.dir, file), MAX_INDEX_FILE_SIZE, `index ${file} of ${formatSnapshot(this.snap)}`);
    for (const d of indexDigests(file, bytes, `index ${file} of ${formatSnapshot(this.snap)}`)) this.allowed.add(d);
    return bytes;
  }

  chunkPath(hex: string): string {
    if (!this.allowed.has(hex)) throw new HttpError(403, `chunk ${hex} is not named by an index opened in this reader session.`);
    const p = this.store.chunks.chunkPath(hex);
    if (!fs.existsSync(p)) throw new HttpError(404, `chunk ${hex} is missing from the datastore; run verify.`);
    return p;
  }

  /**
   * A chunk read for this snapshot, served only when its crypt mode is the snapshot's:
   * a blob of the other mode under that name is not this snapshot's data (verify fails
   * the snapshot for it), so it is answered as missing.
   */
  served(hex: string, blob: Buffer): Buffer {
    const kind = magicKind(blob)?.kind;
    if ((kind === "BE" || kind === "BX") !== (this.snap.manifest?.cryptMode === "encrypt")) {
      throw new HttpError(404, `chunk ${hex} is missing from the datastore; run verify.`);
    }
    return blob;
  }

  close(): void {
    this.done = true;
    this.lock?.release();
    this.lock = undefined;
  }
}

/** Open sessions by id, aborted with their connection or after `idleMs` without a request. */
export class SessionTable {
  readonly backups = new Map<string, BackupSession>();
  readonly readers = new Map<string, ReaderSession>();
  private readonly timer: NodeJS.Timeout;
  private readonly idleMs: number;
  /** set by close(): requests of the sessions it ended learn why they are gone */
  private closing = false;
  /** connections already closed: a session whose opening request outlived its connection is not kept */
  private readonly closedConnections = new WeakSet<object>();

  constructor(idleMs: number) {
    this.idleMs = idleMs;
    this.timer = setInterval(() => void this.expire(), Math.max(200, Math.min(10_000, idleMs / 4)));
    this.timer.unref();
  }

  backup(id: string, authId: string): BackupSession {
    const s = this.backups.get(id);
    if (this.closing) throw new HttpError(410, "the server is shutting down; the backup was aborted and nothing of it was kept.");
    if (!s || s.authId !== authId) throw new HttpError(404, "no such backup session (it may have expired or been aborted).");
    s.lastActivity = Date.now();
    return s;
  }

  reader(id: string, authId: string): ReaderSession {
    const s = this.readers.get(id);
    if (!s || s.authId !== authId) throw new HttpError(404, "no such reader session (it may have expired or been closed).");
    s.lastActivity = Date.now();
    return s;
  }

  /**
   * Keeps a backup session just opened. Its connection may have closed while it was being
   * opened (the client killed at that moment): then it is aborted at once, or it would hold
   * its group's lock until the idle timeout.
   */
  async addBackup(s: BackupSession): Promise<void> {
    if (this.closedConnections.has(s.connection) || this.closing) {
      await s.abort();
      if (this.closing) throw new HttpError(410, "the server is shutting down; the backup was aborted and nothing of it was kept.");
      throw new HttpError(410, "the connection closed while the backup session was being opened; nothing of it was kept.");
    }
    this.backups.set(s.id, s);
  }

  addReader(r: ReaderSession): void {
    if (this.closedConnections.has(r.connection)) {
      r.close();
      throw new HttpError(410, "the connection closed while the reader session was being opened.");
    }
    this.readers.set(r.id, r);
  }

  async abortBackup(s: BackupSession): Promise<void> {
    this.backups.delete(s.id);
    await s.abort();
  }

  closeReader(s: ReaderSession): void {
    this.readers.delete(s.id);
    s.close();
  }

  /** The connection that opened these sessions is gone. */
  async connectionClosed(connection: object): Promise<void> {
    this.closedConnections.add(connection);
    for (const s of [...this.backups.values()]) if (s.connection === connection) await this.abortBackup(s).catch(() => undefined);
    for (const s of [...this.readers.values()]) if (s.connection === connection) this.closeReader(s);
  }

  private async expire(): Promise<void> {
    const cutoff = Date.now() - this.idleMs;
    for (const s of [...this.backups.values()]) if (s.lastActivity < cutoff) await this.abortBackup(s).catch(() => undefined);
    for (const s of [...this.readers.values()]) if (s.lastActivity < cutoff) this.closeReader(s);
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    for (const s of [...this.backups.values()]) await this.abortBackup(s).catch(() => undefined);
    for (const s of [...this.readers.values()]) this.closeReader(s);
  }
}
