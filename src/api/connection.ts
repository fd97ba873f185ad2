// The client side of the API: one HTTP/2 connection to a gorde server over TLS, the
// server's certificate pinned by its SHA-256 fingerprint (it is self-signed), Basic
// credentials on every request, many requests in flight, an optional bandwidth limit,
// and retries of transient failures (requests are idempotent: chunks are named by digest).
import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { ConnectionLostError, GordeError, type ErrorCode, isErrorCode } from "../errors.ts";
import { type KeepAlive, keepAlive } from "./keep-alive.ts";
import { type Route, routePath } from "./route.ts";
import type { CallArgs, RouteResult } from "./route-types.ts";

export interface ServerAddress {
  host: string;
  port: number;
  /** user or user!token; absent: the caller must supply one */
  authId?: string;
  /** "" when the URL names only the server */
  store: string;
}

const DEFAULT_PORT = 8007;

/** `https://[<user>@]<host>[:<port>]/<store>` (a node's URL names no store; its port is 8006) */
export function parseServerUrl(url: string, defaultPort = DEFAULT_PORT): ServerAddress {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new GordeError("usage", `"${url}" is not a repository URL: expected https://[<user>@]<host>[:<port>]/<store>.`);
  }
  if (u.protocol !== "https:") throw new GordeError("usage", `"${url}" is not an https:// URL; gorde servers speak only HTTPS.`);
  if (u.password) throw new GordeError("usage", "put the password in GORDE_PASSWORD, not in the URL.");
  const store = decodeURIComponent(u.pathname.replace(/^\/+|\/+$/g, ""));
  if (store !== "" && !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(store)) {
    throw new GordeError("usage", `"${url}" names no valid datastore: expected https://<host>[:<port>]/<store>.`);
  }
  if (u.search || u.hash) throw new GordeError("usage", `"${url}" has a query or fragment; a repository URL has neither.`);
  const authId = u.username ? decodeURIComponent(u.username) : undefined;
  return { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port ? Number(u.port) : defaultPort, authId, store };
}

/**
 * The canonical form (lower case, colon-separated pairs) of a SHA-256 fingerprint typed
 * in upper or lower case, with or without colons.
 */
export function normalizeFingerprint(fp: string): string {
  const trimmed = fp.trim();
  // Colons either between every pair or nowhere, so a mistyped pair is not silently accepted.
  const ok = /^[0-9a-f]{64}$/i.test(trimmed) || /^[0-9a-f]{2}(?::[0-9a-f]{2}){31}$/i.test(trimmed);
  if (!ok) {
    throw new GordeError("usage", `The fingerprint "${fp}" is not a SHA-256 fingerprint (32 bytes of hex, optionally colon-separated).`);
  }
  return trimmed.replaceAll(":", "").toLowerCase().match(/../g)!.join(":");
}

export interface ConnectOptions {
  host: string;
  port: number;
  authId: string;
  secret: string;
  /** pinned certificate fingerprint */
  fingerprint: string;
  /** bytes per second for request and response bodies together; 0 or absent: no limit */
  rate?: number;
  /** attempts for a request that fails transiently (default 4) */
  attempts?: number;
  signal?: AbortSignal;
  /** how often an open connection is pinged, and how long an answer may take (default 15 s and 10 s) */
  keepAlive?: KeepAlive;
}

export interface Response {
  status: number;
  body: Buffer;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  json?: unknown;
  binary?: Buffer;
  signal?: AbortSignal;
  /** do not retry (the request is not idempotent) */
  once?: boolean;
}

/** A token bucket: `take(n)` waits until n bytes may pass. */
class RateLimiter {
  private readonly rate: number;
  private tokens: number;
  private last = Date.now();
  private queue: Promise<void> = Promise.resolve();

  constructor(rate: number) {
    this.rate = rate;
    this.tokens = rate / 4;
  }

  take(n: number): Promise<void> {
    const run = async (): Promise<void> => {
      const now = Date.now();
      this.tokens = Math.min(this.rate / 4, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
      this.tokens -= n;
      if (this.tokens < 0) await sleep((-this.tokens / this.rate) * 1000);
    };
    this.queue = this.queue.then(run);
    return this.queue;
  }
}

const TRANSIENT_STATUS = new Set([502, 503, 504]);

/** A connection (TCP and TLS) not made in this time fails. */
const CONNECT_TIMEOUT_MS = 10_000;
/** An open connection is pinged this often; one whose ping is not answered in time is closed (its requests fail and are retried on a new one). */
const KEEP_ALIVE: KeepAlive = { everyMs: 15_000, timeoutMs: 10_000 };

export class ServerConnection {
  readonly opts: ConnectOptions;
  private session: http2.ClientHttp2Session | undefined;
  private readonly auth: string;
  private readonly limiter: RateLimiter | undefined;
  /** the connection that a backup or reader session is bound to was lost */
  private lostHandlers: (() => void)[] = [];

