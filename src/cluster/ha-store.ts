// Where the cluster's guests live and which of them are HA resources, in etcd:
//
//   /gorde/guests/<id>  {"node", "kind", "name"}       one owner per guest id, cluster-wide
//   /gorde/ha/<id>      {"sid", "request", "state", …}  an HA resource and its state
//
// Every change compares before it writes (ClusterStore.swap): a guest's owner changes only
// if it is still the node it was, so two survivors, or a survivor and a node coming back,
// can never both take one guest.
import { z } from "zod";
import type { HaResource } from "../api/ha-routes.ts";
import { GordeError } from "../errors.ts";
import type { ClusterStore } from "./cluster-store.ts";
import { parseAlive } from "./membership.ts";

export const PlacementSchema = z.strictObject({ node: z.string(), kind: z.enum(["vm", "ct"]), name: z.string() });
export type Placement = z.infer<typeof PlacementSchema>;

export const HaEntrySchema = z.strictObject({
  sid: z.string(),
  request: z.enum(["started", "stopped"]),
  maxRestart: z.number().int(),
  maxRelocate: z.number().int(),
  /** what the owning node last made of it; `fence` is shown, never stored (a node's lease says it) */
  state: z.enum(["started", "stopped", "recovery", "error"]),
  reason: z.string().optional(),
  /** recoveries that failed on a survivor since the resource last ran */
  failedRecoveries: z.number().int().default(0),
  /** while in recovery: the lost node, and when (ms since the epoch) its lease was last renewed */
  lostNode: z.string().optional(),
  lostAt: z.number().optional(),
});
export type HaEntry = z.infer<typeof HaEntrySchema>;

/** A value as read, with the exact text a swap compares against. */
export interface Read<T> {
  raw: string;
  value: T;
}

export interface ClusterView {
  placements: Map<number, Read<Placement>>;
  resources: Map<number, Read<HaEntry>>;
  /** nodes whose lease is alive */
  online: Set<string>;
  /** when each of them last renewed its lease (ms since the epoch), as it published */
  renewedAt: Map<string, number>;
}

