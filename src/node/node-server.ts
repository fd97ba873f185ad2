// `gorde node`: the node agent. Runs the node's guests and serves their API over HTTPS
// (HTTP/2, a self-signed certificate whose fingerprint clients pin), with its own users,
// tokens and ACLs as locked down as the backup server's.
import fsp from "node:fs/promises";
import path from "node:path";
import { type GuestStatus, NODE_ROUTES } from "../api/node-routes.ts";
import { rpoState } from "../schedule/plan.ts";
import { API_VERSION } from "../api/routes.ts";
import { RemoteRepository } from "../client/remote.ts";
import { ClusterMembership } from "../cluster/membership.ts";
import { clusterHandlers, createClusterHandler } from "../cluster/cluster-handlers.ts";
import { GordeError } from "../errors.ts";
import { parseSnapshotRef } from "../format/names.ts";
import { accessHandlers, denied } from "../host/access-handlers.ts";
import { type ApiHandlers, apiDispatcher, listenHttps } from "../host/api-host.ts";
import { AuthStore, type Privilege } from "../host/auth.ts";
import type { LoginLimits } from "../host/login-limiter.ts";
import { HttpError } from "../host/http.ts";
import { planHandlers } from "../host/plan-handlers.ts";
import { taskHandlers } from "../host/task-handlers.ts";
import { TaskManager, throttledProgress } from "../host/tasks.ts";
import { DrillHistory } from "../jobs/drill-history.ts";
import { DrillRunner } from "./drill.ts";
import { ensureCertificate } from "../host/tls.ts";
import { GuestManager } from "./guests.ts";
import { ClusterGuests } from "../cluster/ha-store.ts";
import { RecoveryHistory } from "../jobs/recovery-history.ts";
import { WebSessions } from "../host/web-sessions.ts";
import { withWebUi } from "../host/web-ui.ts";
import { FenceHelper } from "./fence-helper-client.ts";
import { storageHandlers } from "./storage-handlers.ts";
import { HaAgent } from "./ha-agent.ts";
import { haHandlers } from "./ha-handlers.ts";
import { PlanRunner } from "../jobs/plan-runner.ts";
import { clusterPlan } from "../cluster/cluster-plan.ts";
import { nodeJobRunner } from "./node-jobs.ts";
import { DEFAULT_NODE_PORT, type NodeConfig, serverSecret } from "./node-config.ts";

export interface NodeOptions {
  config: NodeConfig;
  host?: string;
  port?: number;
  /** password of user admin, needed on the first start (empty state directory) */
  adminPassword?: string;
  authFailureDelayMs?: number;
  /** throttling of failed logins (tests use small ones; defaults DEFAULT_LOGIN_LIMITS) */
  loginLimits?: Partial<LoginLimits>;
  log?: (line: string) => void;
}

export interface GordeNode {
  readonly name: string;
  readonly port: number;
  readonly fingerprint: string;
  readonly guests: GuestManager;
  /** stops the API and every guest */
  close(): Promise<void>;
}

