// The web interface's part of `gorde demo`: a browser's requests, without a browser —
// node2's cluster view and the backup server's own view are served (the page and its
// script, under a content security policy), a login answers a session cookie the page
// cannot read and a CSRF token, the session reads what the pages show, and a writing request
// without the token is refused. The route table gives every path (never a copy).
import http2 from "node:http2";
import { normalizeFingerprint } from "../api/connection.ts";
import { NODE_ROUTES } from "../api/node-routes.ts";
import { routePath } from "../api/route.ts";
import { ROUTES } from "../api/routes.ts";

interface WebAnswer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
}

/** One HTTPS request to 127.0.0.1:`port`, whose certificate must be the pinned one. */
async function webRequest(port: number, fingerprint: string, method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<WebAnswer> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
  try {
    await new Promise<void>((resolve, reject) => {
      session.once("error", reject);
      session.once("connect", () => {
        const got = (session.socket as unknown as { getPeerCertificate(): { fingerprint256?: string } }).getPeerCertificate().fingerprint256;
        if (!got || normalizeFingerprint(got) !== normalizeFingerprint(fingerprint)) reject(new Error(`127.0.0.1:${port} presents another certificate than the pinned one`));
        else resolve();
      });
    });
    const json = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = session.request({ ":method": method, ":path": path, ...headers, ...(json ? { "content-type": "application/json", "content-length": json.length } : {}) });
    req.end(json);
    return await new Promise<WebAnswer>((resolve, reject) => {
      let head: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => (head = h));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks).toString("utf8") }));
      req.on("error", reject);
    });
  } finally {
    session.close();
  }
}

export interface WebStoryHost {
  what: string;
  /** what the host says it is (`/api/version`) */
  product: "node" | "server";
  port: number;
  fingerprint: string;
  password: string;
}

/**
 * Checks one host's web interface as a browser uses it: its page and script, a login, what
 * `read` reads with the session (a route's path), and `forged` (a writing route's method and
 * path) refused without the CSRF token. Answers the body `read` got.
 */
export async function checkWebInterface(h: WebStoryHost, read: string, forged: [string, string], check: (ok: boolean, what: string) => void): Promise<string> {
  const page = await webRequest(h.port, h.fingerprint, "GET", "/");
  if (page.status === 503) check(false, `the web interface is built (${h.what} says: ${page.body.trim()})`);
  check(page.status === 200 && String(page.headers["content-type"]).startsWith("text/html"), `${h.what} serves the interface's page`);
  check(/default-src 'self'/.test(String(page.headers["content-security-policy"])), `${h.what}'s page loads nothing from elsewhere`);
  const script = /<script[^>]+src="(\/assets\/[^"]+\.js)"/.exec(page.body)?.[1];
  check(script !== undefined && (await webRequest(h.port, h.fingerprint, "GET", script)).status === 200, `${h.what} serves the page's script`);
  const version = JSON.parse((await webRequest(h.port, h.fingerprint, "GET", routePath(ROUTES.version))).body) as { product: string };
  const login = await webRequest(h.port, h.fingerprint, "POST", routePath(ROUTES.login), {}, { username: "admin", password: h.password });
  check(login.status === 200, `admin logs in to ${h.what}'s interface`);
  const cookie = String(login.headers["set-cookie"] ?? "");
  check(/GordeSession=/.test(cookie) && /HttpOnly/i.test(cookie) && /Secure/i.test(cookie) && /SameSite=Strict/i.test(cookie), "the session cookie is HttpOnly, Secure, SameSite=Strict");
  const session = /GordeSession=[^;]+/.exec(cookie)![0];
  const { csrfToken } = JSON.parse(login.body) as { csrfToken: string };
  const got = await webRequest(h.port, h.fingerprint, "GET", read, { cookie: session });
  check(got.status === 200, `the session reads ${read} on ${h.what}`);
  const refused = await webRequest(h.port, h.fingerprint, forged[0], forged[1], { cookie: session });
  check(refused.status === 403, `a request without the CSRF token is refused on ${h.what} (got ${refused.status})`);
  check(csrfToken.length > 0, "the login answers a CSRF token");
  check(version.product === h.product, `${h.what} says it is a ${h.product} (its page shows that view)`);
  await webRequest(h.port, h.fingerprint, "DELETE", routePath(ROUTES.logout), { cookie: session, csrfpreventiontoken: csrfToken });
  return got.body;
}

/** The paths the demo's web step uses, from the route tables. */
export const WEB_PATHS = {
  haStatus: routePath(NODE_ROUTES.haStatus),
  stopGuest: (id: number) => routePath(NODE_ROUTES.stopGuest, { id }),
  datastores: routePath(ROUTES.listDatastores),
  maintenance: (store: string) => routePath(ROUTES.setMaintenance, { store }),
};
