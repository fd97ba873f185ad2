// The node agent's HTTP API (`gorde node`, port 8006 as PVE's): its guests, their backups
// to the backup server and restores from it, and the same user, token and ACL routes as
// the server. Privileges are PVE's: VM.Audit to look, VM.PowerMgmt to start and stop,
// VM.Backup to back up and restore, VM.Allocate to create, configure and remove, on
// /vms/<id> (or above).
import { z } from "zod";
import { CtConfigSchema, GuestConfigSchema, VmConfigSchema } from "./guest-config.ts";
import { GroupName, Ok, route, SnapshotName, StoreName, TaskId, TaskRef } from "./route.ts";
import { CREATE_CLUSTER_ROUTE } from "./cluster-routes.ts";
import { HA_ROUTES } from "./ha-routes.ts";
import { ArchiveEntrySchema, ArchivePath, ROUTES, SnapshotSchema, TreeArchiveName } from "./routes.ts";

export const GuestId = z.coerce.number().int().min(100).max(999_999_999);
const idParam = z.strictObject({ id: GuestId });

export const GuestState = z.enum(["running", "stopped", "paused", "frozen"]);
export const GuestStatusSchema = z.object({
  id: z.number(),
  kind: z.enum(["vm", "ct"]),
  name: z.string(),
  state: GuestState,
  httpPort: z.number(),
  pid: z.number().optional(),
  uptimeSeconds: z.number().optional(),
  /** VMs: the accelerator QEMU runs with and why */
  accel: z.string().optional(),
  /** times in unix seconds; `goodTime`: the last backup that worked (this one, or one before a failure) */
  lastBackup: z.object({ snapshot: z.string(), time: z.number(), ok: z.boolean(), error: z.string().optional(), goodTime: z.number().optional() }).optional(),
  /** the plan's RPO for the guest and where its last good backup stands against it (absent: the plan does not name it) */
  rpo: z.object({ targetSeconds: z.number(), state: z.enum(["within", "late", "missing"]) }).optional(),
});
export type GuestStatus = z.infer<typeof GuestStatusSchema>;

export const BackupMode = z.enum(["snapshot", "suspend", "stop"]);
export type BackupMode = z.infer<typeof BackupMode>;

export const GuestBackupResultSchema = z.object({
  snapshot: z.string(),
  mode: BackupMode,
  archives: z.array(z.object({ name: z.string(), size: z.number(), readChunks: z.number().optional(), dirtyChunks: z.number().nullable().optional() })),
  newBytes: z.number(),
  reusedBytes: z.number(),
  durationMs: z.number(),
  log: z.array(z.string()),
});
export type GuestBackupResult = z.infer<typeof GuestBackupResultSchema>;

/** A guest to create: a full configuration, or a demo guest whose disk or rootfs the node builds. */
export const CreateGuestSchema = z.union([
  z.strictObject({ config: GuestConfigSchema }),
  z.strictObject({
    demo: z.strictObject({
      kind: z.enum(["vm", "ct"]),
      id: z.number().int().min(100).max(999_999_999),
      name: VmConfigSchema.shape.name.optional(),
      httpPort: z.number().int().min(1024).max(65535),
      memoryMiB: z.number().int().min(16).max(65536).optional(),
      cpus: z.number().int().min(1).max(64).optional(),
      /** VM disk size (default 1024 MiB) */
      diskMiB: z.number().int().min(64).max(1024 * 1024).optional(),
    }),
  }),
]);
export type CreateGuest = z.infer<typeof CreateGuestSchema>;

export const RestoreGuestSchema = z.strictObject({
  snapshot: SnapshotName,
  /** the new guest's id (default: the snapshot's) */
  id: z.number().int().min(100).max(999_999_999).optional(),
  /** the new guest's service port (default: the snapshot config's, or a free one if taken) */
  httpPort: z.number().int().min(1024).max(65535).optional(),
  start: z.boolean().optional(),
  /** replace an existing guest of that id (stopped first) */
  force: z.boolean().optional(),
});
export type RestoreGuest = z.infer<typeof RestoreGuestSchema>;

/** One check of a restore drill: its own steps (verify, restore, boot) and the guest's probes. */
export const DrillCheckSchema = z.object({ name: z.string(), ok: z.boolean(), seconds: z.number(), message: z.string() });
export type DrillCheck = z.infer<typeof DrillCheckSchema>;

export const DrillResult = z.enum(["running", "passed", "failed", "error"]);