function parse<T>(schema: z.ZodType<T>, raw: string): T | undefined {
  try {
    const r = schema.safeParse(JSON.parse(raw));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

function readAll<T>(all: Map<string, string>, schema: z.ZodType<T>): Map<number, Read<T>> {
  const out = new Map<number, Read<T>>();
  for (const [k, raw] of all) {
    const value = parse(schema, raw);
    if (/^\d+$/.test(k) && value !== undefined) out.set(Number(k), { raw, value });
  }
  return out;
}

export function sidOf(kind: "vm" | "ct", id: number): string {
  return `${kind}:${id}`;
}

export function parseSid(sid: string): { kind: "vm" | "ct"; id: number } {
  const m = /^(vm|ct):([1-9]\d{2,8})$/.exec(sid);
  if (!m) throw new GordeError("usage", `"${sid}" is not an HA resource: name a guest as vm:<id> or ct:<id>.`);
  return { kind: m[1] as "vm" | "ct", id: Number(m[2]) };
}

/** The state an operator sees: a resource on a node whose lease lapsed is being fenced. */
export function shownResource(id: number, ha: HaEntry, placement: Placement | undefined, online: Set<string>): HaResource {
  const node = placement?.node ?? "";
  const lost = !online.has(node) && ha.state !== "stopped" && ha.state !== "error";
  return {
    sid: ha.sid,
    state: lost ? "fence" : ha.state,
    node,
    request: ha.request,
    maxRestart: ha.maxRestart,
    maxRelocate: ha.maxRelocate,
    ...(lost ? { reason: `node ${node} is not online: its guests are recovered elsewhere once its lease has lapsed` } : ha.reason ? { reason: ha.reason } : {}),
  };
}

export class ClusterGuests {
  private readonly store: ClusterStore;

  constructor(store: ClusterStore) {
    this.store = store;
  }

  /** Everything the HA agents decide on, read at once. */
  async view(): Promise<ClusterView> {
    const [placements, resources, alive] = await Promise.all([this.store.list("guests/"), this.store.list("ha/"), this.store.list("alive/")]);
    const renewedAt = new Map<string, number>();
    for (const [node, v] of alive) {
      const at = parseAlive(v).renewedAt;
      if (at !== undefined) renewedAt.set(node, at);
    }
    return { placements: readAll(placements, PlacementSchema), resources: readAll(resources, HaEntrySchema), online: new Set(alive.keys()), renewedAt };
  }

  private async placement(id: number): Promise<Read<Placement> | undefined> {
    const raw = await this.store.get(`guests/${id}`);
    const value = raw === null ? undefined : parse(PlacementSchema, raw);
    return raw === null || value === undefined ? undefined : { raw, value };
  }

  /** Places guest `id` on `p.node`; refused when another node of the cluster has that id. */
  async claim(id: number, p: Placement): Promise<void> {
    for (;;) {
      const cur = await this.placement(id);
      if (cur && cur.value.node !== p.node) throw new GordeError("exists", `guest id ${id} is in use on node ${cur.value.node} of the cluster.`);
      if (cur?.raw === JSON.stringify(p)) return;
      if (await this.store.swap({ [`guests/${id}`]: cur?.raw ?? null }, { [`guests/${id}`]: JSON.stringify(p) })) return;
    }
  }

  /** Gives up guest `id` (removed from `node`); an HA resource must be removed first. */
  async release(id: number, node: string): Promise<void> {
    const cur = await this.placement(id);
    if (!cur || cur.value.node !== node) return;
    if ((await this.store.get(`ha/${id}`)) !== null) throw new GordeError("locked", `guest ${id} is an HA resource; take it out of HA first (gorde ha remove ${sidOf(cur.value.kind, id)}).`);
    await this.store.swap({ [`guests/${id}`]: cur.raw, [`ha/${id}`]: null }, { [`guests/${id}`]: null });
  }

  async addResource(sid: string, o: { maxRestart?: number; maxRelocate?: number; state?: "started" | "stopped" }): Promise<HaResource> {
    const { kind, id } = parseSid(sid);
    const cur = await this.placement(id);
    if (!cur) throw new GordeError("not-found", `no guest ${id} in the cluster.`);
    if (cur.value.kind !== kind) throw new GordeError("usage", `guest ${id} is a ${cur.value.kind === "vm" ? "VM" : "container"}: name it ${sidOf(cur.value.kind, id)}.`);
    const request = o.state ?? "started";
    const entry: HaEntry = { sid, request, maxRestart: o.maxRestart ?? 1, maxRelocate: o.maxRelocate ?? 1, state: request, failedRecoveries: 0 };
    if (!(await this.store.swap({ [`ha/${id}`]: null, [`guests/${id}`]: cur.raw }, { [`ha/${id}`]: JSON.stringify(entry) }))) {
      if ((await this.store.get(`ha/${id}`)) !== null) throw new GordeError("exists", `${sid} is an HA resource already.`);
      throw new GordeError("locked", `guest ${id} moved while it was being added; try again.`);
    }
    return shownResource(id, entry, cur.value, new Set([cur.value.node]));
  }

  async removeResource(sid: string): Promise<void> {
    const { id } = parseSid(sid);
    const raw = await this.store.get(`ha/${id}`);
    if (raw === null || parse(HaEntrySchema, raw)?.sid !== sid) throw new GordeError("not-found", `${sid} is not an HA resource.`);
    if (!(await this.store.swap({ [`ha/${id}`]: raw }, { [`ha/${id}`]: null }))) throw new GordeError("locked", `${sid} changed while it was being removed; try again.`);
  }

  /** Guest `id`'s owner and whether it is an HA resource, read now (linearizable). */
  async current(id: number): Promise<{ node: string | undefined; ha: boolean }> {
    const [placed, ha] = await Promise.all([this.placement(id), this.store.get(`ha/${id}`)]);
    return { node: placed?.value.node, ha: ha !== null };
  }

  /** Writes a resource's new state if nobody changed it since `read`; answers whether it did. */
  async setState(id: number, read: Read<HaEntry>, next: Partial<HaEntry>): Promise<boolean> {
    const value: HaEntry = { ...read.value, ...next };
    if (next.reason === undefined && "reason" in next) delete value.reason;
    return this.store.swap({ [`ha/${id}`]: read.raw }, { [`ha/${id}`]: JSON.stringify(value) });
  }

  /**
   * Takes guest `id` from the lost node to `to`, in one transaction: only if it is still
   * placed on the node it was, its resource is unchanged and that node has no alive key
   * (no lease). Answers whether `to` has it now.
   */
  async take(id: number, o: { placement: Read<Placement>; resource: Read<HaEntry>; to: string; reason: string; lostAt: number }): Promise<boolean> {
    const placed: Placement = { ...o.placement.value, node: o.to };
    const entry: HaEntry = { ...o.resource.value, state: "recovery", reason: o.reason, lostNode: o.placement.value.node, lostAt: o.lostAt };
    // ...and only while the lost node holds no lease: one that came back keeps its guests.
    return this.store.swap(
      { [`guests/${id}`]: o.placement.raw, [`ha/${id}`]: o.resource.raw, [`alive/${o.placement.value.node}`]: null },
      { [`guests/${id}`]: JSON.stringify(placed), [`ha/${id}`]: JSON.stringify(entry) },
    );
  }
}
