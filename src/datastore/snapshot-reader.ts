// Reading a finished snapshot: opened locally (a shared lock, its index files read as
// files, docs/format.md §7) or on a server, the key checked before any chunk is read (and an
// encrypted manifest's signature with it), an archive's indexes and chunks behind a worker
// pool, a file archive listed and one file read whole. Restores (client/restore.ts), the
// server's own browsing and the node's all read through here.
import path from "node:path";
import { GordeError, corrupt } from "../errors.ts";
import type { ChunkKey } from "../format/crypt.ts";
import { MAX_INDEX_FILE_SIZE } from "../format/magic.ts";
import { type Manifest, checkManifestMac } from "../format/manifest.ts";
import { type Group, formatSnapshot } from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { readRegularFile } from "../sys/bounded-read.ts";
import { ChunkPool } from "./chunk-pool.ts";
import { type ChunkLoader, ChunkReader } from "./chunk-reader.ts";
import { type Datastore, type SnapshotInfo, lockDir } from "./datastore.ts";
import { type ArchiveIndexes, readArchiveIndexes } from "./snapshot-indexes.ts";
import { readTreeEntries, selectEntries } from "./tree-reader.ts";

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
  // The right key: its signature proves the manifest is the one the backup wrote.
  checkManifestMac(manifest, key.master, `manifest of ${name}`);
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

export interface ListOptions {
  ns?: string[];
  snapshot: Group & { time: number | "latest" };
  archive: string;
  path?: string;
  recursive?: boolean;
  key?: RestoreKey;
  warn?: (message: string) => void;
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
