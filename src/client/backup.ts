// One backup: open a session on the target (a local datastore or a server), write every
// archive's chunks and indexes, then the manifest (the snapshot becomes visible only then).
import os from "node:os";
import { GordeError } from "../errors.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { ChunkReader } from "../datastore/chunk-reader.ts";
import { DEFAULT_ZSTD_LEVEL } from "../format/blob.ts";
import type { ChunkKey } from "../format/crypt.ts";
import { encodeDynamicIndex } from "../format/dynamic-index.ts";
import { encodeFixedIndex, isValidFixedChunkSize } from "../format/fixed-index.ts";
import { type ArchiveEntry, type Capture, MAX_LOG_LINES, type Manifest, manifestFormat, sealManifest, sha256Hex } from "../format/manifest.ts";
import { type Group, formatSnapshot, parseArchiveName } from "../format/names.ts";
import { ChunkWriter, type WriteStats } from "./chunk-writer.ts";
import { type BlockReader, DEFAULT_IMAGE_CHUNK_SIZE, backupImage } from "./image-archive.ts";
import type { ProgressFn } from "./progress.ts";
import { type TreeOptions, backupTree } from "./tree-archive.ts";
import type { Datastore } from "../datastore/datastore.ts";
import { openLocalBackup } from "./local-backup.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";

