// An HTTPS API over HTTP/2 from a route table: TLS with the host's pinned certificate,
// credentials checked once per connection, every path parameter, query and body validated
// by the route's schemas, and every error answered as one status and one sentence. The
// backup server and the node agent are both served by it.
import http2 from "node:http2";
import type net from "node:net";
import { z } from "zod";
import { type KeepAlive, keepAlive } from "../api/keep-alive.ts";
import type { Route } from "../api/route.ts";
import type { RouteAnswer, RouteBody, RouteParams, RouteQuery } from "../api/route-types.ts";
import { GordeError } from "../errors.ts";
import { type AuthStore, parseAuthorization } from "./auth.ts";
import { CSRF_HEADER, WebSessions, sessionIdOf } from "./web-sessions.ts";
import { HttpError, compileRoutes, matchRoute, readBody, sendBinary, sendError, sendJson, validate } from "./http.ts";

/** What a handler of route R receives: the caller, and the request as R's schemas validated it. */
export interface ApiContext<R extends Route> {
  authId: string;
  params: RouteParams<R>;
  query: RouteQuery<R>;
  body: RouteBody<R>;
  stream: http2.ServerHttp2Stream;
  headers: http2.IncomingHttpHeaders;
  connection: object;
}

export type ApiHandler<R extends Route> = (ctx: ApiContext<R>) => RouteAnswer<R> | Promise<RouteAnswer<R>>;
/** The handlers of the routes N of table T, each typed by its own route. */
export type ApiHandlers<T extends Readonly<Record<string, Route>>, N extends keyof T = keyof T> = { [K in N]: ApiHandler<T[K]> };

type AnyAnswer = { json: unknown; setCookie?: string } | { binary: Buffer } | { file: string } | { text: string } | { handled: true };
type AnyHandler = (ctx: { authId: string; params: unknown; query: unknown; body: unknown; stream: http2.ServerHttp2Stream; headers: http2.IncomingHttpHeaders; connection: object }) => AnyAnswer | Promise<AnyAnswer>;

const JSON_LIMIT = 1024 * 1024;

export interface ApiHostOptions<T extends Readonly<Record<string, Route>>> {
  routes: T;
  handlers: ApiHandlers<T>;
  auth: AuthStore;
  /** size limit (and buffer allocator) of a binary request body */
  binaryLimit?: (name: keyof T & string, headers: http2.IncomingHttpHeaders) => { limit: number; alloc?: (n: number) => Buffer };
  /** answers a `file` result */
  sendFile?: (stream: http2.ServerHttp2Stream, file: string) => Promise<void>;
  /** the web interface's sessions: a request with their cookie and no Authorization header is theirs */
  sessions?: WebSessions;
  /** called after each request with its route, status and duration */
  done?: (name: string, status: number, ms: number) => void;
  log: (line: string) => void;
}

/** The request handler of an API: route, authenticate, validate, call, answer. */
export function apiDispatcher<T extends Readonly<Record<string, Route>>>(
  opts: ApiHostOptions<T>,
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, connection: object) => Promise<void> {
  const { auth, handlers } = opts;
  const routes = compileRoutes(opts.routes);
  const verified = new WeakMap<object, { header: string; authId: string; revision: number; until: number }>();
  return async (stream, headers, connection) => {
    const started = Date.now();
    const method = String(headers[":method"] ?? "GET");
    let url: URL;
    let status = 200;
    let routeName = "unknown";
    try {
      url = new URL(String(headers[":path"] ?? "/"), "https://gorde");
    } catch {
      sendError(stream, new HttpError(400, "the request path is malformed."));
      return;
    }
    try {
      const { compiled, params: rawParams } = matchRoute(routes, method, url.pathname);
      const route = compiled.route;
      routeName = compiled.name;
      let authId = "";
      if (route.access !== "public") {
        // A connection sends the same credentials with every request (thousands of chunks):
        // checked once per connection while nothing in the user, token or ACL state changed.
        const header = headers.authorization;
        const known = verified.get(connection);
        const sid = header === undefined && opts.sessions ? sessionIdOf(headers.cookie) : undefined;
        if (sid !== undefined) {
          const s = opts.sessions!.get(sid);
          if (!s || !auth.isActive(s.authId)) throw new HttpError(401, "the session has expired or was ended: log in again.", { challenge: false });
          // A cookie is sent for any page that makes the browser ask; the token only by the interface itself.
          if (method !== "GET" && !WebSessions.csrfMatches(s, headers[CSRF_HEADER])) throw new HttpError(403, "the request does not carry the session's CSRF token.");
          authId = s.authId;
        } else if (known && known.header === header && known.revision === auth.revision && known.until > Date.now() && auth.isActive(known.authId)) {
          authId = known.authId;
        } else {
          const cred = parseAuthorization(header);
          // the peer of the TCP connection: a header such as X-Forwarded-For is anyone's to write
          const address = stream.session?.socket?.remoteAddress;
          const who = cred && (await auth.authenticate(cred.authId, cred.secret, { address }));
          // No Basic challenge to a request that sent no credentials: a browser would prompt for them over the web interface.
          if (!who) throw new HttpError(401, "authentication failed: give a valid user and password or API token.", { challenge: header !== undefined });
          authId = who;
          verified.set(connection, { header: header!, authId, revision: auth.revision, until: Date.now() + 30_000 });
        }
      }
      const params = route.params ? validate(route.params, rawParams, "path parameter") : {};
      const rawQuery: Record<string, string> = {};
      for (const [k, v] of url.searchParams) {
        if (k in rawQuery) throw new HttpError(400, `query parameter ${k} is given twice.`);
        rawQuery[k] = v;
      }
      const query = route.query ? validate(route.query, rawQuery, "query parameter") : Object.keys(rawQuery).length ? validate(z.strictObject({}), rawQuery, "query parameter") : {};
      let body: unknown;
      if (route.body === "binary") {
        const b = opts.binaryLimit?.(compiled.name as keyof T & string, headers);
        if (!b) throw new HttpError(415, `${compiled.name} takes no binary body.`);
        body = await readBody(stream, headers, b.limit, b.alloc);
      } else if (route.body) {
        const raw = await readBody(stream, headers, JSON_LIMIT);
        let parsed: unknown;
        try {
          parsed = JSON.parse(raw.toString("utf8") || "null");
        } catch {
          throw new HttpError(400, "the request body is not valid JSON.");
        }
        body = validate(route.body, parsed, "request body");
      }
      // The one cast between the table and its handlers: params, query and body were just
      // validated by this route's schemas, which is what ApiHandler<T[name]> declares.
      const handler = (handlers as Record<string, unknown>)[compiled.name] as AnyHandler;
      const result = await handler({ authId, params, query, body, stream, headers, connection });
      if ("json" in result) sendJson(stream, 200, result.json, result.setCookie ? { "set-cookie": result.setCookie } : {});
      else if ("binary" in result) sendBinary(stream, result.binary);
      else if ("text" in result) {
        const b = Buffer.from(result.text);
        stream.respond({ ":status": 200, "content-type": "text/plain; version=0.0.4", "content-length": b.length });
        stream.end(b);
      } else if ("file" in result) {
        if (!opts.sendFile) throw new GordeError("io", `${compiled.name} answered with a file this API cannot send.`);
        await opts.sendFile(stream, result.file);
      }
    } catch (err) {
      status = sendError(stream, err);
      if (status >= 500) opts.log(`${method} ${url.pathname}: ${(err as Error).message}`);
    } finally {
      opts.done?.(routeName, status, Date.now() - started);
    }
  };
}

