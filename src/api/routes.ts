// The server's HTTP API: every route, the schemas that validate its requests, and who may
// call it. The server validates with these schemas, the client builds its requests from
// them, and the OpenAPI document is generated from them: one source for all three.
import { z } from "zod";
import { DrillStateSchema } from "../format/drill-state.ts";
import { ACCESS_ROUTES } from "./access-routes.ts";
import { CLUSTER_ROUTES } from "./cluster-routes.ts";
import { AuthId, count, Digest, FileName, GroupName, Namespace, Ok, RemoteName, route, SessionId, SnapshotName, StoreName, TaskId, TaskRef } from "./route.ts";

export { AuthId, Digest, FileName, GroupName, Namespace, RemoteName, type Route, routePath, SessionId, SnapshotName, StoreName, TaskId, UserName } from "./route.ts";

export const SnapshotSchema = z.object({
  snapshot: z.string(),
  time: z.string(),
  size: z.number(),
  protected: z.boolean(),
  finished: z.boolean(),
  archives: z.array(z.object({ name: z.string(), kind: z.enum(["img", "tree"]), size: z.number() })),
  notes: z.string().nullable(),
  verify: z.object({ state: z.enum(["ok", "failed"]), time: z.number() }).passthrough().nullable(),
  /** the newest restore drill of the snapshot */
  drill: DrillStateSchema.nullable().optional(),
  error: z.string().nullable(),
  owner: z.string().nullable(),
  encrypted: z.boolean(),
  /** the state of each answer captured at backup time (absent from an older server) */
  captures: z.array(z.object({ probe: z.string(), state: z.enum(["captured", "unstable", "failed"]) })).optional(),
});
export type SnapshotJson = z.infer<typeof SnapshotSchema>;

/** One sample of a datastore's usage (time in unix seconds). */
export const UsageSampleSchema = z.object({ time: z.number(), used: z.number(), total: z.number(), logicalBytes: z.number(), chunkBytes: z.number(), dedupFactor: z.number() });

/** What a sync task ends with (its task's result). */
export interface SyncResult {
  /** snapshots pulled */
  snapshots: number;
  /** groups left out because another user owns them here */
  skipped: number;
  /** chunks this datastore did not have yet, and their bytes */
  chunks: number;
  bytes: number;
}

export const KeepOptions = z.strictObject({
  keepLast: z.number().int().min(1).max(100000).optional(),
  keepHourly: z.number().int().min(1).max(100000).optional(),
  keepDaily: z.number().int().min(1).max(100000).optional(),
  keepWeekly: z.number().int().min(1).max(100000).optional(),
  keepMonthly: z.number().int().min(1).max(100000).optional(),
  keepYearly: z.number().int().min(1).max(100000).optional(),
});

/** a task as the API answers it (the host kit keeps the same record, with its pid, in its status file) */
export const TaskInfoSchema = z.object({
  id: z.string(),
  type: z.string(),
  authId: z.string(),
  store: z.string().optional(),
  target: z.string().optional(),
  startTime: z.number(),
  endTime: z.number().optional(),
  state: z.enum(["running", "ok", "failed", "aborted"]),
  error: z.string().optional(),
  /** a failed task's error code (docs/cli.md's codes), so a client following it exits as the task did */
  code: z.string().optional(),
  result: z.unknown().optional(),
});
/**
 * One line of a task's event stream (`taskEvents`, JSON lines): its log from the start, its
 * progress (`done` of `total`, with more fields by kind of task; never persisted), its end.
 * Log lines are given as stored: "<ISO time> <text>"; `n` is the line's index in the log (from 0).
 */
export type TaskStreamEvent<T = z.infer<typeof TaskInfoSchema>> =
  | { type: "log"; line: string; n?: number }
  | { type: "progress"; progress: Record<string, unknown> }
  | { type: "end"; task: T };
/** the plan a host runs: its text, the jobs that run on this host, and the cluster it is the plan of (null: the host's own) */
export const PlanStateSchema = z.object({ text: z.string().nullable(), jobs: z.array(z.string()), cluster: z.string().nullable().optional() });
export type PlanState = z.infer<typeof PlanStateSchema>;