export async function startNode(opts: NodeOptions): Promise<GordeNode> {
  const { config } = opts;
  const log = opts.log ?? (() => undefined);
  const stateDir = path.join(config.dataDir, "state");
  await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const auth = await AuthStore.open(stateDir, { failureDelayMs: opts.authFailureDelayMs, loginLimits: opts.loginLimits, log });
  if (auth.isEmpty()) {
    if (!opts.adminPassword) throw new GordeError("usage", "the node's data directory is new: set GORDE_ADMIN_PASSWORD to the password of its first user, admin.");
    await auth.createFirstAdmin("admin", opts.adminPassword);
    log("created user admin with the role Admin on /");
  }
  // Checked now: a node that cannot reach its backup server's identity says so at start.
  const secret = serverSecret(config);
  /** the node's backup server; `store` picks another datastore there than the config's */
  const repository = (rate?: number, store?: string): Promise<RemoteRepository> => {
    const url = new URL(config.server.url);
    if (store !== undefined) url.pathname = `/${store}`;
    return RemoteRepository.connect(url.toString(), { secret, fingerprint: config.server.fingerprint, rate });
  };
  // On a cluster, guest ids are the cluster's (the membership opens below, before any guest starts).
  const late: { membership?: ClusterMembership; ha?: HaAgent } = {};
  const placed = (): ClusterGuests | undefined => {
    const store = late.membership?.clusterStore;
    return store ? new ClusterGuests(store) : undefined;
  };
  const guests = await GuestManager.open({
    dataDir: config.dataDir,
    nodeName: config.name,
    repository,
    log,
    placement: {
      claim: async (c) => placed()?.claim(c.id, { node: config.name, kind: c.kind, name: c.name }),
      release: async (id) => placed()?.release(id, config.name),
      // On a cluster the HA agent decides; before it runs, only a node in no cluster starts guests.
      mayStart: async (id) => {
        if (!late.membership?.clusterStore) return;
        if (!late.ha) throw new GordeError("locked", `node ${config.name} is starting; guest ${id} is not started yet.`);
        await late.ha.mayStart(id);
      },
    },
  });
  // Before any guest starts: a sandbox left by a drill the node died in goes first.
  const drillHistory = DrillHistory.open(path.join(stateDir, "drills.db"));
  const drills = await DrillRunner.open({ config, guests, repository: () => repository(), history: drillHistory, log });
  const tasks = await TaskManager.open(path.join(stateDir, "tasks"));
  const cert = await ensureCertificate(stateDir);
  const jobs = await PlanRunner.open({
    planFile: path.join(config.dataDir, "plan.yaml"),
    historyFile: path.join(stateDir, "history.db"),
    host: config.name,
    kinds: ["backup", "drill"],
    runner: (plan) => nodeJobRunner(plan, guests, config.name, repository, drills),
    log,
    shared: () => {
      const store = late.membership?.clusterStore;
      const cluster = late.membership?.cluster;
      return store && cluster ? clusterPlan(store, cluster, config.name) : undefined;
    },
  });

  const fence = new FenceHelper(path.join(config.dataDir, "run"), log);
  const membership = await ClusterMembership.open({ stateDir, member: config.name, role: "node", guests: () => guests.ids(), onRenewed: (at) => fence.renewed(at), log });
  late.membership = membership;
  const recoveries = RecoveryHistory.open(path.join(stateDir, "recoveries.db"));
  const clustered = membership.cluster !== undefined;
  const webSessions = new WebSessions();
  const handlers: ApiHandlers<typeof NODE_ROUTES> = {
    version: () => ({ json: { version: "0.1.0", api: API_VERSION, product: "node" } }),
    ...guestHandlers({ auth, config, guests, drills, drillHistory, tasks, rpoTarget: (id) => jobs.rpoTarget(id), log }),
    ...storageHandlers({ auth, config, repository: () => repository(), log }),
    ...taskHandlers(auth, tasks),
    ...planHandlers(auth, jobs, log),
    ...accessHandlers(auth, webSessions, log),
    ...clusterHandlers(auth, membership),
    // The node's guests are the new cluster's at once: `ha add` right after `cluster create` finds them.
    createCluster: async (ctx) => {
      const created = await createClusterHandler(auth, membership)(ctx);
      for (const id of guests.ids()) {
        const c = guests.config(id);
        await placed()?.claim(id, { node: config.name, kind: c.kind, name: c.name });
      }
      return created;
    },
    ...haHandlers({ auth, ha: () => late.ha, recoveries }),
  };

  const dispatch = withWebUi(apiDispatcher({ routes: NODE_ROUTES, handlers, auth, sessions: webSessions, log }));
  const host = opts.host ?? "0.0.0.0";
  /** Everything but the listener, in order: a drill under way removes its sandbox before the guests stop. */
  // The guests stop before the lease is given up: a survivor takes them only once they are down.
  const closeParts = async (): Promise<void> => {
    await late.ha?.close();
    await jobs.close();
    await tasks.close();
    await drills.close();
    drillHistory.close();
    await guests.close();
    fence.close();
    await membership.close();
    recoveries.close();
  };
  const listener = await listenHttps({ host, port: opts.port ?? DEFAULT_NODE_PORT, cert, dispatch }).catch(async (err: unknown) => {
    await closeParts();
    throw err;
  });
  log(`node ${config.name} listening on ${host}:${listener.port}`);
  // Alone, a node starts its onboot guests now; on a cluster its HA agent does, once it has read the cluster's state.
  if (!clustered) await guests.startOnBoot();
  late.ha = HaAgent.start({
    node: config.name,
    membership,
    guests,
    drills,
    history: recoveries,
    fence,
    startOnBoot: clustered,
    notify: (o) => jobs.tell({ job: "ha-recovery", kind: "ha", ...o }),
    log,
  });
  return {
    name: config.name,
    port: listener.port,
    fingerprint: cert.fingerprint,
    guests,
    async close() {
      const closed = listener.closed();
      listener.destroyConnections();
      await closeParts();
      await closed;
    },
  };
}

