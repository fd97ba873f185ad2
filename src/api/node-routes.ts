// The node agent's HTTP API (`gorde node`, port 8006 as PVE's): its guests, their backups
// to the backup server and restores from it, and the same user, token and ACL routes as
// the server. Privileges are PVE's: VM.Audit to look, VM.PowerMgmt to start and stop,
// VM.Backup to back up and restore, VM.Allocate to create, configure and remove, on
// /vms/<id> (or above).
import { z } from "zod";
import { CtConfigSchema, GuestConfigSchema, VmConfigSchema } from "./guest-config.ts";
import { ROUTES, type Route, SnapshotName } from "./routes.ts";

function route<const R extends Route>(r: R): R {
  return r;
}

export const GuestId = z.coerce.number().int().min(100).max(999_999_999);
const idParam = z.strictObject({ id: GuestId });
const Ok = z.object({ ok: z.literal(true) });

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
  lastBackup: z.object({ snapshot: z.string(), time: z.number(), ok: z.boolean(), error: z.string().optional() }).optional(),
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
    summary: "Backs a guest up to the node's backup server (vzdump's modes)",
    access: "authenticated",
    permission: "VM.Backup on /vms/<id>",
    params: idParam,
    body: z.strictObject({ mode: BackupMode.optional(), notes: z.string().max(4096).optional() }),
    response: GuestBackupResultSchema,
  }),
  restoreGuest: route({
    method: "POST",
    path: "/api/restore",
    summary: "Recreates a guest on this node from a snapshot on the backup server",
    access: "authenticated",
    permission: "VM.Backup on /vms/<id> (and VM.Allocate to replace an existing guest)",
    body: RestoreGuestSchema,
    response: GuestStatusSchema,
  }),
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
} as const;

export type NodeRouteName = keyof typeof NODE_ROUTES;
