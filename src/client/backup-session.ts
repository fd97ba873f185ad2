// The session a backup writes into, local (local-backup.ts) or on a server (remote.ts):
// what runBackup (backup.ts) asks of either.
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import type { ChunkLoader } from "../datastore/chunk-reader.ts";
import type { ArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import type { FixedIndex } from "../format/fixed-index.ts";
import type { Manifest } from "../format/manifest.ts";
import type { Group, SnapshotRef } from "../format/names.ts";
import type { ChunkTarget } from "./chunk-writer.ts";

/**
 * A snapshot being written: the group is locked, the snapshot is invisible until
 * `finish`, and `abort` (or a dropped connection) leaves nothing behind.
 */
export interface BackupSession {
  readonly ref: SnapshotRef;
  /** the snapshot the backup is incremental to: finished, not failed verification */
  readonly base: { name: string; manifest: Manifest } | null;
  readonly target: ChunkTarget;
  /** chunk directory the workers write into; null when chunks are uploaded */
  readonly chunkDir: string | null;
  baseIndexes(archive: string): Promise<ArchiveIndexes | undefined>;
  /** reads chunks of the base snapshot (a file archive's previous entries) */
  baseLoader(pool: ChunkPool): ChunkLoader;
  /** every chunk of a reused index is still stored */
  allStored(index: FixedIndex): Promise<boolean>;
  writeIndex(file: string, bytes: Buffer): Promise<void>;
  finish(manifest: Manifest): Promise<void>;
  abort(): Promise<void>;
}

export interface SessionRequest {
  ns: string[];
  group: Group;
  time?: number;
  startedMs: number;
  keyFingerprint: string | null;
}
