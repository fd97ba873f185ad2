// The web interface's sessions, as PVE's tickets: a login with user and password answers a
// session cookie (HttpOnly, Secure, SameSite=Strict: no script reads it, no other site
// sends it) and a CSRF token that the interface sends in a header with every writing
// request; a forged form or a script on another page has the cookie sent for it at most,
// never the token. A session ends at logout or SESSION_TTL_MS after the login, and with the
// host process (kept in memory only: a restarted host asks for a new login).
import { randomBytes, timingSafeEqual } from "node:crypto";

export const SESSION_COOKIE = "GordeSession";
/** PVE's header name for the same token. */
export const CSRF_HEADER = "csrfpreventiontoken";
/** PVE's ticket lifetime. */
export const SESSION_TTL_MS = 2 * 3600_000;
/** Sessions kept at most; the oldest goes first (a login flood cannot grow memory). */
const MAX_SESSIONS = 10_000;

export interface WebSession {
  authId: string;
  csrf: string;
  expires: number;
}

export class WebSessions {
  private readonly sessions = new Map<string, WebSession>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: { ttlMs?: number; now?: () => number } = {}) {
    this.ttlMs = opts.ttlMs ?? SESSION_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  create(authId: string): { id: string } & WebSession {
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const id = randomBytes(24).toString("base64url");
    const s = { authId, csrf: randomBytes(24).toString("base64url"), expires: this.now() + this.ttlMs };
    this.sessions.set(id, s);
    return { id, ...s };
  }

  /** The session of a cookie value, while it lasts. */
  get(id: string | undefined): WebSession | undefined {
    if (!id) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expires <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return s;
  }

  remove(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  /** Ends every session of a user (removed, disabled, its password changed). */
  removeUser(user: string): void {
    for (const [id, s] of this.sessions) if (s.authId === user) this.sessions.delete(id);
  }

  /** Whether `token` is the session's CSRF token (compared in constant time). */
  static csrfMatches(s: WebSession, token: string | string[] | undefined): boolean {
    if (typeof token !== "string") return false;
    const a = Buffer.from(token);
    const b = Buffer.from(s.csrf);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}

/** The Set-Cookie value of a session (`maxAgeS` 0: the cookie is dropped). */
export function sessionCookie(id: string, maxAgeS: number): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${Math.max(0, Math.floor(maxAgeS))}`;
}

/** The session cookie's value in a Cookie header (HTTP/2 may split it into several). */
export function sessionIdOf(cookie: string | string[] | undefined): string | undefined {
  const parts = (Array.isArray(cookie) ? cookie : [cookie ?? ""]).flatMap((c) => c.split(";"));
  for (const p of parts) {
    const i = p.indexOf("=");
    if (i > 0 && p.slice(0, i).trim() === SESSION_COOKIE) return p.slice(i + 1).trim() || undefined;
  }
  return undefined;
}
