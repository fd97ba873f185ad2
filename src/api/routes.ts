// The server's HTTP API: every route, the schemas that validate its requests, and who may
// call it. The server validates with these schemas, the client builds its requests from
// them, and the OpenAPI document is generated from them: one source for all three.
import { z } from "zod";
import { DrillStateSchema } from "../format/manifest.ts";
import { REMOTE_NAME_RE, remoteNameProblem } from "../format/names.ts";

const name = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/, "a name of letters, digits, '.', '_' or '-'");
export const StoreName = name;
export const UserName = name;
/** `user` or `user!token` */
export const AuthId = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(![A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$/, "a user or user!token");
/** namespace `a/b` (empty: the root) */
export const Namespace = z
  .string()
  .max(512)
  .regex(/^([A-Za-z0-9_][A-Za-z0-9._-]{0,63}(\/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){0,7})?$/, "a namespace a/b/c");
export const GroupName = z.string().regex(/^(vm|ct|host)\/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/, "vm/<id>, ct/<id> or host/<name>");
export const SnapshotName = z
  .string()
  .regex(/^(vm|ct|host)\/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z|latest)$/, "<type>/<id>/<time>");
export const RemoteName = z.string().max(1024).regex(REMOTE_NAME_RE, { error: (iss) => remoteNameProblem(String(iss.input)) });
export const Digest = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");
export const FileName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/, "a file name");
export const SessionId = z.string().regex(/^[A-Za-z0-9_-]{16,64}$/, "a session id");
export const TaskId = z.string().regex(/^UPID-[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{8}-[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "a task id");
const count = z.coerce.number().int().min(0).max(1_000_000);

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

export const KeepOptions = z.strictObject({
  keepLast: z.number().int().min(1).max(100000).optional(),
  keepHourly: z.number().int().min(1).max(100000).optional(),
  keepDaily: z.number().int().min(1).max(100000).optional(),
  keepWeekly: z.number().int().min(1).max(100000).optional(),
  keepMonthly: z.number().int().min(1).max(100000).optional(),
  keepYearly: z.number().int().min(1).max(100000).optional(),
});

const TaskRef = z.object({ task: TaskId });
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
  result: z.unknown().optional(),
});
const Ok = z.object({ ok: z.literal(true) });
const Role = z.enum(["Admin", "NoAccess", "DatastoreAdmin", "DatastorePowerUser", "DatastoreBackup", "DatastoreReader", "DatastoreAudit", "RemoteAdmin", "RemoteAudit", "RemoteSyncOperator", "PVEAuditor", "PVEVMUser"]);
export const MaintenanceMode = z.enum(["none", "read-only", "offline"]);
export type MaintenanceMode = z.infer<typeof MaintenanceMode>;

/** Who may call a route (checked by the server; documented in the OpenAPI document). */
export type Access =
  | "public" // no credentials
  | "authenticated" // any valid user or token
  | "datastore" // a privilege on /datastore/<store>[/<ns>], see `access` text
  | "system" // Sys.* or Permissions.Modify on /
  | "remote"; // a privilege on /remote[/<name>]

export interface Route {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  summary: string;
  access: Access;
  /** the privileges the server requires, in words */
  permission: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** a JSON body schema, or "binary" (application/octet-stream) */
  body?: z.ZodType | "binary";
  /** a JSON response schema, "binary", or "ndjson" (a stream of JSON lines) */
  response: z.ZodType | "binary" | "ndjson" | "text";
}

function route<const R extends Route>(r: R): R {
  return r;
}

const storeParam = z.strictObject({ store: StoreName });
const nsQuery = { ns: Namespace.optional() };

