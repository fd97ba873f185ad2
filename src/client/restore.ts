// Restore and browse: the reverse of backup, every chunk checked against its digest.
import fs from "node:fs";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { ChunkReader } from "../datastore/chunk-reader.ts";
import { type Datastore, type SnapshotInfo, lockDir } from "../datastore/datastore.ts";
import { type ArchiveIndexes, loadArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import { type Group, formatSnapshot } from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { restoreImage } from "./image-archive.ts";
import type { ProgressFn } from "./progress.ts";
import { readTreeEntries } from "./tree-reader.ts";
import { restoreTree, selectEntries } from "./tree-restore.ts";

export interface RestoreOptions {
  ns?: string[];
  snapshot: Group & { time: number | "latest" };
  archive: string;
  target: string;
  /** file archives: a file or subtree to restore */
  path?: string;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export interface RestoreResult {
  snapshot: string;
  archive: string;
  bytes: number;
  entries?: number;
  durationMs: number;
}

/** Opens a snapshot for reading: shared lock (no prune or forget meanwhile) and its indexes. */
async function openArchive<T>(
  store: Datastore,
  ns: string[],
  ref: Group & { time: number | "latest" },
  archive: string,
  fn: (snap: SnapshotInfo, idx: ArchiveIndexes, reader: ChunkReader, pool: ChunkPool) => Promise<T>,
): Promise<T> {
  const snap = await store.findSnapshot(ns, ref);
  if (snap.error) throw snap.error;
  if (!snap.finished) throw new GordeError("usage", `snapshot ${formatSnapshot(snap)} is unfinished and cannot be read.`);
  const lock = lockDir(snap.dir, "sh", `snapshot ${formatSnapshot(snap)}`);
  const pool = new ChunkPool();
  try {
    const idx = await loadArchiveIndexes(store, snap, archive);
    await pool.init(store.chunks.dir, 0, Buffer.alloc(0));
    return await fn(snap, idx, new ChunkReader(pool, 16), pool);
  } finally {
    await pool.close();
    lock.release();
  }
}

export async function restore(store: Datastore, opts: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now();
  return openArchive(store, opts.ns ?? [], opts.snapshot, opts.archive, async (snap, idx, reader, pool) => {
    if (idx.kind === "img") {
      if (opts.path !== undefined) throw new GordeError("usage", "--path applies to file archives (.tree), not to block images.");
      if (fs.existsSync(opts.target) && !fs.statSync(opts.target).isBlockDevice()) {
        throw new GordeError("usage", `${opts.target} already exists; restore an image to a new file or a block device.`);
      }
      const dir = path.dirname(path.resolve(opts.target));
      if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
        throw new GordeError("not-found", `directory ${dir} does not exist; create it before restoring an image into it.`);
      }
      await restoreImage(idx.index, opts.target, { pool, signal: opts.signal, progress: opts.progress });
      return { snapshot: formatSnapshot(snap), archive: opts.archive, bytes: idx.index.size, durationMs: Date.now() - started };
    }
    const entries = await readTreeEntries(idx.entries, idx.payload.size, reader);
    const r = await restoreTree(entries, idx.payload, opts.target, {
      reader,
      path: opts.path,
      signal: opts.signal,
      progress: opts.progress,
    });
    return { snapshot: formatSnapshot(snap), archive: opts.archive, bytes: r.bytes, entries: r.entries, durationMs: Date.now() - started };
  });
}

/** Entries of a file archive at `path` (a directory's children, or the entry itself). */
export async function listArchive(
  store: Datastore,
  opts: { ns?: string[]; snapshot: Group & { time: number | "latest" }; archive: string; path?: string; recursive?: boolean },
): Promise<TreeEntry[]> {
  return openArchive(store, opts.ns ?? [], opts.snapshot, opts.archive, async (_snap, idx, reader) => {
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