export interface HttpsListener {
  readonly server: http2.Http2SecureServer;
  readonly connections: ReadonlySet<http2.ServerHttp2Session>;
  readonly port: number;
  /** stops accepting; resolves when every connection is gone (call `destroyConnections` to hurry them) */
  closed(): Promise<void>;
  destroyConnections(): void;
}

/**
 * Clients are pinged too: one whose link was cut mid-backup (no FIN, no RST) would hold its
 * session, and its group's lock, until the idle timeout (minutes). Generous, as the client
 * itself pings every 15 s and gives up after 10: a busy client is not cut off.
 */
export const CLIENT_KEEP_ALIVE: KeepAlive = { everyMs: 15_000, timeoutMs: 30_000 };

/** Listens with TLS on host:port and hands every stream to `dispatch`. */
export async function listenHttps(opts: {
  host: string;
  port: number;
  cert: { key: string; cert: string };
  dispatch: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, connection: object) => Promise<void>;
  onSessionClosed?: (session: http2.ServerHttp2Session) => void;
  /** liveness of each connection (default CLIENT_KEEP_ALIVE) */
  keepAlive?: KeepAlive;
}): Promise<HttpsListener> {
  const server = http2.createSecureServer({
    key: opts.cert.key,
    cert: opts.cert.cert,
    allowHTTP1: false,
    // Large windows: chunks of up to 4 MiB stream without waiting for window updates.
    settings: { initialWindowSize: 8 * 1024 * 1024, maxConcurrentStreams: 256, maxFrameSize: 1024 * 1024 },
    maxSessionMemory: 256,
  });
  const connections = new Set<http2.ServerHttp2Session>();
  // Sockets too: one that never became a session (a handshake left half-way) keeps close() waiting.
  const sockets = new Set<net.Socket>();
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("session", (session) => {
    connections.add(session);
    session.setLocalWindowSize(64 * 1024 * 1024);
    keepAlive(session, opts.keepAlive ?? CLIENT_KEEP_ALIVE, (ms) => `the client did not answer a ping within ${ms / 1000} s`);
    session.once("close", () => {
      connections.delete(session);
      opts.onSessionClosed?.(session);
    });
    session.on("error", () => undefined);
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    void opts.dispatch(stream, headers, stream.session!);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") reject(new GordeError("usage", `port ${opts.port} on ${opts.host} is in use by another program.`));
      else if (err.code === "EADDRNOTAVAIL") reject(new GordeError("usage", `address ${opts.host} is not an address of this machine.`));
      else reject(err);
    });
    server.listen(opts.port, opts.host, () => resolve());
  });
  let closing: Promise<void> | undefined;
  return {
    server,
    connections,
    port: (server.address() as { port: number }).port,
    closed: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve()))),
    destroyConnections: () => {
      for (const c of connections) c.destroy();
      for (const s of sockets) s.destroy();
    },
  };
}