  private constructor(opts: ConnectOptions) {
    this.opts = opts;
    this.auth = "Basic " + Buffer.from(`${opts.authId}:${opts.secret}`).toString("base64");
    this.limiter = opts.rate ? new RateLimiter(opts.rate) : undefined;
  }

  static async connect(opts: ConnectOptions): Promise<ServerConnection> {
    const c = new ServerConnection({ ...opts, fingerprint: normalizeFingerprint(opts.fingerprint) });
    await c.open();
    return c;
  }

  /** Called once when the current connection closes (sessions bound to it are gone). */
  onLost(fn: () => void): void {
    this.lostHandlers.push(fn);
  }

  private open(): Promise<http2.ClientHttp2Session> {
    const { host, port } = this.opts;
    const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    return new Promise((resolve, reject) => {
      const session = http2.connect(`https://${where}`, {
        // The certificate is self-signed: trust comes from the pinned fingerprint below.
        rejectUnauthorized: false,
        settings: { initialWindowSize: 8 * 1024 * 1024, enablePush: false, maxFrameSize: 1024 * 1024 },
        maxSessionMemory: 256,
      });
      // A server cut off by a firewall drops the SYN: without a deadline, the kernel's retries take two minutes.
      const deadline = setTimeout(() => fail(new GordeError("io", `cannot connect to ${where}: no answer within ${CONNECT_TIMEOUT_MS / 1000} s.`)), CONNECT_TIMEOUT_MS);
      const fail = (err: Error & { code?: string }): void => {
        clearTimeout(deadline);
        session.destroy();
        if (err instanceof GordeError) reject(err);
        else if (err.code === "ECONNREFUSED") reject(new GordeError("io", `no gorde server answers at ${where} (connection refused).`, { cause: err }));
        else if (err.code === "ENETUNREACH" || err.code === "EHOSTUNREACH") reject(new GordeError("io", `cannot connect to ${where}: no route to it (${err.code}).`, { cause: err }));
        else reject(new GordeError("io", `cannot connect to ${where}: ${err.message}.`, { cause: err }));
      };
      session.once("error", fail);
      session.once("connect", () => {
        const socket = session.socket as unknown as { getPeerCertificate(): { fingerprint256?: string } };
        const got = socket.getPeerCertificate().fingerprint256;
        const fp = got ? normalizeFingerprint(got) : "none";
        if (fp !== this.opts.fingerprint) {
          fail(
            new GordeError(
              "denied",
              `the server at ${where} presents certificate fingerprint ${fp}, not the pinned ${this.opts.fingerprint}; refusing to connect.`,
            ),
          );
          return;
        }
        clearTimeout(deadline);
        session.off("error", fail);
        session.on("error", () => undefined);
        keepAlive(session, this.opts.keepAlive ?? KEEP_ALIVE, (ms) => `the server did not answer a ping within ${ms / 1000} s`);
        session.setLocalWindowSize(64 * 1024 * 1024);
        session.once("close", () => {
          if (this.session === session) this.session = undefined;
          const handlers = this.lostHandlers;
          this.lostHandlers = [];
          for (const h of handlers) h();
        });
        this.session = session;
        resolve(session);
      });
    });
  }

  private async live(): Promise<http2.ClientHttp2Session> {
    if (this.session && !this.session.destroyed && !this.session.closed) return this.session;
    return this.open();
  }

