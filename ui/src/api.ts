// The hosts' APIs as the interface calls them: the route tables themselves (method, path)
// and their types, never a copy — the node's for the cluster view, the backup server's for
// its datastore view; the session cookie goes by itself, the CSRF token in a header on
// every writing request. A 401 means the session ended: the interface asks for a login.
import { NODE_ROUTES, type NodeRouteName } from "../../src/api/node-routes.ts";
import { type Route, routePath } from "../../src/api/route.ts";
import type { RouteBodyInput, RouteResult } from "../../src/api/route-types.ts";
import { ROUTES, type TaskStreamEvent } from "../../src/api/routes.ts";

type NodeRoutes = typeof NODE_ROUTES;
type ServerRoutes = typeof ROUTES;
export type ServerRouteName = keyof ServerRoutes;

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const CSRF_KEY = "gorde.csrf";
const USER_KEY = "gorde.user";

export interface Login {
  username: string;
  csrfToken: string;
}

/** The login this tab holds (the cookie itself is out of the page's reach: HttpOnly). */
export function currentLogin(): Login | undefined {
  const csrfToken = sessionStorage.getItem(CSRF_KEY);
  const username = sessionStorage.getItem(USER_KEY);
  return csrfToken && username ? { csrfToken, username } : undefined;
}

let onSessionEnded: () => void = () => undefined;
export function whenSessionEnds(fn: () => void): void {
  onSessionEnded = fn;
}

async function request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") headers.CSRFPreventionToken = sessionStorage.getItem(CSRF_KEY) ?? "";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin", signal });
  if (!res.ok) {
    const text = await res.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      // not JSON
    }
    if (res.status === 401 && !path.endsWith("/access/ticket")) {
      sessionStorage.removeItem(CSRF_KEY);
      onSessionEnded();
    }
    throw new ApiError(res.status, message);
  }
  return res;
}

export interface CallOptions<R extends Route> {
  params?: Record<string, string | number>;
  query?: Record<string, string | number | undefined>;
  json?: RouteBodyInput<R>;
}

function url(route: Route, o: CallOptions<Route>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) q.set(k, String(v));
  const qs = q.toString();
  return routePath(route, o.params ?? {}) + (qs ? `?${qs}` : "");
}

async function callRoute<R extends Route>(route: R, o: CallOptions<R>): Promise<RouteResult<R>> {
  const res = await request(route.method, url(route, o), o.json);
  return (await res.json()) as RouteResult<R>;
}

/** Calls a JSON route of the node. Routes the node shares with the server (tasks, plan, login) answer on the server too. */
export async function call<N extends NodeRouteName>(name: N, o: CallOptions<NodeRoutes[N]> = {}): Promise<RouteResult<NodeRoutes[N]>> {
  return callRoute(NODE_ROUTES[name], o);
}

/** Calls a JSON route of the backup server (its own interface). */
export async function callServer<N extends ServerRouteName>(name: N, o: CallOptions<ServerRoutes[N]> = {}): Promise<RouteResult<ServerRoutes[N]>> {
  return callRoute(ROUTES[name], o);
}

/** Calls a text route of the node (a console log). */
export async function callText<N extends NodeRouteName>(name: N, o: CallOptions<NodeRoutes[N]> = {}): Promise<string> {
  return (await request(NODE_ROUTES[name].method, url(NODE_ROUTES[name], o), o.json)).text();
}

export async function login(username: string, password: string): Promise<Login> {
  const r = await call("login", { json: { username, password } });
  sessionStorage.setItem(CSRF_KEY, r.csrfToken);
  sessionStorage.setItem(USER_KEY, r.username);
  return { username: r.username, csrfToken: r.csrfToken };
}

export async function logout(): Promise<void> {
  await call("logout").catch(() => undefined);
  sessionStorage.removeItem(CSRF_KEY);
  sessionStorage.removeItem(USER_KEY);
}

/** Fetches a binary route and hands it to the browser as a download named `filename`. */
async function downloadRoute(route: Route, o: CallOptions<Route>, filename: string): Promise<void> {
  const blob = await (await request(route.method, url(route, o))).blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

/** A binary route of the node, downloaded. */
export function download<N extends NodeRouteName>(name: N, o: CallOptions<NodeRoutes[N]>, filename: string): Promise<void> {
  return downloadRoute(NODE_ROUTES[name], o, filename);
}

/** A binary route of the server, downloaded. */
export function downloadServer<N extends ServerRouteName>(name: N, o: CallOptions<ServerRoutes[N]>, filename: string): Promise<void> {
  return downloadRoute(ROUTES[name], o, filename);
}

/** A task's events as they happen (the host's JSON-lines stream): its log from the start, its progress, its end. */
export async function* taskEvents(task: string, signal: AbortSignal): AsyncGenerator<TaskStreamEvent> {
  const res = await request("GET", routePath(ROUTES.taskEvents, { id: task }), undefined, signal);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    pending += value;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim()) yield JSON.parse(line) as TaskStreamEvent;
    }
  }
}
