// HA resources, in Proxmox VE's words (ha-manager): a guest the cluster keeps running — on
// its node while that node lives, restored from its newest good backup on the survivor when
// it does not. Only a node serves these routes (a node of a cluster).
import { z } from "zod";
import { route } from "./route.ts";

/** `vm:100`, `ct:101`: a guest's kind and id, as PVE's service ids. */
export const HaSid = z.string().regex(/^(vm|ct):[1-9]\d{2,8}$/, "a guest as vm:<id> or ct:<id>");

/**
 * A resource's state, as ha-manager shows it: `started` (running on its node), `stopped`
 * (not wanted running), `fence` (its node is lost; waiting until it cannot run there any
 * more), `recovery` (being brought back on another node, or waiting to be), `error` (given
 * up on: an operator must look).
 */
export const HaState = z.enum(["started", "stopped", "fence", "recovery", "error"]);
export type HaState = z.infer<typeof HaState>;

export const HaResourceSchema = z.object({
  sid: HaSid,
  state: HaState,
  /** the node that owns the guest */
  node: z.string(),
  /** what the operator asked: running or not */
  request: z.enum(["started", "stopped"]),
  maxRestart: z.number().int(),
  maxRelocate: z.number().int(),
  /** why the resource is in its state, when it is not plainly started or stopped */
  reason: z.string().optional(),
});
export type HaResource = z.infer<typeof HaResourceSchema>;

/** A guest brought back on a survivor: from which snapshot, how old it was (RPO), how long it took (RTO) and where the time went. */
export const RecoverySchema = z.object({
  id: z.number(),
  guest: z.number(),
  sid: HaSid,
  /** the node that was lost and the node that took the guest */
  from: z.string(),
  node: z.string(),
  snapshot: z.string().nullable(),
  result: z.enum(["running", "recovered", "failed"]),
  error: z.string().nullable(),
  /** when (ms since the epoch) the lost node's lease was last renewed: where RTO counts from */
  failedAt: z.number(),
  end: z.number().nullable(),
  rpoSeconds: z.number().nullable(),
  rtoSeconds: z.number().nullable(),
  /** failure → the lease seen lapsed; → the guest taken; → restored; → checks passing */
  detectSeconds: z.number().nullable(),
  fenceSeconds: z.number().nullable(),
  restoreSeconds: z.number().nullable(),
  bootSeconds: z.number().nullable(),
  log: z.string(),
});
export type Recovery = z.infer<typeof RecoverySchema>;

export const HA_ROUTES = {
  haStatus: route({
    method: "GET",
    path: "/api/cluster/ha",
    summary: "The cluster's HA resources with their state and node",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    response: z.array(HaResourceSchema),
  }),
  addHa: route({
    method: "POST",
    path: "/api/cluster/ha",
    summary: "Makes a guest of the cluster an HA resource",
    access: "authenticated",
    permission: "Sys.Modify on /",
    body: z.strictObject({
      sid: HaSid,
      /** restarts on its own node before it counts as failed there (PVE's default 1) */
      maxRestart: z.number().int().min(0).max(10).optional(),
      /** recoveries on another node before the resource is in error (PVE's default 1) */
      maxRelocate: z.number().int().min(0).max(10).optional(),
      state: z.enum(["started", "stopped"]).optional(),
    }),
    response: HaResourceSchema,
  }),
  removeHa: route({
    method: "DELETE",
    path: "/api/cluster/ha/{sid}",
    summary: "Takes a guest out of HA (the guest itself stays as it is)",
    access: "authenticated",
    permission: "Sys.Modify on /",
    params: z.strictObject({ sid: HaSid }),
    response: z.object({ ok: z.literal(true) }),
  }),
  listRecoveries: route({
    method: "GET",
    path: "/api/cluster/recoveries",
    summary: "The guests this node brought back from backup after another node was lost, newest first",
    access: "authenticated",
    permission: "VM.Audit on /vms/<id>",
    query: z.strictObject({ limit: z.coerce.number().int().min(1).max(10000).optional() }),
    response: z.array(RecoverySchema),
  }),
} as const;
