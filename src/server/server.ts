// `gorde server`: datastores over HTTPS (HTTP/2, TLS with a pinned self-signed
// certificate), users and tokens with ACLs, backup and reader sessions, long operations
// as tasks, Prometheus metrics and an OpenAPI document of the whole API. The routes are
// answered by one handler factory per area (datastore-handlers.ts, session-handlers.ts,
// remote-handlers.ts; tasks, the plan and access from the host kit, shared with the node).
import { datastoreStatus } from "../datastore/status.ts";
import { UsageHistory } from "../jobs/usage-history.ts";
import fs from "node:fs";
import fsp from "node:fs/promises";
import type http2 from "node:http2";
import path from "node:path";
import { z } from "zod";
import type { KeepAlive } from "../api/keep-alive.ts";
import { API_VERSION, type MaintenanceMode, ROUTES } from "../api/routes.ts";
import { GordeError } from "../errors.ts";
import { Datastore } from "../datastore/datastore.ts";
import { ClusterMembership } from "../cluster/membership.ts";
import { clusterHandlers } from "../cluster/cluster-handlers.ts";
import { accessHandlers } from "../host/access-handlers.ts";
import { WebSessions } from "../host/web-sessions.ts";
import { withWebUi } from "../host/web-ui.ts";
import { type ApiHandlers, apiDispatcher, listenHttps } from "../host/api-host.ts";
import { AuthStore } from "../host/auth.ts";
import type { LoginLimits } from "../host/login-limiter.ts";
import { HttpError, sendError } from "../host/http.ts";
import { planHandlers } from "../host/plan-handlers.ts";
import { taskHandlers } from "../host/task-handlers.ts";
import { TaskManager } from "../host/tasks.ts";
import { ensureCertificate } from "../host/tls.ts";
import { contentHandlers, datastoreHandlers, snapshotHandlers } from "./datastore-handlers.ts";
import { longTasks } from "./long-tasks.ts";
import { ServerMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { openPlan } from "./plan-jobs.ts";
import { remoteHandlers } from "./remote-handlers.ts";
import { RemoteStore } from "./remotes.ts";
import { type ServerContext, type StoreEntry, serverContext } from "./server-context.ts";
import { Uploads, backupHandlers, readerHandlers } from "./session-handlers.ts";
import { SessionTable } from "./sessions.ts";

export const DEFAULT_PORT = 8007;

/** How often each datastore's usage is sampled for its history (PBS's RRD step). */
const USAGE_SAMPLE_MS = 5 * 60_000;

export interface ServerOptions {
  stateDir: string;
  host?: string;
  port?: number;
  /** datastore name → directory; a missing or empty directory is initialised */
  datastores: Record<string, string>;
  /** password of user admin, needed on the first start (empty state directory) */
  adminPassword?: string;
  /** a backup or reader session without a request for this long is aborted (default 5 min) */
  sessionIdleMs?: number;
  /** pings of each client connection (default CLIENT_KEEP_ALIVE); one unanswered aborts its sessions */
  keepAlive?: KeepAlive;
  /** delay after a failed login (default 500 ms) */
  authFailureDelayMs?: number;
  /** throttling of failed logins (tests use small ones; defaults DEFAULT_LOGIN_LIMITS) */
  loginLimits?: Partial<LoginLimits>;
  log?: (line: string) => void;
}

export interface GordeServer {
  readonly host: string;
  readonly port: number;
  readonly fingerprint: string;
  close(): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<GordeServer> {
  const ctx = await openState(opts);
  const { auth, log, tasks, sessions, metrics, stores, usage } = ctx;
  // Each datastore's usage, now and every USAGE_SAMPLE_MS (counting its chunks walks the store).
  let sampling: Promise<void> | undefined;
  const sample = (): void => {
    sampling ??= (async () => {
      for (const e of stores.values()) {
        try {
          const s = await datastoreStatus(e.store, { cached: false });
          usage.add(e.name, { time: Math.floor(Date.now() / 1000), used: s.used, total: s.total, logicalBytes: s.logicalBytes, chunkBytes: s.chunkBytes, dedupFactor: s.dedupFactor });
        } catch (err) {
          log(`the usage of datastore ${e.name} was not sampled: ${(err as Error).message}`);
        }
      }
    })().finally(() => (sampling = undefined));
  };
  sample();
  const sampler = setInterval(sample, USAGE_SAMPLE_MS);
  sampler.unref();
  const cert = await ensureCertificate(opts.stateDir);
  const uploads = new Uploads();
  const webSessions = new WebSessions();
  const long = longTasks(ctx);
  const plan = await openPlan(ctx, long, opts.stateDir);
  // The backup host is the cluster's witness: its third vote.
  const cluster = await ClusterMembership.open({ stateDir: opts.stateDir, member: "witness", role: "witness", log });
  const handlers: ApiHandlers<typeof ROUTES> = {
    version: () => ({ json: { version: "0.1.0", api: API_VERSION, product: "server" } }),
    openapi: () => ({ json: openApiDocument() }),
    metrics: async ({ authId }) => {
      ctx.needSys(authId, "Sys.Audit", "read the metrics");
      return { text: await metrics.render() };
    },
    ...datastoreHandlers(ctx, long),
    ...snapshotHandlers(ctx),
    ...contentHandlers(ctx),
    ...backupHandlers(ctx, uploads),
    ...readerHandlers(ctx),
    ...taskHandlers(auth, tasks),
    ...planHandlers(auth, plan, log),
    ...accessHandlers(auth, webSessions, log),
    ...remoteHandlers(ctx, long),
    ...clusterHandlers(auth, cluster),
  };

  // The datastore view (ui/dist, the same build as the node's) beside the API, as PBS serves its own.
  const api = apiDispatcher({
    routes: ROUTES,
    handlers,
    auth,
    sessions: webSessions,
    binaryLimit: (name) => uploads.limit(name),
    sendFile,
    done: (name, status, ms) => metrics.request(name, status, ms),
    log,
  });
  // The datastore view (ui/dist, the same build as the node's) beside the API, as PBS serves its own.
  const dispatch = withWebUi(api, { apiPaths: ["/metrics"] });
  const host = opts.host ?? "0.0.0.0";
  const listener = await listenHttps({
    host,
    port: opts.port ?? DEFAULT_PORT,
    cert,
    dispatch,
    onSessionClosed: (session) => void sessions.connectionClosed(session),
    keepAlive: opts.keepAlive,
  });
  const port = listener.port;

  return {
    host,
    port,
    fingerprint: cert.fingerprint,
    async close() {
      // No new connections; a finish already sent gets its answer (up to 5 s), then every
      // open session is aborted and the connections closed.
      const closed = listener.closed();
      const deadline = Date.now() + 5000;
      while (uploads.finishing > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await sessions.close();
      clearInterval(sampler);
      await sampling;
      usage.close();
      listener.destroyConnections();
      await closed;
      await plan.close();
      await tasks.close();
      await cluster.close();
      for (const e of stores.values()) {
        await e.pool?.close();
        e.store.close();
      }
    },
  };
}

/** The state directory, users (the first admin on a new one), datastores, tasks, remotes, sessions and metrics. */
async function openState(opts: ServerOptions): Promise<ServerContext> {
  await fsp.mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const log = opts.log ?? (() => undefined);
  const auth = await AuthStore.open(opts.stateDir, { failureDelayMs: opts.authFailureDelayMs, loginLimits: opts.loginLimits, log });
  if (auth.isEmpty()) {
    if (!opts.adminPassword) {
      throw new GordeError("usage", "the state directory is new: set GORDE_ADMIN_PASSWORD to the password of the first user, admin.");
    }
    await auth.createFirstAdmin("admin", opts.adminPassword);
    log("created user admin with the role Admin on /");
  }
  const stores = new Map<string, StoreEntry>();
  for (const [name, dir] of Object.entries(opts.datastores)) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(name)) throw new GordeError("usage", `datastore name "${name}" may use only letters, digits, '.', '_' and '-'.`);
    stores.set(name, { name, store: await openOrInit(dir), pool: undefined });
  }
  if (stores.size === 0) throw new GordeError("usage", "the server needs at least one --datastore <name>=<dir>.");
  const maintenanceFile = path.join(opts.stateDir, "maintenance.json");
  const maintenance = await loadMaintenance(maintenanceFile);
  const tasks = await TaskManager.open(path.join(opts.stateDir, "tasks"));
  const remotes = await RemoteStore.open(opts.stateDir);
  const sessions = new SessionTable(opts.sessionIdleMs ?? 5 * 60_000);
  const metrics = new ServerMetrics(() => [...stores.values()].map((e) => ({ name: e.name, store: e.store })), tasks);
  const usage = UsageHistory.open(path.join(opts.stateDir, "usage.db"));
  return serverContext({ log, auth, stores, maintenance, maintenanceFile, tasks, remotes, sessions, metrics, usage });
}

/** Streams a file (a chunk) as the answer; 404 when it vanished. */
function sendFile(stream: http2.ServerHttp2Stream, file: string): Promise<void> {
  return new Promise((resolve) => {
    stream.respondWithFile(
      file,
      { "content-type": "application/octet-stream" },
      {
        onError: (err) => {
          sendError(stream, (err as NodeJS.ErrnoException).code === "ENOENT" ? new HttpError(404, `chunk ${path.basename(file)} is missing from the datastore.`) : err);
          resolve();
        },
      },
    );
    stream.once("close", () => resolve());
  });
}

async function openOrInit(dir: string): Promise<Datastore> {
  const names = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    throw err;
  });
  if (names.length === 0) return Datastore.init(dir);
  return Datastore.open(dir);
}

async function loadMaintenance(file: string): Promise<Record<string, MaintenanceMode>> {
  if (!fs.existsSync(file)) return {};
  const schema = z.record(z.string(), z.enum(["none", "read-only", "offline"]));
  const r = schema.safeParse(JSON.parse(await fsp.readFile(file, "utf8")));
  if (!r.success) throw new GordeError("invalid", `${file} is not a valid maintenance file.`);
  return r.data;
}
