// What the server's handlers share: its datastores with their maintenance modes, auth,
// tasks, remotes, sessions and metrics, and the permission checks every datastore route
// makes the same way.
import type { UsageHistory } from "../jobs/usage-history.ts";
import type { MaintenanceMode } from "../api/routes.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import type { Datastore, SnapshotInfo } from "../datastore/datastore.ts";
import { type Group, parseSnapshotRef } from "../format/names.ts";
import { type AuthStore, type Privilege, datastoreAclPath, groupAccess, ownsGroup } from "../host/auth.ts";
import { HttpError } from "../host/http.ts";
import type { TaskManager } from "../host/tasks.ts";
import type { ServerMetrics } from "./metrics.ts";
import type { RemoteStore } from "./remotes.ts";
import type { SessionTable } from "./sessions.ts";

export interface StoreEntry {
  name: string;
  store: Datastore;
  pool: ChunkPool | undefined;
}

/** The server's state, made once at start. */
export interface ServerState {
  log: (line: string) => void;
  auth: AuthStore;
  stores: Map<string, StoreEntry>;
  /** datastore name → mode; a name not in it is "none" */
  maintenance: Record<string, MaintenanceMode>;
  maintenanceFile: string;
  tasks: TaskManager;
  remotes: RemoteStore;
  sessions: SessionTable;
  metrics: ServerMetrics;
  /** each datastore's usage over time, for the web interface's charts */
  usage: UsageHistory;
}

export interface ServerContext extends ServerState {
  /** the store's worker pool, started on first use */
  poolOf(e: StoreEntry): Promise<ChunkPool>;
  privs(authId: string, store: string, ns: string[]): Set<Privilege>;
  deny(authId: string, what: string): never;
  /** the store, if the caller may see it and its maintenance mode allows `access` */
  storeFor(authId: string, name: string, access: "read" | "write" | "admin"): StoreEntry;
  groupAcc(authId: string, e: StoreEntry, ns: string[], g: Group): Promise<{ owner: string | null; acc: ReturnType<typeof groupAccess> }>;
  needSys(authId: string, priv: Privilege, what: string): void;
  findSnap(e: StoreEntry, ns: string[], name: string): Promise<SnapshotInfo>;
}

export function serverContext(state: ServerState): ServerContext {
  const { auth, stores, maintenance } = state;
  const poolOf = async (e: StoreEntry): Promise<ChunkPool> => {
    if (!e.pool) {
      // One more worker than cores, as on the client: a worker waiting in syncfs leaves the cores busy.
      const pool = new ChunkPool();
      await pool.init(e.store.chunks.dir, 0, Buffer.alloc(0));
      e.pool ??= pool;
      if (e.pool !== pool) await pool.close();
    }
    return e.pool;
  };
  // ---- permissions
  const privs = (authId: string, store: string, ns: string[]): Set<Privilege> => auth.privileges(authId, datastoreAclPath(store, ns));
  const deny = (authId: string, what: string): never => {
    throw new HttpError(403, `permission denied: ${authId} may not ${what}.`);
  };
  const storeFor = (authId: string, name: string, access: "read" | "write" | "admin"): StoreEntry => {
    const e = stores.get(name);
    // An unknown store and a store the caller may not see answer alike.
    if (!e || !auth.anyPrivilegesBelow(authId, datastoreAclPath(name))) throw new HttpError(404, `no datastore ${name}.`);
    const mode = maintenance[name] ?? "none";
    if (mode === "offline" && access !== "admin") throw new HttpError(503, `datastore ${name} is offline for maintenance.`);
    if (mode === "read-only" && access === "write") throw new HttpError(503, `datastore ${name} is read-only for maintenance; no backups or changes now.`);
    return e;
  };
  const groupAcc = async (authId: string, e: StoreEntry, ns: string[], g: Group) => {
    const owner = await e.store.groupOwner(ns, g);
    return { owner, acc: groupAccess(privs(authId, e.name, ns), owner !== null && ownsGroup(authId, owner)) };
  };
  const needSys = (authId: string, priv: Privilege, what: string): void => {
    if (!auth.can(authId, "/", priv)) deny(authId, what);
  };
  const findSnap = async (e: StoreEntry, ns: string[], name: string): Promise<SnapshotInfo> => e.store.findSnapshot(ns, parseSnapshotRef(name));
  return { ...state, poolOf, privs, deny, storeFor, groupAcc, needSys, findSnap };
}
