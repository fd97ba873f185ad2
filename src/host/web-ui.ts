// The web interface's files (ui/dist, built by `npm run build`), served beside the API on
// the same HTTPS port: /api/... goes to the API, everything else is the interface. Only
// the files the build made are served (listed once at start, so no request path can name
// another file), with a content security policy that lets the page load nothing from
// anywhere but this host.
import fs from "node:fs";
import type http2 from "node:http2";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const UI_DIST = fileURLToPath(new URL("../../ui/dist/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".woff2": "font/woff2",
};

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/** Every file of the build, by its URL path. */
function listFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string, prefix: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name), `${prefix}${e.name}/`);
      else if (e.isFile()) files.set(`${prefix}${e.name}`, path.join(d, e.name));
    }
  };
  if (fs.existsSync(path.join(dir, "index.html"))) walk(dir, "/");
  return files;
}

/**
 * Wraps an API dispatcher: /api/ requests (and `apiPaths`) go to it, GET and HEAD of
 * anything else get the interface (a path that is not a file of the build gets index.html:
 * the page routes itself).
 */
export function withWebUi(
  api: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, connection: object) => Promise<void>,
  opts: { apiPaths?: string[]; dist?: string } = {},
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, connection: object) => Promise<void> {
  const files = listFiles(opts.dist ?? UI_DIST);
  const apiPaths = new Set(["/api", ...(opts.apiPaths ?? [])]);
  return async (stream, headers, connection) => {
    const raw = String(headers[":path"] ?? "/");
    if (raw.startsWith("/api/") || apiPaths.has(raw.split("?")[0]!)) return api(stream, headers, connection);
    const method = String(headers[":method"] ?? "GET");
    const send = (status: number, type: string, body: Buffer | string, extra: Record<string, string> = {}): void => {
      if (stream.destroyed || stream.closed) return;
      const b = Buffer.from(body);
      stream.respond({ ":status": status, "content-type": type, "content-length": b.length, ...SECURITY_HEADERS, ...extra });
      stream.end(method === "HEAD" ? undefined : b);
    };
    if (method !== "GET" && method !== "HEAD") return send(405, "text/plain; charset=utf-8", "only GET and HEAD reach the web interface; the API is under /api/.\n", { allow: "GET, HEAD" });
    const index = files.get("/index.html");
    if (!index) return send(503, "text/plain; charset=utf-8", "the web interface is not built on this host: run npm run build (the setup command does).\n");
    const pathname = raw.split("?")[0]!;
    const file = files.get(pathname) ?? index;
    const hashed = pathname.startsWith("/assets/") && files.has(pathname);
    try {
      const body = await fs.promises.readFile(file);
      send(200, TYPES[path.extname(file)] ?? "application/octet-stream", body, { "cache-control": hashed ? "public, max-age=31536000, immutable" : "no-cache" });
    } catch {
      send(500, "text/plain; charset=utf-8", "the web interface's files cannot be read.\n");
    }
  };
}