/** A restore drill as the node's history keeps it (seconds are counted from the drill's start). */
export const DrillRecordSchema = z.object({
  id: z.number(),
  guest: z.number(),
  /** the snapshot drilled (null until chosen) */
  snapshot: z.string().nullable(),
  node: z.string(),
  /** the sandbox's guest id */
  sandbox: z.number().nullable(),
  /** the plan's job that ran it, null when asked for */
  job: z.string().nullable(),
  /** unix ms */
  start: z.number(),
  end: z.number().nullable(),
  /** the snapshot's age when the drill started */
  rpoSeconds: z.number().nullable(),
  restoredSeconds: z.number().nullable(),
  bootedSeconds: z.number().nullable(),
  /** to every probe passing */
  rtoSeconds: z.number().nullable(),
  bytesRestored: z.number().nullable(),
  result: DrillResult,
  /** the check that failed (failed), and why (failed or error) */
  failedCheck: z.string().nullable(),
  error: z.string().nullable(),
  checks: z.array(DrillCheckSchema),
  log: z.string(),
});
export type DrillRecord = z.infer<typeof DrillRecordSchema>;

export const StartDrillSchema = z.strictObject({
  guest: z.number().int().min(100).max(999_999_999),
  /** default: the guest's newest finished snapshot whose verification did not fail */
  snapshot: SnapshotName.optional(),
});
export type StartDrill = z.infer<typeof StartDrillSchema>;

