// One backup: lock the group, find the base snapshot, write every archive's chunks and
// indexes, then the manifest (the snapshot becomes visible only then).
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { type Datastore, type Lock, MANIFEST_FILE, type SnapshotInfo, lockDir, writeFileAtomic } from "../datastore/datastore.ts";
import { encodeDynamicIndex } from "../format/dynamic-index.ts";
import { encodeFixedIndex, isValidFixedChunkSize } from "../format/fixed-index.ts";
import { type ArchiveEntry, type Manifest, encodeManifest, sha256Hex } from "../format/manifest.ts";
import { DEFAULT_ZSTD_LEVEL } from "../format/blob.ts";
import { FORMAT_VERSION } from "../format/magic.ts";
import { type Group, type SnapshotRef, formatSnapshot, formatTime, parseArchiveName } from "../format/names.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { ChunkReader } from "../datastore/chunk-reader.ts";
import { ChunkWriter, type WriteStats } from "./chunk-writer.ts";
import { DEFAULT_IMAGE_CHUNK_SIZE, backupImage } from "./image-archive.ts";
import type { ProgressFn } from "./progress.ts";
import { loadArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import { type TreeOptions, backupTree } from "./tree-archive.ts";

export interface BackupSource {
  archive: string;
  source: string;
}

export interface BackupOptions extends TreeOptions {
  ns?: string[];
  group: Group;
  sources: BackupSource[];
  /** unix seconds; must be newer than the group's newest snapshot */
  time?: number;
  chunkSize?: number;
  /** zstd level for new chunks, 1..19 (0: store uncompressed) */
  compressionLevel?: number;
  notes?: string;
  config?: Record<string, unknown>;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export interface BackupResult {
  snapshot: string;
  time: number;
  base: string | null;
  archives: { name: string; kind: "img" | "tree"; size: number }[];
  stats: WriteStats;
  durationMs: number;
}

export async function backup(store: Datastore, opts: BackupOptions): Promise<BackupResult> {
  const started = Date.now();
  const ns = opts.ns ?? [];
  const chunkSize = opts.chunkSize ?? DEFAULT_IMAGE_CHUNK_SIZE;
  const level = opts.compressionLevel ?? DEFAULT_ZSTD_LEVEL;
  if (!Number.isInteger(level) || level < 0 || level > 19) {
    throw new GordeError("usage", `compression level ${level} is not a whole number from 0 to 19.`);
  }
  if (!isValidFixedChunkSize(chunkSize)) {
    throw new GordeError("usage", `chunk size ${chunkSize} is not a power of two between 64 KiB and 4 MiB.`);
  }
  const names = new Set<string>();
  for (const s of opts.sources) {
    parseArchiveName(s.archive);
    if (names.has(s.archive)) throw new GordeError("usage", `archive ${s.archive} is named twice.`);
    names.add(s.archive);
  }
  if (opts.sources.length === 0) throw new GordeError("usage", "a backup needs at least one <archive>=<source>.");

  const groupLock = store.lockGroup(ns, opts.group);
  const locks: Lock[] = [groupLock];
  let snapDir: string | undefined;
  let finished = false;
  // Block images keep two workers as busy as three (measured), with ~70 MiB less memory;
  // file archives gain from a third, which reads small files while the others compress.
  const imagesOnly = opts.sources.every((s) => parseArchiveName(s.archive).kind === "img");
  const pool = new ChunkPool(imagesOnly ? Math.max(1, Math.min(4, os.availableParallelism())) : undefined);
  try {
    const existing = await store.listSnapshots(ns, opts.group);
    const last = existing.at(-1);
    let time = opts.time ?? Math.floor(Date.now() / 1000);
    if (last && time <= last.time) {
      if (opts.time !== undefined) {
        throw new GordeError(
          "usage",
          `snapshot time ${formatTime(time)} is not newer than the group's last snapshot ${formatTime(last.time)}.`,
        );
      }
      time = last.time + 1; // two backups within one second
    }
    // The base is the newest finished snapshot whose last verification did not fail.
    const base = existing.filter((s) => s.finished && s.manifest?.unprotected.verify?.state !== "failed").at(-1);
    if (base) locks.push(lockDir(base.dir, "sh", `snapshot ${formatSnapshot(base)}`));
    locks.push(store.registerBackup(started));

    const ref: SnapshotRef = { ...opts.group, time };
    snapDir = store.snapshotDir(ns, ref);
    await fsp.mkdir(snapDir);
    // Held until the end: forget and prune cannot remove a snapshot being written.
    locks.push(lockDir(snapDir, "sh", `snapshot ${formatSnapshot(ref)}`));

    const known = base ? await baseDigests(store, base) : Buffer.alloc(0);
    await pool.init(store.chunks.dir, level, known);
    const writer = new ChunkWriter(store.chunks, pool);
    const reader = new ChunkReader(pool);
    const archives: ArchiveEntry[] = [];
    for (const s of opts.sources) {
      const { kind } = parseArchiveName(s.archive);
      const progress: ProgressFn | undefined = opts.progress && ((e) => opts.progress!({ ...e, item: s.archive }));
      if (kind === "img") {
        const prevIdx = base ? await loadArchiveIndexes(store, base, s.archive).catch(() => undefined) : undefined;
        const prevSource = base?.manifest?.archives.find((a) => a.name === s.archive)?.source;
        const { index, source } = await backupImage(s.source, {
          store: store.chunks,
          writer,
          chunkSize,
          prev: prevIdx?.kind === "img" ? { index: prevIdx.index, source: prevSource } : undefined,
          signal: opts.signal,
          progress,
        });
        const file = `${s.archive}.fidx`;
        const bytes = encodeFixedIndex(index);
        await writeFileAtomic(path.join(snapDir, file), bytes);
        archives.push({ name: s.archive, kind, size: index.size, indexes: [{ file, csum: sha256Hex(bytes), size: bytes.length }], source });
      } else {
        const prev = base ? await loadArchiveIndexes(store, base, s.archive).catch(() => undefined) : undefined;
        const tree = await backupTree(s.source, {
          ...opts,
          writer,
          pool,
          reader,
          prev: prev?.kind === "tree" ? prev : undefined,
          signal: opts.signal,
          progress,
        });
        const indexes = [];
        for (const [suffix, idx] of [
          ["entries", tree.entries],
          ["payload", tree.payload],
        ] as const) {
          const file = `${s.archive}.${suffix}.didx`;
          const bytes = encodeDynamicIndex(idx);
          await writeFileAtomic(path.join(snapDir, file), bytes);
          indexes.push({ file, csum: sha256Hex(bytes), size: bytes.length });
        }
        archives.push({ name: s.archive, kind, size: tree.payload.size, indexes });
      }
    }
    await writer.drain();
    // Chunks were fdatasync'ed one by one; this makes their directory entries durable
    // before the manifest can name them.
    await store.chunks.sync();
    const manifest: Manifest = {
      format: FORMAT_VERSION,
      type: ref.type,
      id: ref.id,
      time,
      archives,
      cryptMode: "none",
      keyFingerprint: null,
      config: opts.config,
      stats: {
        newBytes: writer.stats.newBytes,
        reusedBytes: writer.stats.reusedBytes,
        newChunks: writer.stats.newChunks,
        durationMs: Date.now() - started,
      },
      unprotected: opts.notes !== undefined ? { notes: opts.notes } : {},
    };
    await writeFileAtomic(path.join(snapDir, MANIFEST_FILE), encodeManifest(manifest));
    finished = true;
    return {
      snapshot: formatSnapshot(ref),
      time,
      base: base ? formatSnapshot(base) : null,
      archives: archives.map((a) => ({ name: a.name, kind: a.kind, size: a.size })),
      stats: writer.stats,
      durationMs: Date.now() - started,
    };
  } finally {
    await pool.close();
    if (!finished && snapDir !== undefined) {
      await fsp.rm(snapDir, { recursive: true, force: true });
      // A group whose first backup failed leaves no empty directory behind.
      await fsp.rmdir(path.dirname(snapDir)).catch(() => undefined);
    }
    for (const l of locks.reverse()) l.release();
  }
}

/** Every digest the base snapshot references: chunks the workers need not compress. */
async function baseDigests(store: Datastore, base: SnapshotInfo): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const a of base.manifest!.archives) {
    const idx = await loadArchiveIndexes(store, base, a.name);
    if (idx.kind === "img") parts.push(idx.index.digests);
    else
      for (const d of [idx.entries, idx.payload]) {
        for (let i = 0; i < d.count; i++) parts.push(d.digest(i));
      }
  }
  return Buffer.concat(parts);
}

