// Users, API tokens and the ACL over the API: the same routes on the backup server and on
// every node (each keeps its own users), so `gorde user|token|acl` manage either.
import type { ROUTES } from "../api/routes.ts";
import type { ApiHandlers } from "./api-host.ts";
import type { AuthStore, Privilege } from "./auth.ts";
import { HttpError } from "./http.ts";
import { type WebSessions, sessionCookie, sessionIdOf } from "./web-sessions.ts";

type AccessRoute = "listUsers" | "addUser" | "updateUser" | "removeUser" | "listTokens" | "addToken" | "removeToken" | "listAcl" | "setAcl" | "login" | "logout" | "permissions";

export function denied(authId: string, what: string): HttpError {
  return new HttpError(403, `permission denied: ${authId} may not ${what}.`);
}

export function accessHandlers(auth: AuthStore, sessions: WebSessions, log: (line: string) => void): ApiHandlers<typeof ROUTES, AccessRoute> {
  const needSys = (authId: string, priv: Privilege, what: string): void => {
    if (!auth.can(authId, "/", priv)) throw denied(authId, what);
  };
  const selfOrAdmin = (authId: string, user: string, what: string): void => {
    if (authId !== user && !auth.can(authId, "/", "Permissions.Modify")) throw denied(authId, what);
  };
  return {
    login: async ({ body, stream }) => {
      // The login limiter counts per peer address, as for every other password.
      const who = await auth.authenticate(body.username, body.password, { address: stream.session?.socket?.remoteAddress });
      if (!who) throw new HttpError(401, "login failed: the user name or password is wrong, or the user is disabled.", { challenge: false });
      const s = sessions.create(who);
      log(`${who} logged in to the web interface`);
      return { json: { username: who, csrfToken: s.csrf, expires: Math.floor(s.expires / 1000) }, setCookie: sessionCookie(s.id, (s.expires - Date.now()) / 1000) };
    },
    logout: ({ headers }) => {
      sessions.remove(sessionIdOf(headers.cookie));
      return { json: { ok: true }, setCookie: sessionCookie("", 0) };
    },
    permissions: ({ authId, query }) => {
      const paths = new Set(["/", ...auth.listAcl().map((e) => e.path)]);
      if (query.path) paths.add(query.path);
      return { json: { authId, paths: Object.fromEntries([...paths].sort().map((p) => [p, [...auth.privileges(authId, p)].sort()])) } };
    },
    listUsers: ({ authId }) => {
      if (!auth.can(authId, "/", "Permissions.Modify") && !auth.can(authId, "/", "Sys.Audit")) throw denied(authId, "list users");
      return { json: auth.listUsers() };
    },
    addUser: async ({ authId, body }) => {
      needSys(authId, "Permissions.Modify", "create users");
      const b = body;
      await auth.addUser(b.name, b.password, { comment: b.comment, expire: b.expire });
      log(`${authId} created user ${b.name}`);
      return { json: { ok: true } };
    },
    updateUser: async ({ authId, params, body }) => {
      const b = body;
      const admin = auth.can(authId, "/", "Permissions.Modify");
      const onlyPassword = b.comment === undefined && b.expire === undefined && b.enable === undefined;
      if (!admin && !(authId === params.user && onlyPassword)) throw denied(authId, `change user ${params.user}`);
      if (!auth.listUsers().some((u) => u.name === params.user)) throw new HttpError(404, `no user ${params.user}.`);
      if (b.password !== undefined) await auth.setPassword(params.user, b.password);
      if (!onlyPassword) await auth.updateUser(params.user, { comment: b.comment, expire: b.expire, enable: b.enable });
      return { json: { ok: true } };
    },
    removeUser: async ({ authId, params }) => {
      needSys(authId, "Permissions.Modify", "remove users");
      if (params.user === authId) throw new HttpError(400, "a user cannot remove itself.");
      await auth.removeUser(params.user);
      log(`${authId} removed user ${params.user}`);
      return { json: { ok: true } };
    },
    listTokens: ({ authId, params }) => {
      selfOrAdmin(authId, params.user, `list the tokens of ${params.user}`);
      return { json: auth.listTokens(params.user) };
    },
    addToken: async ({ authId, params, body }) => {
      selfOrAdmin(authId, params.user, `create tokens for ${params.user}`);
      const b = body;
      const r = await auth.addToken(params.user, params.token, b);
      log(`${authId} created token ${r.tokenId}`);
      return { json: r };
    },
    removeToken: async ({ authId, params }) => {
      selfOrAdmin(authId, params.user, `revoke tokens of ${params.user}`);
      await auth.removeToken(`${params.user}!${params.token}`);
      log(`${authId} revoked token ${params.user}!${params.token}`);
      return { json: { ok: true } };
    },
    listAcl: ({ authId }) => {
      if (!auth.can(authId, "/", "Permissions.Modify") && !auth.can(authId, "/", "Sys.Audit")) throw denied(authId, "read the ACL");
      return { json: auth.listAcl() };
    },
    setAcl: async ({ authId, body }) => {
      needSys(authId, "Permissions.Modify", "change the ACL");
      const b = body;
      await auth.setAcl(b);
      log(`${authId} ${b.remove ? "removed" : "granted"} ${b.role} on ${b.path} ${b.remove ? "from" : "to"} ${b.authId}`);
      return { json: { ok: true } };
    },
  };
}