/** one run of a plan's job in a host's history (times in unix milliseconds) */
export const JobRunSchema = z.object({
  id: z.number(),
  job: z.string(),
  kind: z.string(),
  target: z.string().nullable(),
  start: z.number(),
  end: z.number().nullable(),
  result: z.enum(["running", "ok", "failed", "skipped"]),
  error: z.string().nullable(),
  bytes: z.number().nullable(),
  newBytes: z.number().nullable(),
  reusedBytes: z.number().nullable(),
  log: z.string(),
});
export type JobRun = z.infer<typeof JobRunSchema>;

export const MaintenanceMode = z.enum(["none", "read-only", "offline"]);
export type MaintenanceMode = z.infer<typeof MaintenanceMode>;

const storeParam = z.strictObject({ store: StoreName });
const nsQuery = { ns: Namespace.optional() };

export const TreeArchiveName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\.tree$/, "a file archive's name, <name>.tree");
/** a path inside an archive: '/'-separated, no '.' or '..' component */
export const ArchivePath = z
  .string()
  .max(4096)
  .refine((p) => !p.split("/").some((c) => c === "." || c === ".."), "a path without '.' or '..'");
/** one entry of a file archive as the web interface browses it (mtime in unix seconds) */
export const ArchiveEntrySchema = z.object({ name: z.string(), path: z.string(), kind: z.string(), size: z.number(), mtime: z.number() });
export type ArchiveEntry = z.infer<typeof ArchiveEntrySchema>;

