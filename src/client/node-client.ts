// A connection to a node agent's API (`gorde guest …`): the same pinned TLS, credentials
// and retries as a backup server's, with the node's route table.
import { ServerConnection, parseServerUrl } from "../api/connection.ts";
import { type DrillRecord, type GuestBackupResult, type GuestStatus, NODE_ROUTES, type NodeRouteName, type StartDrill } from "../api/node-routes.ts";
import { routePath } from "../api/route.ts";
import type { CallArgs, RouteBodyInput, RouteResult } from "../api/route-types.ts";
import { GordeError, isErrorCode } from "../errors.ts";
import { type TaskProgressEvent, followTask, pinnedFingerprint } from "./remote.ts";

export const DEFAULT_NODE_URL_PORT = 8006;

type NodeRoutes = typeof NODE_ROUTES;

export class NodeClient {
  readonly conn: ServerConnection;
  readonly url: string;

  private constructor(conn: ServerConnection, url: string) {
    this.conn = conn;
    this.url = url;
  }

  /** `url`: https://<user>[!<token>]@<host>[:8006] */
  static async connect(url: string, opts: { secret?: string; fingerprint?: string; signal?: AbortSignal }): Promise<NodeClient> {
    const addr = parseServerUrl(url, DEFAULT_NODE_URL_PORT);
    if (addr.store !== "") throw new GordeError("usage", `"${url}" has a path; a node's URL is https://<user>@<host>[:<port>].`);
    if (!addr.authId) throw new GordeError("usage", `${url} names no user: use https://<user>@<host>[:<port>] (or <user>!<token>@).`);
    if (!opts.secret) throw new GordeError("usage", "set GORDE_PASSWORD to the password or token secret of the node's user.");
    const fingerprint = pinnedFingerprint(addr, opts.fingerprint, "node");
    const conn = await ServerConnection.connect({ host: addr.host, port: addr.port, authId: addr.authId, secret: opts.secret, fingerprint, signal: opts.signal });
    return new NodeClient(conn, url);
  }

  /** A JSON call of the node's API (see ServerConnection.call). */
  call<N extends NodeRouteName>(name: N, ...args: CallArgs<NodeRoutes[N]>): Promise<RouteResult<NodeRoutes[N]>> {
    return this.conn.call(NODE_ROUTES, name, ...args);
  }

  async text(name: NodeRouteName, params: Record<string, string | number>): Promise<string> {
    const r = NODE_ROUTES[name];
    const p = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)]));
    return (await this.conn.binary(r.method, routePath(r, p))).toString("utf8");
  }

  /** Starts a restore drill as a task on the node: nothing starts when the request is refused. */
  startDrill(req: StartDrill): Promise<{ task: string; drill: number }> {
    return this.call("startDrill", { json: req });
  }

  /** Follows a task of the node to its end (its log lines to `onEvent`); aborting `signal` aborts the task. */
  followTask(task: string, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<NonNullable<TaskProgressEvent["task"]>> {
    return followTask(this.conn, task, "node", onEvent, signal);
  }

  /** Backs a guest up as a task on the node and follows it to its end: the backup's result. */
  async backup(id: number, body: RouteBodyInput<NodeRoutes["backupGuest"]>, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<GuestBackupResult> {
    const { task } = await this.call("backupGuest", { params: { id }, json: body });
    // The node's task ran guests.backup: its result has that shape.
    return (await this.taskResult(task, onEvent, signal)) as GuestBackupResult;
  }

  /** Restores a guest as a task on the node and follows it to its end: the guest's status. */
  async restore(req: RouteBodyInput<NodeRoutes["restoreGuest"]>, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<GuestStatus> {
    const { task } = await this.call("restoreGuest", { json: req });
    return (await this.taskResult(task, onEvent, signal)) as GuestStatus;
  }

  /** Follows a task to its end: its result, or its error with the task's own code. */
  private async taskResult(task: string, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<unknown> {
    const end = await this.followTask(task, onEvent, signal);
    if (end.state !== "ok") throw new GordeError(isErrorCode(end.code) ? end.code : "io", end.error ?? `task ${task} ${end.state}.`);
    return end.result;
  }

  /** Runs a drill on the node and waits for it: its record, whatever its result. */
  async runDrill(req: StartDrill, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<DrillRecord> {
    const { task, drill } = await this.startDrill(req);
    await this.followTask(task, onEvent, signal);
    return this.drill(drill);
  }

  listDrills(opts: { guest?: number; limit?: number } = {}): Promise<DrillRecord[]> {
    return this.call("listDrills", { query: opts });
  }

  drill(id: number): Promise<DrillRecord> {
    return this.call("getDrill", { params: { id } });
  }

  close(): void {
    this.conn.close();
  }
}
