// The HTTP/2 plumbing of the server: matching a request to a route of the API table,
// validating it with the route's schemas, reading a bounded body, answering, and turning
// every error into one status code and a one-sentence message.
import type http2 from "node:http2";
import type { z } from "zod";
import { GordeError, ThrottledError, type ErrorCode, systemCode } from "../errors.ts";
import { issueSentence } from "../schema-issue.ts";
import type { Route } from "../api/route.ts";

export class HttpError extends Error {
  readonly status: number;
  /** a 401 asks for Basic credentials (WWW-Authenticate); not for the web interface, whose browser would prompt */
  readonly challenge: boolean;
  constructor(status: number, message: string, opts: { challenge?: boolean } = {}) {
    super(message);
    this.status = status;
    this.challenge = opts.challenge ?? true;
  }
}

const STATUS: Record<ErrorCode, number> = {
  usage: 400,
  invalid: 400,
  corrupt: 400,
  "not-found": 404,
  exists: 409,
  locked: 409,
  unsupported: 400,
  denied: 403,
  io: 500,
};

/** Status and message of any error thrown by a handler. */
export function errorStatus(err: unknown): { status: number; message: string; code?: ErrorCode; retryAfter?: number } {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof ThrottledError) return { status: 429, message: err.message, code: err.code, retryAfter: Math.max(1, Math.ceil(err.retryAfterMs / 1000)) };
  if (err instanceof GordeError) {
    if (systemCode(err) === "ENOSPC") return { status: 507, message: "the datastore is out of space; the backup was not stored.", code: "io" };
    return { status: STATUS[err.code], message: err.message, code: err.code };
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOSPC") return { status: 507, message: "the datastore is out of space; the backup was not stored.", code: "io" };
  return { status: 500, message: `internal error: ${e?.message ?? String(err)}` };
}

export interface CompiledRoute {
  name: string;
  route: Route;
  regex: RegExp;
  keys: string[];
}

export function compileRoutes(table: Readonly<Record<string, Route>>): CompiledRoute[] {
  return Object.entries(table).map(([name, route]) => {
    const keys: string[] = [];
    const pattern = route.path.replace(/[.]/g, "\\.").replace(/\{(\w+)\}/g, (_, k: string) => {
      keys.push(k);
      return "([^/]+)";
    });
    return { name, route, regex: new RegExp(`^${pattern}$`), keys };
  });
}

/** The route for a method and path; 404 or 405 otherwise. */
export function matchRoute(
  routes: CompiledRoute[],
  method: string,
  pathname: string,
): { compiled: CompiledRoute; params: Record<string, string> } {
  let pathMatched = false;
  for (const c of routes) {
    const m = c.regex.exec(pathname);
    if (!m) continue;
    pathMatched = true;
    if (c.route.method !== method) continue;
    const params: Record<string, string> = {};
    for (let i = 0; i < c.keys.length; i++) {
      let v: string;
      try {
        v = decodeURIComponent(m[i + 1]!);
      } catch {
        throw new HttpError(400, `the request path has a malformed escape in parameter ${c.keys[i]}.`);
      }
      params[c.keys[i]!] = v;
    }
    return { compiled: c, params };
  }
  if (pathMatched) throw new HttpError(405, `method ${method} is not allowed on ${pathname}.`);
  throw new HttpError(404, `no API endpoint ${pathname}.`);
}

/** Parses with a route schema; the first issue becomes a 400 naming the field. */
export function validate<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new HttpError(400, issueSentence(r.error, what));
}

/** Reads a request body of at most `limit` bytes; a larger one (declared or sent) is 413. */
export function readBody(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  limit: number,
  alloc: (n: number) => Buffer = (n) => Buffer.allocUnsafeSlow(n),
): Promise<Buffer> {
  const declared = headers["content-length"];
  if (declared !== undefined) {
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0) return Promise.reject(new HttpError(400, `content-length ${declared} is not a size.`));
    if (n > limit) return Promise.reject(new HttpError(413, `the request body of ${n} bytes exceeds the limit of ${limit} bytes.`));
  }
  return new Promise((resolve, reject) => {
    // With a declared length, one buffer filled in place: frames are small, and a chunk's
    // worth of buffers plus a concat costs the GC more than the copy.
    const whole = declared !== undefined && Number(declared) > 0 ? alloc(Number(declared)) : undefined;
    const parts: Buffer[] = [];
    let total = 0;
    const onData = (b: Buffer): void => {
      if (total + b.length > limit || (whole && total + b.length > whole.length)) {
        total += b.length;
        stream.off("data", onData);
        if (total > limit) reject(new HttpError(413, `the request body exceeds the limit of ${limit} bytes.`));
        else reject(new HttpError(400, `the request body is longer than the ${declared} bytes its content-length declares.`));
        return;
      }
      if (whole) b.copy(whole, total);
      else parts.push(b);
      total += b.length;
    };
    stream.on("data", onData);
    stream.once("end", () => {
      if (total > limit || (whole && total > whole.length)) return;
      if (declared !== undefined && total !== Number(declared)) {
        reject(new HttpError(400, `the request body has ${total} bytes, not the ${declared} its content-length declares.`));
        return;
      }
      resolve(whole ?? (parts.length === 1 ? parts[0]! : Buffer.concat(parts, total)));
    });
    // A body that breaks the protocol (more or fewer bytes than its content-length) resets the stream: the client's fault.
    stream.once("error", (err: Error) => reject(new HttpError(400, `the request body was cut off: ${err.message.replace(/\.$/, "")}.`)));
    // Settled already when the body was read; the error is only made otherwise.
    stream.once("close", () => {
      if (!stream.readableEnded) reject(new HttpError(400, "the request was cancelled."));
    });
  });
}

export function sendJson(stream: http2.ServerHttp2Stream, status: number, value: unknown, headers: http2.OutgoingHttpHeaders = {}): void {
  if (stream.destroyed || stream.closed) return;
  const body = Buffer.from(JSON.stringify(value));
  if (!stream.headersSent) stream.respond({ ...headers, ":status": status, "content-type": "application/json", "content-length": body.length, "cache-control": "no-store" });
  stream.end(body);
}

export function sendBinary(stream: http2.ServerHttp2Stream, body: Buffer): void {
  if (stream.destroyed || stream.closed) return;
  stream.respond({ ":status": 200, "content-type": "application/octet-stream", "content-length": body.length });
  stream.end(body);
}

export function sendError(stream: http2.ServerHttp2Stream, err: unknown): number {
  const { status, message, code, retryAfter } = errorStatus(err);
  if (stream.destroyed || stream.closed) return status;
  if (stream.headersSent) {
    stream.close();
    return status;
  }
  const headers: Record<string, string | number> = {};
  if (status === 401 && !(err instanceof HttpError && !err.challenge)) headers["www-authenticate"] = 'Basic realm="gorde"';
  if (retryAfter !== undefined) headers["retry-after"] = retryAfter;
  const body = Buffer.from(JSON.stringify({ error: message, code }));
  stream.respond({ ":status": status, "content-type": "application/json", "content-length": body.length, ...headers });
  stream.end(body);
  return status;
}