const storageParam = z.strictObject({ storage: StoreName });
export const NODE_ROUTES = {
  version: ROUTES.version,
  nodeStatus: route({
    method: "GET",
    path: "/api/node",
    summary: "The node's name, its backup server and its accelerator",
    access: "authenticated",
    permission: "Sys.Audit or VM.Audit on /vms",
    response: z.object({ name: z.string(), server: z.string(), guests: z.number(), version: z.string() }),
  }),
  listGuests: route({
    method: "GET",
    path: "/api/guests",
    summary: "The guests on this node the caller may see",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    response: z.array(GuestStatusSchema),
  }),
  createGuest: route({
    method: "POST",
    path: "/api/guests",
    summary: "Creates a guest (stopped) from a configuration, or a demo guest with a disk or rootfs built by the node",
    access: "authenticated",
    permission: "VM.Allocate on /vms/<id>",
    body: CreateGuestSchema,
    response: GuestConfigSchema,
  }),
  guestStatus: route({
    method: "GET",
    path: "/api/guests/{id}",
    summary: "A guest's state",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    params: idParam,
    response: GuestStatusSchema,
  }),
  guestConfig: route({
    method: "GET",
    path: "/api/guests/{id}/config",
    summary: "A guest's configuration",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    params: idParam,
    response: GuestConfigSchema,
  }),
  setGuestConfig: route({
    method: "PUT",
    path: "/api/guests/{id}/config",
    summary: "Replaces a stopped guest's configuration (its id and kind stay)",
    access: "authenticated",
    permission: "VM.Allocate on /vms/<id>",
    params: idParam,
    body: z.union([VmConfigSchema, CtConfigSchema]),
    response: GuestConfigSchema,
  }),
  removeGuest: route({
    method: "DELETE",
    path: "/api/guests/{id}",
    summary: "Removes a stopped guest with its disks or rootfs",
    access: "authenticated",
    permission: "VM.Allocate on /vms/<id>",
    params: idParam,
    response: Ok,
  }),
  startGuest: route({
    method: "POST",
    path: "/api/guests/{id}/start",
    summary: "Starts a guest",
    access: "authenticated",
    permission: "VM.PowerMgmt on /vms/<id>",
    params: idParam,
    response: GuestStatusSchema,
  }),
  stopGuest: route({
    method: "POST",
    path: "/api/guests/{id}/stop",
    summary: "Stops a guest",
    access: "authenticated",
    permission: "VM.PowerMgmt on /vms/<id>",
    params: idParam,
    response: GuestStatusSchema,
  }),
  guestLog: route({
    method: "GET",
    path: "/api/guests/{id}/log",
    summary: "A guest's console output and the log of its last backup",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    params: idParam,
    response: "text",
  }),
  backupGuest: route({
    method: "POST",
    path: "/api/guests/{id}/backup",
    summary: "Backs a guest up to the node's backup server (vzdump's modes), as a task whose result is the backup's",
    access: "authenticated",
    permission: "VM.Backup on /vms/<id>",
    params: idParam,
    body: z.strictObject({ mode: BackupMode.optional(), notes: z.string().max(4096).optional() }),
    response: TaskRef,
  }),
  restoreGuest: route({
    method: "POST",
    path: "/api/restore",
    summary: "Recreates a guest on this node from a snapshot on the backup server, as a task whose result is the guest's status",
    access: "authenticated",
    permission: "VM.Backup on /vms/<id> and on the snapshot's guest (and VM.Allocate to replace an existing guest)",
    body: RestoreGuestSchema,
    response: TaskRef,
  }),
  startDrill: route({
    method: "POST",
    path: "/api/drills",
    summary: "Starts a restore drill of a guest's snapshot in a sandbox on this node (a task)",
    access: "authenticated",
    permission: "VM.Backup on /vms/<id>",
    body: StartDrillSchema,
    response: z.object({ task: TaskId, drill: z.number() }),
  }),
  listDrills: route({
    method: "GET",
    path: "/api/drills",
    summary: "The restore drills of this node, newest first",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    query: z.strictObject({ guest: GuestId.optional(), limit: z.coerce.number().int().min(1).max(10000).optional() }),
    response: z.array(DrillRecordSchema),
  }),
  getDrill: route({
    method: "GET",
    path: "/api/drills/{id}",
    summary: "One restore drill with its checks and log",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    params: z.strictObject({ id: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER) }),
    response: DrillRecordSchema,
  }),
  listStorages: route({
    method: "GET",
    path: "/api/storage",
    summary: "The node's storages: its backup server's datastore, as PVE lists a PBS storage",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name>",
    response: z.array(z.object({ storage: z.string(), server: z.string(), type: z.literal("gorde") })),
  }),
  storageStatus: route({
    method: "GET",
    path: "/api/storage/{storage}/status",
    summary: "A storage's usage, free space and dedup factor, as its server counts them",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name>",
    params: storageParam,
    response: ROUTES.datastoreStatus.response,
  }),
  storageHistory: route({
    method: "GET",
    path: "/api/storage/{storage}/history",
    summary: "A storage's used space and dedup factor over time, as its server samples them every 5 minutes",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name>",
    params: storageParam,
    response: ROUTES.datastoreHistory.response,
  }),
  storageSnapshots: route({
    method: "GET",
    path: "/api/storage/{storage}/snapshots",
    summary: "The snapshots in a storage (of one group with `group`), read with the node's identity on the server",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name>",
    params: storageParam,
    query: z.strictObject({ group: GroupName.optional() }),
    response: z.array(SnapshotSchema),
  }),
  browseArchive: route({
    method: "GET",
    path: "/api/storage/{storage}/browse",
    summary: "The entries of a file archive of a guest's snapshot under `path` (a directory's children), as folders to browse",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name> and VM.Backup on /vms/<id> of the snapshot's guest",
    params: storageParam,
    query: z.strictObject({ snapshot: SnapshotName, archive: TreeArchiveName, path: ArchivePath.optional() }),
    response: z.array(ArchiveEntrySchema),
  }),
  downloadFile: route({
    method: "GET",
    path: "/api/storage/{storage}/download",
    summary: "One file of a file archive of a guest's snapshot (at most 64 MiB; gorde restore --path takes any)",
    access: "authenticated",
    permission: "Datastore.Audit on /storage/<name> and VM.Backup on /vms/<id> of the snapshot's guest",
    params: storageParam,
    query: z.strictObject({ snapshot: SnapshotName, archive: TreeArchiveName, path: ArchivePath }),
    response: "binary",
  }),
  setStorageNotes: route({
    method: "PUT",
    path: "/api/storage/{storage}/notes",
    summary: "Sets a snapshot's notes",
    access: "authenticated",
    permission: "Datastore.AllocateSpace on /storage/<name>",
    params: storageParam,
    body: z.strictObject({ snapshot: SnapshotName, notes: z.string().max(4096) }),
    response: Ok,
  }),
  setStorageProtected: route({
    method: "PUT",
    path: "/api/storage/{storage}/protected",
    summary: "Protects a snapshot from prune and forget, or lifts the protection",
    access: "authenticated",
    permission: "Datastore.AllocateSpace on /storage/<name>",
    params: storageParam,
    body: z.strictObject({ snapshot: SnapshotName, protected: z.boolean() }),
    response: Ok,
  }),
  forgetStorageSnapshot: route({
    method: "DELETE",
    path: "/api/storage/{storage}/snapshots",
    summary: "Forgets a snapshot (its chunks go at the server's next GC)",
    access: "authenticated",
    permission: "Datastore.AllocateSpace on /storage/<name>",
    params: storageParam,
    query: z.strictObject({ snapshot: SnapshotName }),
    response: Ok,
  }),
  listTasks: ROUTES.listTasks,
  getTask: ROUTES.getTask,
  taskLog: ROUTES.taskLog,
  taskEvents: ROUTES.taskEvents,
  abortTask: ROUTES.abortTask,
  getPlan: ROUTES.getPlan,
  applyPlan: ROUTES.applyPlan,
  listRuns: ROUTES.listRuns,
  listUsers: ROUTES.listUsers,
  addUser: ROUTES.addUser,
  updateUser: ROUTES.updateUser,
  removeUser: ROUTES.removeUser,
  listTokens: ROUTES.listTokens,
  addToken: ROUTES.addToken,
  removeToken: ROUTES.removeToken,
  listAcl: ROUTES.listAcl,
  setAcl: ROUTES.setAcl,
  login: ROUTES.login,
  logout: ROUTES.logout,
  permissions: ROUTES.permissions,
  clusterStatus: ROUTES.clusterStatus,
  joinCluster: ROUTES.joinCluster,
  admitMember: ROUTES.admitMember,
  createCluster: CREATE_CLUSTER_ROUTE,
  ...HA_ROUTES,
} as const;

export type NodeRouteName = keyof typeof NODE_ROUTES;
