// Restore and browse: the reverse of backup, every chunk checked against its digest.
import fs from "node:fs";
import path from "node:path";
import { GordeError, corrupt } from "../errors.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { type ChunkLoader, ChunkReader } from "../datastore/chunk-reader.ts";
import { type Datastore, type SnapshotInfo, lockDir } from "../datastore/datastore.ts";
import { type ArchiveIndexes, readArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import type { ChunkKey } from "../format/crypt.ts";
import type { Manifest } from "../format/manifest.ts";
import { zeroDigestHex } from "../format/zero-chunk.ts";
import { type Group, formatSnapshot } from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { restoreImage } from "./image-archive.ts";
import type { ProgressFn } from "./progress.ts";
import { readTreeEntries } from "./tree-reader.ts";
import { type SkippedEntry, restoreTree, selectEntries } from "./tree-restore.ts";
import { readRegularFile } from "../sys/bounded-read.ts";
import { MAX_INDEX_FILE_SIZE } from "../format/magic.ts";

export interface RestoreOptions {
  ns?: string[];
  snapshot: Group & { time: number | "latest" };
  archive: string;
  target: string;
  /** file archives: a file or subtree to restore */
  path?: string;
  key?: RestoreKey;
  /** told once when a key is given for a snapshot that is not encrypted (the key is then ignored) */
  warn?: (message: string) => void;
  /** chunks fetched at once for a block image (default 24) */
  concurrency?: number;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export interface RestoreResult {
  snapshot: string;
  archive: string;
  bytes: number;
  entries?: number;
  durationMs: number;
  /** file archives: what the target refused (the rest is restored); absent or empty when all is */
  skipped?: SkippedEntry[];
}

/** A finished snapshot opened for reading, locally or on a server. */
export interface SnapshotReader {
  readonly name: string;
  readonly manifest: Manifest;
  /** chunk directory the workers read from; null when chunks are fetched */
  readonly chunkDir: string | null;
  readFile(file: string): Promise<Buffer>;
  loader(pool: ChunkPool): ChunkLoader;
  close(): Promise<void>;
}

/** Opens a local snapshot: shared lock (no prune or forget meanwhile). */
export async function openLocalReader(store: Datastore, ns: string[], ref: Group & { time: number | "latest" }): Promise<SnapshotReader> {
  const snap = await store.findSnapshot(ns, ref);
  if (snap.error) throw snap.error;
  if (!snap.finished || !snap.manifest) throw new GordeError("usage", `snapshot ${formatSnapshot(snap)} is unfinished and cannot be read.`);
  const lock = lockDir(snap.dir, "sh", `snapshot ${formatSnapshot(snap)}`);
  return {
    name: formatSnapshot(snap),
    manifest: snap.manifest,
    chunkDir: store.chunks.dir,
    readFile: (file) => readSnapshotFile(snap, file),
    loader: (pool) => pool,
    close: () => Promise.resolve(lock.release()),
  };
}

async function readSnapshotFile(snap: SnapshotInfo, file: string): Promise<Buffer> {
  try {
    return await readRegularFile(path.join(snap.dir, file), MAX_INDEX_FILE_SIZE, `index ${file} of ${formatSnapshot(snap)}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw corrupt(`index ${file} of ${formatSnapshot(snap)} is missing.`);
    throw err;
  }
}

/**
 * The key a snapshot is read with, before any chunk is read: refuses a missing or wrong key
 * for an encrypted snapshot; none for a plain one, whose chunks a key would only garble (a key
 * given anyway is ignored and `warn` told so).
 */
export function readingKey(manifest: Manifest, name: string, key: RestoreKey | undefined, warn?: (message: string) => void): RestoreKey | undefined {
  if (manifest.cryptMode !== "encrypt") {
    if (key) warn?.(`snapshot ${name} is not encrypted; --keyfile ignored.`);
    return undefined;
  }
  if (!key) throw new GordeError("usage", `snapshot ${name} is encrypted; give its key with --keyfile.`);
  if (manifest.keyFingerprint !== key.chunkKey.fingerprint) {
    throw new GordeError(
      "usage",
      `snapshot ${name} was encrypted with key ${manifest.keyFingerprint}, not with the key given (${key.chunkKey.fingerprint}).`,
    );
  }
  return key;
}

export interface RestoreKey {
  master: Uint8Array;
  chunkKey: ChunkKey;
}

/** Runs `fn` on a snapshot's archive with a worker pool that decodes (and decrypts) chunks. */
export async function withArchive<T>(
  reader: SnapshotReader,
  opts: { archive: string; key?: RestoreKey; warn?: (message: string) => void },
  fn: (idx: ArchiveIndexes, chunks: ChunkReader, loader: ChunkLoader, key: RestoreKey | undefined) => Promise<T>,
): Promise<T> {
  const pool = new ChunkPool();
  try {
    const key = readingKey(reader.manifest, reader.name, opts.key, opts.warn);
    const idx = await readArchiveIndexes(reader.manifest, opts.archive, reader.name, (f) => reader.readFile(f));
    await pool.init(reader.chunkDir, 0, Buffer.alloc(0), key?.master);
    const loader = reader.loader(pool);
    return await fn(idx, new ChunkReader(loader, 16), loader, key);
  } finally {
    await pool.close();
  }
}

async function withLocal<T>(store: Datastore, opts: { ns?: string[]; snapshot: Group & { time: number | "latest" } }, fn: (r: SnapshotReader) => Promise<T>): Promise<T> {
  const reader = await openLocalReader(store, opts.ns ?? [], opts.snapshot);
  try {
    return await fn(reader);
  } finally {
    await reader.close();
  }
}

export async function restore(store: Datastore, opts: RestoreOptions): Promise<RestoreResult> {
  return withLocal(store, opts, (r) => restoreArchive(r, opts));
}

/** Entries of a file archive at `path` (a directory's children, or the entry itself). */
export async function listArchive(store: Datastore, opts: ListOptions): Promise<TreeEntry[]> {
  return withLocal(store, opts, (r) => listEntries(r, opts));
}

export interface ListOptions {
  ns?: string[];
  snapshot: Group & { time: number | "latest" };
  archive: string;
  path?: string;
  recursive?: boolean;
  key?: RestoreKey;
  warn?: (message: string) => void;
}

export async function restoreArchive(snap: SnapshotReader, opts: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now();
  return withArchive(snap, opts, async (idx, reader, loader, key) => {
    if (idx.kind === "img") {
      if (opts.path !== undefined) throw new GordeError("usage", "--path applies to file archives (.tree), not to block images.");
      if (fs.existsSync(opts.target) && !fs.statSync(opts.target).isBlockDevice()) {
        throw new GordeError("usage", `${opts.target} already exists; restore an image to a new file or a block device.`);
      }
      const dir = path.dirname(path.resolve(opts.target));
      if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
        throw new GordeError("not-found", `directory ${dir} does not exist; create it before restoring an image into it.`);
      }
      const zeroHex = (n: number): string => zeroDigestHex(n, key?.chunkKey);
      // From a server, more in flight keeps its batched reads full.
      const inflight = opts.concurrency || (snap.chunkDir === null ? 48 : undefined);
      await restoreImage(idx.index, opts.target, { loader, zeroHex, inflight, signal: opts.signal, progress: opts.progress });
      return { snapshot: snap.name, archive: opts.archive, bytes: idx.index.size, durationMs: Date.now() - started };
    }
    const entries = await readTreeEntries(idx.entries, idx.payload.size, reader);
    const r = await restoreTree(entries, idx.payload, opts.target, {
      reader,
      path: opts.path,
      signal: opts.signal,
      progress: opts.progress,
    });
    return { snapshot: snap.name, archive: opts.archive, bytes: r.bytes, entries: r.entries, durationMs: Date.now() - started, skipped: r.skipped };
  });
}

export async function listEntries(snap: SnapshotReader, opts: ListOptions): Promise<TreeEntry[]> {
  return withArchive(snap, opts, async (idx, reader) => {
    if (idx.kind !== "tree") throw new GordeError("usage", `${opts.archive} is a block image; only file archives can be listed.`);
    const all = await readTreeEntries(idx.entries, idx.payload.size, reader);
    const sub = (opts.path ?? "").replace(/^\/+|\/+$/g, "");
    const below = selectEntries(all, sub || undefined).filter((e) => {
      if (sub === "") return e.path.length > 0;
      return e.path.length >= sub.length && e.path.toString("latin1").startsWith(Buffer.from(sub).toString("latin1"));
    });
    if (opts.recursive) return below;
    const depth = sub === "" ? 0 : sub.split("/").length;
    const self = below.find((e) => depth > 0 && e.path.toString().split("/").length === depth);
    if (self && self.kind !== "dir") return [self];
    return below.filter((e) => e.path.toString("latin1").split("/").length === depth + 1);
  });
}

/**
 * One file of a file archive, read whole into memory (a web download): refused when the
 * path names no regular file, or when the file is larger than `maxBytes`. A hard link is
 * followed to the file it names. Every chunk is checked against its digest as it is read.
 */
export async function readArchiveFile(snap: SnapshotReader, opts: { archive: string; path: string; maxBytes: number; key?: RestoreKey }): Promise<{ entry: TreeEntry; data: Buffer }> {
  return withArchive(snap, opts, async (idx, reader) => {
    if (idx.kind !== "tree") throw new GordeError("usage", `${opts.archive} is a block image; a single file comes only from a file archive.`);
    const want = opts.path.replace(/^\/+|\/+$/g, "");
    const all = await readTreeEntries(idx.entries, idx.payload.size, reader);
    let entry = all.find((e) => e.path.toString() === want);
    if (entry?.kind === "hardlink") entry = all.find((e) => e.path.equals(entry!.link));
    if (!entry) throw new GordeError("not-found", `${opts.archive} of ${snap.name} has no ${want || "(root)"}.`);
    if (entry.kind !== "file") throw new GordeError("usage", `${want} in ${opts.archive} is a ${entry.kind}, not a file.`);
    if (entry.size > opts.maxBytes) throw new GordeError("usage", `${want} is ${entry.size} bytes, more than the ${opts.maxBytes} a download takes; restore it with gorde restore --path.`);
    const data = Buffer.alloc(entry.size);
    const payload = idx.payload;
    let filled = 0;
    while (filled < entry.size) {
      const pos = entry.offset + filled;
      const i = payload.find(pos);
      const chunk = await reader.read(payload.digest(i).toString("hex"));
      const start = payload.start(i);
      if (chunk.length !== payload.end(i) - start) throw corrupt(`a chunk of ${snap.name}/${opts.archive} has a different size than its index says.`);
      filled += chunk.copy(data, filled, pos - start, Math.min(chunk.length, pos - start + entry.size - filled));
    }
    return { entry, data };
  });
}
