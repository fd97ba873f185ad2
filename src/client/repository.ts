// A repository: where snapshots live, a datastore directory on this machine
// (local-repository.ts) or a datastore on a gorde server (remote.ts). Both answer every
// call the same way, with errors equal in meaning; test/repository.test.ts runs one suite
// against both. Snapshots are named as on the command line (`vm/100/<time>`), and
// `<group>/latest` means the group's newest finished snapshot wherever a name is taken.
import type { SnapshotJson } from "../api/routes.ts";
import type { GcResult } from "../datastore/gc.ts";
import type { PruneOptions } from "../datastore/prune.ts";
import type { datastoreStatus } from "../datastore/status.ts";
import type { VerifyReport } from "../datastore/verify.ts";
import type { Group } from "../format/names.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";
import type { SnapshotReader } from "./restore.ts";

/** The most a snapshot's notes may hold. */
export const MAX_NOTES_BYTES = 64 * 1024;

/** An event of a long operation (GC, verify) as it runs: a log line, progress, its end. */
export interface TaskProgressEvent {
  type: "log" | "progress" | "end";
  line?: string;
  /** a log line's number in the task's log, from 0 */
  n?: number;
  progress?: Record<string, unknown>;
  task?: { state: string; error?: string; code?: string; result?: unknown };
}

/** What a long operation takes besides its own parameters. */
export interface TaskOptions {
  signal?: AbortSignal;
  /** follows the operation; a repository that runs it in this process may report nothing */
  onEvent?: (e: TaskProgressEvent) => void;
}

export interface PruneOutcome {
  /** every snapshot of the group, newest first, with what the retention does with it */
  plan: { snapshot: string; action: string }[];
  /** snapshots kept because their manifest is damaged or from a newer gorde (with why) */
  damaged: string[];
  /** removals that failed, with the reason */
  failed: string[];
}

export type RepositoryStatus = Awaited<ReturnType<typeof datastoreStatus>> & { name: string; maintenance: string };

export interface Repository {
  readonly kind: "local" | "remote";
  /** The snapshots of a group, or of every group of the namespace, oldest first per group. */
  snapshots(ns: string[], group?: Group): Promise<SnapshotJson[]>;
  /** One snapshot by name (`latest` resolved); not-found when there is none. */
  snapshot(ns: string[], name: string): Promise<SnapshotJson>;
  /** Removes a snapshot, refused while it is protected; answers the name removed. */
  forget(ns: string[], name: string): Promise<string>;
  /** Protects a snapshot from forget and prune, or lifts that; answers its name. */
  setProtected(ns: string[], name: string, on: boolean): Promise<string>;
  /** The notes of a finished snapshot ("" when none). */
  notes(ns: string[], name: string): Promise<string>;
  setNotes(ns: string[], name: string, notes: string): Promise<void>;
  /** Applies (or, `dryRun`, previews) a retention policy to a group. */
  prune(ns: string[], group: Group, keep: PruneOptions, dryRun: boolean): Promise<PruneOutcome>;
  /** Removes the chunks no snapshot references and that are older than the cutoff (default: a day and 5 minutes). */
  gc(opts?: TaskOptions & { cutoffSeconds?: number }): Promise<GcResult>;
  /** Checks a snapshot, or every snapshot of the namespace and those below it. */
  verify(ns: string[], snapshot: string | undefined, opts?: TaskOptions): Promise<VerifyReport>;
  status(): Promise<RepositoryStatus>;
  /** Opens a backup into a group; runBackup (backup.ts) writes through it. */
  openBackup(req: SessionRequest): Promise<BackupSession>;
  /** Opens a finished snapshot for reading; close the reader when done. */
  openReader(ns: string[], name: string): Promise<SnapshotReader>;
  close(): void;
}