export const ROUTES = {
  version: route({
    method: "GET",
    path: "/api/version",
    summary: "Server version",
    access: "public",
    permission: "none",
    response: z.object({ version: z.string(), api: z.number() }),
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
  prune: route({
    method: "POST",
    path: "/api/datastores/{store}/prune",
    summary: "Apply a retention policy to a group (PBS's algorithm)",
    access: "datastore",
    permission: "Datastore.Modify, or Datastore.Prune (own groups)",
    params: storeParam,
    body: z.strictObject({ ...nsQuery, group: GroupName, keep: KeepOptions, dryRun: z.boolean().optional() }),
    response: z.array(z.object({ snapshot: z.string(), action: z.enum(["keep", "remove", "protected", "keep-partial"]) })),
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
  listUsers: route({
    method: "GET",
    path: "/api/access/users",
    summary: "Users",
    access: "system",
    permission: "Permissions.Modify or Sys.Audit on /",
    response: z.array(z.object({ name: z.string() }).passthrough()),
  }),
  addUser: route({
    method: "POST",
    path: "/api/access/users",
    summary: "Create a user",
    access: "system",
    permission: "Permissions.Modify on /",
    body: z.strictObject({
      name: UserName,
      password: z.string().min(8).max(1024),
      comment: z.string().max(1024).optional(),
      expire: z.number().int().min(0).optional(),
    }),
    response: Ok,
  }),
  updateUser: route({
    method: "PUT",
    path: "/api/access/users/{user}",
    summary: "Change a user's password, comment, expiry or enabled state",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself (password only)",
    params: z.strictObject({ user: UserName }),
    body: z.strictObject({
      password: z.string().min(8).max(1024).optional(),
      comment: z.string().max(1024).optional(),
      expire: z.number().int().min(0).optional(),
      enable: z.boolean().optional(),
    }),
    response: Ok,
  }),
  removeUser: route({
    method: "DELETE",
    path: "/api/access/users/{user}",
    summary: "Remove a user, its tokens and its ACL entries",
    access: "system",
    permission: "Permissions.Modify on /",
    params: z.strictObject({ user: UserName }),
    response: Ok,
  }),
  listTokens: route({
    method: "GET",
    path: "/api/access/users/{user}/tokens",
    summary: "A user's API tokens",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName }),
    response: z.array(z.object({ tokenId: z.string() }).passthrough()),
  }),
  addToken: route({
    method: "POST",
    path: "/api/access/users/{user}/tokens/{token}",
    summary: "Create an API token; its secret is shown only in this answer",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName, token: UserName }),
    body: z.strictObject({ comment: z.string().max(1024).optional(), expire: z.number().int().min(0).optional() }),
    response: z.object({ tokenId: z.string(), secret: z.string() }),
  }),
  removeToken: route({
    method: "DELETE",
    path: "/api/access/users/{user}/tokens/{token}",
    summary: "Revoke an API token",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName, token: UserName }),
    response: Ok,
  }),
  listAcl: route({
    method: "GET",
    path: "/api/access/acl",
    summary: "Access control list",
    access: "system",
    permission: "Permissions.Modify or Sys.Audit on /",
    response: z.array(z.object({ path: z.string(), authId: z.string(), role: z.string(), propagate: z.boolean() })),
  }),
  setAcl: route({
    method: "PUT",
    path: "/api/access/acl",
    summary: "Grant a role on a path to a user or token, or remove the grant",
    access: "system",
    permission: "Permissions.Modify on /",
    body: z.strictObject({
      path: z.string().max(600),
      authId: AuthId,
      role: Role,
      propagate: z.boolean().optional(),
      remove: z.boolean().optional(),
    }),
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
    response: z.object({ text: z.string().nullable(), jobs: z.array(z.string()) }),
  }),
  applyPlan: route({
    method: "PUT",
    path: "/api/plan",
    summary: "Checks and applies a plan (YAML): the jobs this host runs are scheduled here",
    access: "authenticated",
    permission: "Sys.Modify on /",
    body: z.strictObject({ text: z.string().min(1).max(1024 * 1024) }),
    response: z.object({ text: z.string().nullable(), jobs: z.array(z.string()) }),
  }),
  listRuns: route({
    method: "GET",
    path: "/api/runs",
    summary: "The history of the plan's job runs on this host, newest first",
    access: "authenticated",
    permission: "Sys.Audit on /",
    query: z.strictObject({ job: z.string().max(64).optional(), limit: z.coerce.number().int().min(1).max(10000).optional() }),
    response: z.array(z.object({ id: z.number(), job: z.string(), kind: z.string(), start: z.number(), end: z.number().nullable(), result: z.string(), error: z.string().nullable() }).passthrough()),
  }),
} as const;

export type RouteName = keyof typeof ROUTES;
export const API_VERSION = 1;

/** Fills the `{param}` placeholders of a route's path. */
export function routePath(r: Route, params: Record<string, string> = {}): string {
  return r.path.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params[k];
    if (v === undefined) throw new Error(`missing path parameter ${k}`);
    return encodeURIComponent(v);
  });
}