export const ROUTES = {
  version: route({
    method: "GET",
    path: "/api/version",
    summary: "Version, and which host answers (a node or the backup server)",
    access: "public",
    permission: "none",
    response: z.object({ version: z.string(), api: z.number(), product: z.enum(["node", "server"]) }),
  }),
  openapi: route({
    method: "GET",
    path: "/api/openapi.json",
    summary: "This API as an OpenAPI 3.1 document",
    access: "public",
    permission: "none",
    response: z.object({}).passthrough(),
  }),
  metrics: route({
    method: "GET",
    path: "/metrics",
    summary: "Prometheus metrics",
    access: "system",
    permission: "Sys.Audit on /",
    response: "text",
  }),
  listDatastores: route({
    method: "GET",
    path: "/api/datastores",
    summary: "Datastores the caller may see",
    access: "authenticated",
    permission: "any privilege on the datastore",
    response: z.array(z.object({ name: z.string(), maintenance: MaintenanceMode })),
  }),
  datastoreStatus: route({
    method: "GET",
    path: "/api/datastores/{store}/status",
    summary: "Size, chunk count, dedup factor and free space of a datastore",
    access: "datastore",
    permission: "Datastore.Audit or Datastore.Backup",
    params: storeParam,
    response: z.object({
      name: z.string(),
      maintenance: MaintenanceMode,
      total: z.number(),
      used: z.number(),
      available: z.number(),
      chunks: z.number(),
      chunkBytes: z.number(),
      logicalBytes: z.number(),
      dedupFactor: z.number(),
      snapshots: z.number(),
      groups: z.number(),
      warning: z.string().nullable(),
    }),
  }),
  datastoreHistory: route({
    method: "GET",
    path: "/api/datastores/{store}/history",
    summary: "A datastore's used space and dedup factor over time, sampled every 5 minutes (30 days kept)",
    access: "datastore",
    permission: "Datastore.Audit or Datastore.Backup",
    params: storeParam,
    response: z.array(UsageSampleSchema),
  }),
  setMaintenance: route({
    method: "PUT",
    path: "/api/datastores/{store}/maintenance",
    summary: "Maintenance mode: read-only stops new backups, offline stops everything",
    access: "datastore",
    permission: "Datastore.Modify",
    params: storeParam,
    body: z.strictObject({ mode: MaintenanceMode }),
    response: Ok,
  }),
  listGroups: route({
    method: "GET",
    path: "/api/datastores/{store}/groups",
    summary: "Backup groups with their owner and newest snapshot",
    access: "datastore",
    permission: "Datastore.Audit, Datastore.Read, or Datastore.Backup (own groups)",
    params: storeParam,
    query: z.strictObject({ ...nsQuery }),
    response: z.array(z.object({ group: z.string(), owner: z.string().nullable(), count: z.number(), last: z.string().nullable() })),
  }),
  listSnapshots: route({
    method: "GET",
    path: "/api/datastores/{store}/snapshots",
    summary: "Snapshots, oldest first",
    access: "datastore",
    permission: "Datastore.Audit, Datastore.Read, or Datastore.Backup (own groups)",
    params: storeParam,
    query: z.strictObject({ ...nsQuery, group: GroupName.optional() }),
    response: z.array(SnapshotSchema),
  }),
  forgetSnapshot: route({
    method: "DELETE",
    path: "/api/datastores/{store}/snapshots",
    summary: "Remove one snapshot",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Prune (own groups)",
    params: storeParam,
    query: z.strictObject({ ...nsQuery, snapshot: SnapshotName }),
    response: Ok,
  }),
  setNotes: route({
    method: "PUT",
    path: "/api/datastores/{store}/notes",
    summary: "Set a snapshot's notes",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Backup (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, snapshot: SnapshotName, notes: z.string().max(64 * 1024) }),
    response: Ok,
  }),
  setDrill: route({
    method: "PUT",
    path: "/api/datastores/{store}/drill",
    summary: "Record the result and RTO of a snapshot's newest restore drill (a node does, after the drill)",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Backup (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, snapshot: SnapshotName, state: DrillStateSchema }),
    response: Ok,
  }),
  setProtected: route({
    method: "PUT",
    path: "/api/datastores/{store}/protected",
    summary: "Protect a snapshot from prune and forget, or lift it",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Backup (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, snapshot: SnapshotName, protected: z.boolean() }),
    response: Ok,
  }),
  setOwner: route({
    method: "PUT",
    path: "/api/datastores/{store}/owner",
    summary: "Change the owner of a backup group",
    access: "datastore",
    permission: "Datastore.Modify",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, group: GroupName, owner: AuthId }),
    response: Ok,
  }),
  browseSnapshot: route({
    method: "GET",
    path: "/api/datastores/{store}/browse",
    summary: "The entries of a snapshot's file archive under `path` (a directory's children), as folders to browse",
    access: "datastore",
    permission: "Datastore.Read, or Datastore.Backup (own groups)",
    params: storeParam,
    query: z.strictObject({ ...nsQuery, snapshot: SnapshotName, archive: TreeArchiveName, path: ArchivePath.optional() }),
    response: z.array(ArchiveEntrySchema),
  }),
  downloadSnapshotFile: route({
    method: "GET",
    path: "/api/datastores/{store}/download",
    summary: "One file of a snapshot's file archive (at most 64 MiB; gorde restore --path takes any)",
    access: "datastore",
    permission: "Datastore.Read, or Datastore.Backup (own groups)",
    params: storeParam,
    query: z.strictObject({ ...nsQuery, snapshot: SnapshotName, archive: TreeArchiveName, path: ArchivePath }),
    response: "binary",
  }),
  prune: route({
    method: "POST",
    path: "/api/datastores/{store}/prune",
    summary: "Apply a retention policy to a group (PBS's algorithm)",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Prune (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, group: GroupName, keep: KeepOptions, dryRun: z.boolean().optional() }),
    response: z.array(z.object({ snapshot: z.string(), action: z.enum(["keep", "remove", "protected", "keep-partial", "in-use"]) })),
  }),
  gc: route({
    method: "POST",
    path: "/api/datastores/{store}/gc",
    summary: "Start garbage collection (a task)",
    access: "datastore",
    permission: "Datastore.Modify",
    params: storeParam,
    body: z.strictObject({ cutoffSeconds: z.number().int().min(0).optional() }),
    response: TaskRef,
  }),
  verify: route({
    method: "POST",
    path: "/api/datastores/{store}/verify",
    summary: "Start verification of one snapshot or all (a task)",
    access: "datastore",
    permission: "Datastore.Verify, or Datastore.Backup (own groups, one snapshot)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, snapshot: SnapshotName.optional(), outdatedDays: z.number().int().min(0).optional() }),
    response: TaskRef,
  }),
  startBackup: route({
    method: "POST",
    path: "/api/datastores/{store}/backup",
    summary: "Open a backup session: locks the group, names the base snapshot",
    access: "datastore",
    permission: "Datastore.Backup, and owning the group (a new group becomes the caller's)",
    params: storeParam,
    body: z.strictObject({
      ...nsQuery,
      group: GroupName,
      time: z.number().int().min(0).optional(),
      keyFingerprint: z.string().regex(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/).nullable(),
    }),
    response: z.object({
      session: z.string(),
      snapshot: z.string(),
      time: z.number(),
      base: z.object({ name: z.string(), manifest: z.unknown() }).nullable(),
    }),
  }),
  backupBaseFile: route({
    method: "GET",
    path: "/api/backup/{session}/base/{file}",
    summary: "An index file of the base snapshot",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, file: FileName }),
    response: "binary",
  }),
  backupBaseChunk: route({
    method: "GET",
    path: "/api/backup/{session}/base-chunk/{digest}",
    summary: "A chunk of the base snapshot (previous entries of a file archive)",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, digest: Digest }),
    response: "binary",
  }),
  uploadChunk: route({
    method: "PUT",
    path: "/api/backup/{session}/chunk/{digest}",
    summary: "Upload one encoded chunk; the server checks its CRC and, unless encrypted, its digest and size",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, digest: Digest }),
    query: z.strictObject({ size: z.coerce.number().int().min(0).max(16 * 1024 * 1024) }),
    body: "binary",
    response: z.object({ stored: z.boolean() }),
  }),
  uploadChunks: route({
    method: "PUT",
    path: "/api/backup/{session}/chunks",
    summary:
      "Upload several encoded chunks in one body (records of digest, plain size, blob length, blob); each is checked as by uploadChunk, a repeated digest is stored once; `stored` counts the records the datastore now holds for the backup, new or not",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId }),
    body: "binary",
    response: z.object({ stored: z.number() }),
  }),
  uploadIndex: route({
    method: "PUT",
    path: "/api/backup/{session}/index/{file}",
    summary: "Upload an index file; every chunk it names must have been uploaded in this backup or be named by its base snapshot",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, file: FileName }),
    body: "binary",
    response: Ok,
  }),
  finishBackup: route({
    method: "POST",
    path: "/api/backup/{session}/finish",
    summary: "Write the manifest: the snapshot becomes visible",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId }),
    body: z.object({}).passthrough(),
    response: z.object({ snapshot: z.string() }),
  }),
  abortBackup: route({
    method: "DELETE",
    path: "/api/backup/{session}",
    summary: "Abandon a backup session: nothing of it stays",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId }),
    response: Ok,
  }),
  openReader: route({
    method: "POST",
    path: "/api/datastores/{store}/reader",
    summary: "Open a finished snapshot for reading (restore)",
    access: "datastore",
    permission: "Datastore.Read, or Datastore.Backup (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, snapshot: SnapshotName }),
    response: z.object({ session: z.string(), snapshot: z.string(), manifest: z.unknown() }),
  }),
  readerFile: route({
    method: "GET",
    path: "/api/reader/{session}/file/{file}",
    summary: "An index file of the snapshot being read",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, file: FileName }),
    response: "binary",
  }),
  readerChunk: route({
    method: "GET",
    path: "/api/reader/{session}/chunk/{digest}",
    summary: "A chunk named by an index of the snapshot being read",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId, digest: Digest }),
    response: "binary",
  }),
  readerChunks: route({
    method: "POST",
    path: "/api/reader/{session}/chunks",
    summary: "Several chunks at once (each named by an index opened in this session), as a chunk batch (records of digest, 0, blob length, blob)",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId }),
    body: z.strictObject({ digests: z.array(Digest).min(1).max(64) }),
    response: "binary",
  }),
  closeReader: route({
    method: "DELETE",
    path: "/api/reader/{session}",
    summary: "Close a reader session",
    access: "authenticated",
    permission: "the session's owner",
    params: z.strictObject({ session: SessionId }),
    response: Ok,
  }),
  listTasks: route({
    method: "GET",
    path: "/api/tasks",
    summary: "Running and finished tasks, newest first",
    access: "authenticated",
    permission: "own tasks; all with Sys.Audit",
    query: z.strictObject({ running: z.enum(["true", "false"]).optional(), store: StoreName.optional(), limit: count.optional() }),
    response: z.array(TaskInfoSchema),
  }),
  getTask: route({
    method: "GET",
    path: "/api/tasks/{id}",
    summary: "A task's state and result",
    access: "authenticated",
    permission: "own tasks; all with Sys.Audit",
    params: z.strictObject({ id: TaskId }),
    response: TaskInfoSchema,
  }),
  taskLog: route({
    method: "GET",
    path: "/api/tasks/{id}/log",
    summary: "A task's log lines from an offset",
    access: "authenticated",
    permission: "own tasks; all with Sys.Audit",
    params: z.strictObject({ id: TaskId }),
    query: z.strictObject({ offset: count.optional(), limit: count.optional() }),
    response: z.object({ lines: z.array(z.string()), next: z.number(), done: z.boolean() }),
  }),
  taskEvents: route({
    method: "GET",
    path: "/api/tasks/{id}/events",
    summary: "Live log, progress and end of a task as JSON lines",
    access: "authenticated",
    permission: "own tasks; all with Sys.Audit",
    params: z.strictObject({ id: TaskId }),
    response: "ndjson",
  }),
  abortTask: route({
    method: "DELETE",
    path: "/api/tasks/{id}",
    summary: "Abort a running task",
    access: "authenticated",
    permission: "own tasks; all with Sys.Modify",
    params: z.strictObject({ id: TaskId }),
    response: Ok,
  }),
  listRemotes: route({
    method: "GET",
    path: "/api/remotes",
    summary: "The remotes (other gorde servers a sync pulls from), without their secrets",
    access: "authenticated",
    permission: "any; lists the remotes with Remote.Audit on /remote/<name>",
    response: z.array(z.object({ name: z.string(), url: z.string(), fingerprint: z.string() })),
  }),
  addRemote: route({
    method: "POST",
    path: "/api/remotes",
    summary: "Add a remote: another gorde server's datastore, the user or token and secret to pull with, its certificate fingerprint",
    access: "remote",
    permission: "Remote.Modify on /remote",
    body: z.strictObject({
      name: RemoteName,
      url: z.string().regex(/^https:\/\/[^\s]+$/, "https://<user>[!<token>]@<host>[:<port>]/<store>").max(1024),
      fingerprint: z.string().max(200),
      secret: z.string().min(1).max(1024),
    }),
    response: z.object({ name: z.string(), url: z.string(), fingerprint: z.string() }),
  }),
  removeRemote: route({
    method: "DELETE",
    path: "/api/remotes/{name}",
    summary: "Remove a remote and its secret",
    access: "remote",
    permission: "Remote.Modify on /remote",
    params: z.strictObject({ name: RemoteName }),
    response: Ok,
  }),
  sync: route({
    method: "POST",
    path: "/api/datastores/{store}/sync",
    summary: "Pull snapshots from a remote into this datastore (a task)",
    access: "datastore",
    permission: "Datastore.Backup on the target datastore and Remote.Read on /remote/<remote>",
    params: storeParam,
    body: z.strictObject({
      remote: RemoteName,
      ns: Namespace.optional(),
      groups: z.array(GroupName).max(1000).optional(),
      last: z.number().int().min(1).max(100000).optional(),
    }),
    response: TaskRef,
  }),
  getPlan: route({
    method: "GET",
    path: "/api/plan",
    summary: "The plan as last applied here, and the jobs this host runs (backups on a node; prune, GC and verify on the server)",
    access: "authenticated",
    permission: "Sys.Audit on /",
    response: PlanStateSchema,
  }),
  applyPlan: route({
    method: "PUT",
    path: "/api/plan",
    summary: "Checks and applies a plan (YAML): the jobs this host runs are scheduled here",
    access: "authenticated",
    permission: "Sys.Modify on /",
    body: z.strictObject({ text: z.string().min(1).max(1024 * 1024) }),
    response: PlanStateSchema,
  }),
  listRuns: route({
    method: "GET",
    path: "/api/runs",
    summary: "The history of the plan's job runs on this host, newest first",
    access: "authenticated",
    permission: "Sys.Audit on /",
    query: z.strictObject({ job: z.string().max(64).optional(), limit: z.coerce.number().int().min(1).max(10000).optional() }),
    response: z.array(JobRunSchema),
  }),
  ...ACCESS_ROUTES,
  ...CLUSTER_ROUTES,
} as const;

export type RouteName = keyof typeof ROUTES;
export const API_VERSION = 1;