export interface BackupSource {
  archive: string;
  /** a file, a block device or a directory; or a block reader (a running VM's disk view) */
  source: string | BlockReader;
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
  /** the backup's log, stored in the manifest; lines added until it is finished count */
  log?: string[];
  /**
   * answers of the guest's `expect: snapshot` probes, called once the point-in-time view
   * is taken (the node reads them before and after it); stored in the manifest
   */
  captures?: () => Promise<Capture[] | undefined>;
  /** encrypts every chunk on this side; the manifest records the key's fingerprint */
  key?: { master: Uint8Array; chunkKey: ChunkKey };
  /** chunks processed (and, to a server, uploaded) at once; default 12 */
  concurrency?: number;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export interface BackupResult {
  snapshot: string;
  time: number;
  base: string | null;
  /**
   * readChunks: image chunks read (the rest were holes or unchanged since the base);
   * dirtyChunks: chunks a record of changes since the base marked (null: none was used)
   */
  archives: { name: string; kind: "img" | "tree"; size: number; readChunks?: number; dirtyChunks?: number | null }[];
  stats: WriteStats;
  durationMs: number;
}

/** Checks the options that do not depend on the target. */
export function checkBackupOptions(opts: BackupOptions): void {
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
}

/** A backup into a local datastore. */
export function backup(store: Datastore, opts: BackupOptions): Promise<BackupResult> {
  return runBackup(opts, (req) => openLocalBackup(store, req));
}

/** Runs a backup through a session opened by `open` (local or remote). */
export async function runBackup(
  opts: BackupOptions,
  open: (req: SessionRequest) => Promise<BackupSession>,
): Promise<BackupResult> {
  const started = Date.now();
  checkBackupOptions(opts);
  const chunkSize = opts.chunkSize ?? DEFAULT_IMAGE_CHUNK_SIZE;
  const level = opts.compressionLevel ?? DEFAULT_ZSTD_LEVEL;
  const keyFingerprint = opts.key?.chunkKey.fingerprint ?? null;
  const session = await open({ ns: opts.ns ?? [], group: opts.group, time: opts.time, startedMs: started, keyFingerprint });
  let finished = false;
  // Block images keep two workers as busy as three (measured), with ~70 MiB less memory;
  // file archives gain from a third, which reads small files while the others compress.
  const imagesOnly = opts.sources.every((s) => parseArchiveName(s.archive).kind === "img");
  const pool = new ChunkPool(imagesOnly ? Math.max(1, Math.min(4, os.availableParallelism())) : undefined);
  try {
    const baseManifest = session.base?.manifest;
    // A base written with another key (or none) shares no chunks with this backup.
    const base = baseManifest && baseManifest.keyFingerprint === keyFingerprint ? session.base : null;
    const known = base ? await baseDigests(session, base.manifest) : Buffer.alloc(0);
    await pool.init(session.chunkDir, level, known, opts.key?.master);
    // Uploads gather chunks into batches: more in flight keeps the batches full.
    const inflight = opts.concurrency || (session.target.kind === "remote" ? 32 : undefined);
    const writer = new ChunkWriter(session.target, pool, { key: opts.key?.chunkKey, level, maxInflight: inflight });
    const reader = new ChunkReader(session.baseLoader(pool));
    const archives: ArchiveEntry[] = [];
    const readCounts = new Map<string, { readChunks: number; dirtyChunks: number | null }>();
    for (const s of opts.sources) {
      const { kind } = parseArchiveName(s.archive);
      const progress: ProgressFn | undefined = opts.progress && ((e) => opts.progress!({ ...e, item: s.archive }));
      const prev = base ? await session.baseIndexes(s.archive).catch(() => undefined) : undefined;
      if (kind === "img") {
        const prevSource = base?.manifest.archives.find((a) => a.name === s.archive)?.source;
        const { index, source, readChunks, dirtyChunks } = await backupImage(s.source, {
          allStored: (idx) => session.allStored(idx),
          writer,
          chunkSize,
          prev: prev?.kind === "img" ? { index: prev.index, source: prevSource, snapshot: base?.name } : undefined,
          signal: opts.signal,
          progress,
        });
        const file = `${s.archive}.fidx`;
        const bytes = encodeFixedIndex(index);
        await session.writeIndex(file, bytes);
        archives.push({ name: s.archive, kind, size: index.size, indexes: [{ file, csum: sha256Hex(bytes), size: bytes.length }], source });
        readCounts.set(s.archive, { readChunks, dirtyChunks });
      } else {
        if (typeof s.source !== "string") throw new GordeError("usage", `archive ${s.archive} is a file archive; its source must be a directory.`);
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
          await session.writeIndex(file, bytes);
          indexes.push({ file, csum: sha256Hex(bytes), size: bytes.length });
        }
        archives.push({ name: s.archive, kind, size: tree.payload.size, indexes });
      }
    }
    await writer.drain();
    const captures = opts.captures ? await opts.captures() : undefined;
    const unprotected = opts.notes !== undefined ? { notes: opts.notes } : {};
    const manifest: Manifest = sealManifest({
      format: manifestFormat({ captures, unprotected }),
      type: session.ref.type,
      id: session.ref.id,
      time: session.ref.time,
      archives,
      cryptMode: opts.key ? "encrypt" : "none",
      keyFingerprint,
      config: opts.config,
      ...(opts.log ? { log: opts.log.slice(-MAX_LOG_LINES).map((l) => l.slice(0, 1024)) } : {}),
      stats: {
        newBytes: writer.stats.newBytes,
        reusedBytes: writer.stats.reusedBytes,
        newChunks: writer.stats.newChunks,
        durationMs: Date.now() - started,
      },
      ...(captures ? { captures } : {}),
      unprotected,
    }, opts.key?.master);
    await session.finish(manifest);
    finished = true;
    return {
      snapshot: formatSnapshot(session.ref),
      time: session.ref.time,
      base: base?.name ?? null,
      archives: archives.map((a) => ({ name: a.name, kind: a.kind, size: a.size, ...readCounts.get(a.name) })),
      stats: writer.stats,
      durationMs: Date.now() - started,
    };
  } finally {
    await pool.close();
    if (!finished) await session.abort();
  }
}

/** Every digest the base snapshot references: chunks the workers need not compress. */
async function baseDigests(session: BackupSession, manifest: Manifest): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const a of manifest.archives) {
    const idx = await session.baseIndexes(a.name);
    if (!idx) continue;
    if (idx.kind === "img") parts.push(idx.index.digests);
    else
      for (const d of [idx.entries, idx.payload]) {
        for (let i = 0; i < d.count; i++) parts.push(d.digest(i));
      }
  }
  return Buffer.concat(parts);
}