type GuestRoute =
  | "nodeStatus"
  | "listGuests"
  | "createGuest"
  | "guestStatus"
  | "guestConfig"
  | "setGuestConfig"
  | "removeGuest"
  | "startGuest"
  | "stopGuest"
  | "guestLog"
  | "backupGuest"
  | "restoreGuest"
  | "startDrill"
  | "listDrills"
  | "getDrill";

/** The node's own routes: its status, its guests and their backups, restores and drills. */
function guestHandlers(parts: {
  auth: AuthStore;
  config: NodeConfig;
  guests: GuestManager;
  drills: DrillRunner;
  drillHistory: DrillHistory;
  tasks: TaskManager;
  /** the plan's RPO for a guest (ms) */
  rpoTarget: (id: number) => number | undefined;
  log: (line: string) => void;
}): ApiHandlers<typeof NODE_ROUTES, GuestRoute> {
  const { auth, config, guests, drills, drillHistory, tasks, log } = parts;
  /** A guest's status with where its last good backup stands against the plan's RPO. */
  const statusOf = async (id: number): Promise<GuestStatus> => {
    const s = await guests.status(id);
    const target = parts.rpoTarget(id);
    if (target === undefined) return s;
    const good = s.lastBackup?.goodTime;
    return { ...s, rpo: { targetSeconds: Math.round(target / 1000), state: rpoState(good === undefined ? undefined : good * 1000, target, Date.now()) } };
  };
  const need = (authId: string, id: number, priv: Privilege, what: string): void => {
    if (!auth.can(authId, `/vms/${id}`, priv)) {
      // A guest the caller may not even see answers as a missing one.
      if (!auth.can(authId, `/vms/${id}`, "VM.Audit")) throw new HttpError(404, `no guest ${id} on node ${config.name}.`);
      throw denied(authId, what);
    }
  };
  const visible = (authId: string, id: number): boolean => auth.can(authId, `/vms/${id}`, "VM.Audit");
  return {
    nodeStatus: ({ authId }) => {
      if (!auth.can(authId, "/", "Sys.Audit") && !auth.anyPrivilegesBelow(authId, "/vms")) throw denied(authId, "see the node");
      return { json: { name: config.name, server: config.server.url.replace(/\/\/[^@]*@/, "//"), guests: guests.ids().length, version: "0.1.0" } };
    },
    listGuests: async ({ authId }) => ({ json: await Promise.all(guests.ids().filter((id) => visible(authId, id)).map(statusOf)) }),
    createGuest: async ({ authId, body }) => {
      const b = body;
      const id = "config" in b ? b.config.id : b.demo.id;
      if (!auth.can(authId, `/vms/${id}`, "VM.Allocate")) throw denied(authId, `create guest ${id}`);
      return { json: await guests.create(b) };
    },
    guestStatus: async ({ authId, params }) => {
      need(authId, params.id, "VM.Audit", "see the guest");
      return { json: await statusOf(params.id) };
    },
    guestConfig: ({ authId, params }) => {
      need(authId, params.id, "VM.Audit", "see the guest");
      return { json: guests.config(params.id) };
    },
    setGuestConfig: async ({ authId, params, body }) => {
      need(authId, params.id, "VM.Allocate", `configure guest ${params.id}`);
      return { json: await guests.setConfig(params.id, body) };
    },
    removeGuest: async ({ authId, params }) => {
      need(authId, params.id, "VM.Allocate", `remove guest ${params.id}`);
      await guests.remove(params.id);
      return { json: { ok: true } };
    },
    startGuest: async ({ authId, params }) => {
      need(authId, params.id, "VM.PowerMgmt", `start guest ${params.id}`);
      return { json: await guests.start(params.id) };
    },
    stopGuest: async ({ authId, params }) => {
      need(authId, params.id, "VM.PowerMgmt", `stop guest ${params.id}`);
      return { json: await guests.stop(params.id) };
    },
    guestLog: async ({ authId, params }) => {
      need(authId, params.id, "VM.Audit", "see the guest");
      return { text: await guests.consoleLog(params.id) };
    },
    // Backups and restores run as tasks (PVE's vzdump and qmrestore): the caller follows
    // the log live and may abort; what can be checked before is, so bad input starts nothing.
    backupGuest: ({ authId, params, body }) => {
      const id = params.id;
      need(authId, id, "VM.Backup", `back up guest ${id}`);
      guests.config(id);
      const t = tasks.start({ type: "backup", authId, target: String(id) }, async (task) => {
        const progress = throttledProgress(task);
        const r = await guests.backup(id, body.mode, { notes: body.notes, signal: task.signal, onLog: (l) => task.log(l), progress: (e) => progress({ done: e.done, total: e.total, item: e.item }) });
        log(`${authId} backed up guest ${id}: ${r.snapshot}`);
        return r;
      });
      return { json: { task: t.id } };
    },
    restoreGuest: ({ authId, body }) => {
      const b = body;
      const ref = parseSnapshotRef(b.snapshot);
      const id = b.id ?? Number(ref.id);
      if (ref.type === "host" || !Number.isInteger(id)) throw new HttpError(400, `${b.snapshot} is not the backup of a guest.`);
      if (!auth.can(authId, `/vms/${id}`, "VM.Backup")) throw denied(authId, `restore guest ${id}`);
      // The snapshot is another guest's data: reading it takes VM.Backup on that guest too, as PVE's restore asks.
      if (Number(ref.id) !== id && !auth.can(authId, `/vms/${ref.id}`, "VM.Backup")) throw denied(authId, `read the backups of guest ${ref.id}`);
      if (b.force && !auth.can(authId, `/vms/${id}`, "VM.Allocate")) throw denied(authId, `replace guest ${id}`);
      guests.refuseOverwrite(id, b.force);
      const t = tasks.start({ type: "restore", authId, target: String(id) }, async (task) => {
        const r = await guests.restore(b, { signal: task.signal, say: (l) => task.log(l) });
        log(`${authId} restored ${b.snapshot} as guest ${r.id}`);
        return r;
      });
      return { json: { task: t.id } };
    },
    startDrill: async ({ authId, body }) => {
      const b = body;
      need(authId, b.guest, "VM.Backup", `run a restore drill of guest ${b.guest}`);
      // Everything is checked before the task starts: bad input starts nothing.
      const plan = await drills.prepare(b);
      const id = drills.begin(plan);
      const t = tasks.start({ type: "drill", authId, target: String(b.guest) }, async (task) => {
        const r = await drills.run(plan, id, { log: (l) => task.log(l), signal: task.signal });
        if (r.result !== "passed") throw new GordeError(r.result === "failed" ? "corrupt" : "io", `drill ${id} of guest ${b.guest} ${r.result === "failed" ? `failed at check ${r.failedCheck}` : "could not run"}: ${r.error ?? "no reason given"}`);
        return r;
      });
      log(`${authId} started drill ${id} of guest ${b.guest} (${plan.snapshot}), task ${t.id}`);
      return { json: { task: t.id, drill: id } };
    },
    listDrills: ({ authId, query }) => {
      const guest = query.guest;
      if (guest !== undefined) need(authId, guest, "VM.Audit", "see the guest");
      const list = drillHistory.list({ guest, limit: query.limit }).filter((d) => visible(authId, d.guest));
      return { json: list };
    },
    getDrill: ({ authId, params }) => {
      const d = drillHistory.get(Number(params.id));
      if (!d || !visible(authId, d.guest)) throw new HttpError(404, `no drill ${params.id} on node ${config.name}.`);
      return { json: d };
    },
  };
}
