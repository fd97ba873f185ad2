// Restore and browse: the reverse of backup, every chunk checked against its digest.
import fs from "node:fs";
import path from "node:path";
import { GordeError } from "../errors.ts";
import type { Datastore } from "../datastore/datastore.ts";
import { type ListOptions, type RestoreKey, type SnapshotReader, listEntries, openLocalReader, withArchive } from "../datastore/snapshot-reader.ts";
import { zeroDigestHex } from "../format/zero-chunk.ts";
import { chunkDigestHex } from "../format/crypt.ts";
import type { Group } from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { restoreImage } from "./image-archive.ts";
import type { ProgressFn } from "./progress.ts";
import { readTreeEntries } from "../datastore/tree-reader.ts";
import { type SkippedEntry, restoreTree } from "./tree-restore.ts";

// Reading is the datastore layer's (the server browses with it too); restores use it from here.
export { type ListOptions, type RestoreKey, type SnapshotReader, listEntries, openLocalReader, readArchiveFile, readingKey, withArchive } from "../datastore/snapshot-reader.ts";

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
  /** images: bytes an interrupted restore to the same target had put in place, not fetched again (absent when none) */
  resumedBytes?: number;
  /** file archives: what the target refused (the rest is restored); absent or empty when all is */
  skipped?: SkippedEntry[];
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
      const digestHex = (data: Uint8Array): string => chunkDigestHex(data, key?.chunkKey);
      const r = await restoreImage(idx.index, opts.target, { loader, digestHex, zeroHex, inflight, signal: opts.signal, progress: opts.progress });
      return { snapshot: snap.name, archive: opts.archive, bytes: idx.index.size, durationMs: Date.now() - started, ...(r.resumedBytes ? { resumedBytes: r.resumedBytes } : {}) };
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