  /** One request; transient failures are retried on the same connection, or a new one. */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const attempts = opts.once ? 1 : (this.opts.attempts ?? 4);
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await this.once(method, path, opts);
        if (TRANSIENT_STATUS.has(r.status) && attempt < attempts && !isMaintenance(r)) {
          await sleep(100 * 2 ** attempt);
          continue;
        }
        return r;
      } catch (err) {
        if (!(err instanceof TransientError) || attempt >= attempts) throw err instanceof TransientError ? err.cause : err;
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  /** A request whose answer must be 2xx: JSON decoded, or the server's error thrown. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const r = await this.request(method, path, opts);
    if (r.status >= 300) throw responseError(r, `${method} ${path}`);
    return JSON.parse(r.body.toString("utf8")) as T;
  }

  /**
   * A JSON call of route `name` of `table`, its options and answer typed by the route's
   * schemas. A POST is sent once (a backup must not run twice); GET, PUT and DELETE are
   * idempotent and retried after a transient failure.
   */
  call<T extends Readonly<Record<string, Route>>, N extends keyof T & string>(table: T, name: N, ...[opts]: CallArgs<T[N]>): Promise<RouteResult<T[N]>> {
    const r: Route | undefined = table[name];
    if (!r) throw new GordeError("usage", `${name} is not a route of this API.`);
    return this.json(r.method, routePath(r, opts?.params), { query: opts?.query, json: opts?.json, once: r.method === "POST" });
  }

  async binary(method: string, path: string, opts: RequestOptions = {}): Promise<Buffer> {
    const r = await this.request(method, path, opts);
    if (r.status >= 300) throw responseError(r, `${method} ${path}`);
    return r.body;
  }

  /** A streamed answer of JSON lines; `onLine` gets each until the server ends it. */
  async lines(path: string, onLine: (v: unknown) => void, signal?: AbortSignal): Promise<void> {
    let session: http2.ClientHttp2Session;
    try {
      session = await this.live();
    } catch (err) {
      throw new ConnectionLostError((err as Error).message, err);
    }
    const stream = session.request({ ":method": "GET", ":path": path, authorization: this.auth }, { endStream: true, signal });
    await new Promise<void>((resolve, reject) => {
      let status = 0;
      let buf = "";
      const errParts: Buffer[] = [];
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("data", (b: Buffer) => {
        if (status >= 300) return void errParts.push(b);
        buf += b.toString("utf8");
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line) onLine(JSON.parse(line));
        }
      });
      stream.on("end", () => (status >= 300 ? reject(responseError({ status, body: Buffer.concat(errParts) }, `GET ${path}`)) : resolve()));
      stream.on("error", (e: Error) => reject(new ConnectionLostError(`the connection to the server failed: ${e.message.replace(/\.$/, "")}.`, e)));
    });
  }

  private async once(method: string, path: string, opts: RequestOptions): Promise<Response> {
    let full = path;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined) q.set(k, String(v));
      const s = q.toString();
      if (s) full += `?${s}`;
    }
    let body: Buffer | undefined = opts.binary;
    const headers: http2.OutgoingHttpHeaders = { ":method": method, ":path": full, authorization: this.auth };
    if (opts.json !== undefined) {
      body = Buffer.from(JSON.stringify(opts.json));
      headers["content-type"] = "application/json";
    } else if (body) {
      headers["content-type"] = "application/octet-stream";
    }
    if (body) headers["content-length"] = body.length;
    if (this.limiter && body) await this.limiter.take(body.length);
    let session: http2.ClientHttp2Session;
    try {
      session = await this.live();
    } catch (err) {
      throw new TransientError(err as Error);
    }
    opts.signal?.throwIfAborted();
    return new Promise<Response>((resolve, reject) => {
      const stream = session.request(headers, { endStream: !body, signal: opts.signal });
      let status = 0;
      const parts: Buffer[] = [];
      // With a declared length, one buffer filled in place (fewer, larger allocations).
      let whole: Buffer | undefined;
      let filled = 0;
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        const n = Number(h["content-length"]);
        // (Data can arrive before this event; then the pieces are simply concatenated.)
        if (parts.length === 0 && Number.isSafeInteger(n) && n > 0 && n <= 64 * 1024 * 1024) whole = Buffer.allocUnsafeSlow(n);
      });
      stream.on("data", (b: Buffer) => {
        if (whole && filled + b.length <= whole.length) {
          b.copy(whole, filled);
          filled += b.length;
        } else {
          if (whole) parts.push(whole.subarray(0, filled));
          whole = undefined;
          parts.push(b);
        }
      });
      stream.on("end", () => {
        // A stream cut off by a lost connection ends too, with a cancel code and a truncated answer.
        if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
          reject(new TransientError(new GordeError("io", `the connection to ${this.opts.host}:${this.opts.port} was lost before the server answered.`)));
          return;
        }
        const out = whole && filled === whole.length ? whole : Buffer.concat(whole ? [whole.subarray(0, filled), ...parts] : parts);
        if (this.limiter) void this.limiter.take(out.length);
        resolve({ status, body: out });
      });
      stream.on("error", (e: Error & { code?: string }) => {
        if (e.name === "AbortError") return reject(e);
        // A reset stream (the server is busy, or the connection dropped) may succeed again.
        reject(new TransientError(new GordeError("io", `the connection to ${this.opts.host}:${this.opts.port} failed: ${e.message}.`)));
      });
      if (body) stream.end(body);
    });
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }
}

class TransientError extends Error {
  override readonly cause: Error;
  constructor(cause: Error) {
    super(cause.message);
    this.cause = cause;
  }
}

function isMaintenance(r: Response): boolean {
  return r.status === 503 && r.body.toString("utf8").includes("maintenance");
}

const BY_STATUS: Record<number, ErrorCode> = { 400: "usage", 401: "denied", 403: "denied", 404: "not-found", 409: "locked", 413: "usage", 429: "denied", 507: "io" };

/** The server's error as a GordeError with the server's code and sentence. */
export function responseError(r: Response, what: string): GordeError {
  let message = `${what} failed with HTTP status ${r.status}.`;
  let code: ErrorCode = BY_STATUS[r.status] ?? "io";
  try {
    const j = JSON.parse(r.body.toString("utf8")) as { error?: unknown; code?: unknown };
    if (typeof j.error === "string") message = j.error;
    if (isErrorCode(j.code)) code = j.code;
  } catch {
    // not JSON: keep the generic sentence
  }
  if (r.status === 401 || r.status === 403) code = "denied";
  return new GordeError(code, message);
}
