// A connection to a node agent's API (`gorde guest …`): the same pinned TLS, credentials
// and retries as a backup server's, with the node's route table.
import { ServerConnection, parseServerUrl } from "../api/connection.ts";
import { type DrillRecord, NODE_ROUTES, type NodeRouteName, type StartDrill } from "../api/node-routes.ts";
import { routePath } from "../api/routes.ts";
import { GordeError } from "../errors.ts";
import { type TaskProgressEvent, pinnedFingerprint } from "./remote.ts";

export const DEFAULT_NODE_URL_PORT = 8006;

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

  /** A JSON call; requests that change something are sent once (a backup must not run twice). */
  call<T>(name: NodeRouteName, opts: { params?: Record<string, string | number>; json?: unknown } = {}): Promise<T> {
    const r = NODE_ROUTES[name];
    const params = Object.fromEntries(Object.entries(opts.params ?? {}).map(([k, v]) => [k, String(v)]));
    return this.conn.json<T>(r.method, routePath(r, params), { json: opts.json, once: r.method !== "GET" });
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
  async followTask(task: string, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<TaskProgressEvent["task"]> {
    let end: TaskProgressEvent["task"] | undefined;
    const abort = (): void => void this.conn.request("DELETE", routePath(NODE_ROUTES.abortTask, { id: task }), { once: true }).catch(() => undefined);
    signal?.addEventListener("abort", abort, { once: true });
    try {
      await this.conn.lines(routePath(NODE_ROUTES.taskEvents, { id: task }), (v) => {
        const e = v as TaskProgressEvent;
        if (e.type === "end") end = e.task;
        onEvent?.(e);
      });
    } finally {
      signal?.removeEventListener("abort", abort);
    }
    if (!end) throw new GordeError("io", `task ${task} did not report its end; see its log on the node.`);
    return end;
  }

  /** Runs a drill on the node and waits for it: its record, whatever its result. */
  async runDrill(req: StartDrill, onEvent?: (e: TaskProgressEvent) => void, signal?: AbortSignal): Promise<DrillRecord> {
    const { task, drill } = await this.startDrill(req);
    await this.followTask(task, onEvent, signal);
    return this.drill(drill);
  }

  listDrills(opts: { guest?: number; limit?: number } = {}): Promise<DrillRecord[]> {
    return this.conn.json("GET", routePath(NODE_ROUTES.listDrills), { query: { guest: opts.guest, limit: opts.limit } });
  }

  drill(id: number): Promise<DrillRecord> {
    return this.call("getDrill", { params: { id } });
  }

  close(): void {
    this.conn.close();
  }
}
