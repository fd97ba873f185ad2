// Commands that only make sense against a server: users, tokens, ACLs, remotes, group
// owners, datastore status, maintenance mode and sync.
import { ROUTES } from "../api/routes.ts";
import { Role } from "../api/access-routes.ts";
import { GordeError } from "../errors.ts";
import { RemoteRepository } from "../client/remote.ts";
import { REMOTE_NAME_RE, formatGroup, parseGroup, parseNamespace, parseTimeOption } from "../format/names.ts";
import { formatBytes } from "./progress-bar.ts";
import { type Command, type CommandContext, strs } from "./command.ts";

const common = { json: { type: "boolean" }, fingerprint: { type: "string" } } as const;

async function withServer<T>(ctx: CommandContext, url: string, serverOnly: boolean, fn: (r: RemoteRepository) => Promise<T>): Promise<T> {
  if (!/^https:\/\//.test(url)) throw new GordeError("usage", `"${url}" is not a server URL (https://<user>@<host>[:<port>]); this command needs a gorde server.`);
  const remote = await RemoteRepository.connect(
    url,
    { secret: process.env.GORDE_PASSWORD, fingerprint: (ctx.values.fingerprint as string | undefined) ?? process.env.GORDE_FINGERPRINT, signal: ctx.signal },
    serverOnly,
  );
  try {
    return await fn(remote);
  } finally {
    remote.close();
  }
}

function print(ctx: CommandContext, v: unknown, human: () => string): void {
  ctx.out(ctx.values.json ? JSON.stringify(v, null, 2) + "\n" : human());
}

function usage(text: string): never {
  throw new GordeError("usage", `usage: gorde ${text}`);
}

function newPassword(): string {
  const p = process.env.GORDE_NEW_PASSWORD;
  if (!p) throw new GordeError("usage", "set GORDE_NEW_PASSWORD to the new user's password.");
  return p;
}

function roleName(role: string): Role {
  const r = Role.safeParse(role);
  if (!r.success) throw new GordeError("usage", `"${role}" is not a role; roles are ${Role.options.join(", ")}.`);
  return r.data;
}

function expireOption(ctx: CommandContext): number | undefined {
  const v = ctx.values.expire as string | undefined;
  return v === undefined ? undefined : parseTimeOption(v);
}

const USER_USAGE = "user list|add|passwd|update|remove <server> [<name>] (password in GORDE_NEW_PASSWORD)";
const TOKEN_USAGE = "token list|add|remove <server> <user> [<token name>]";
const ACL_USAGE = "acl list|set|remove <server> [<path> <user or token> <role>]";
const REMOTE_USAGE = "remote list|add|remove <server> [<name>] [--url https://<user>[!<token>]@<host>[:<port>]/<store> --remote-fingerprint <fp>] (its secret in GORDE_REMOTE_PASSWORD)";
const SYNC_USAGE = "sync <repo> <remote> [--group <g>]... [--last N] [--ns <ns>]";

export const ACCESS_COMMANDS: Record<string, Command> = {
  user: {
    options: { ...common, comment: { type: "string" }, expire: { type: "string" }, enable: { type: "boolean" }, disable: { type: "boolean" } },
    async run(ctx) {
      const [sub, url, name] = ctx.positionals;
      if (!sub || !url) usage(USER_USAGE);
      await withServer(ctx, url, true, async (r) => {
        const c = r.conn;
        if (sub === "list") {
          const users = await c.call(ROUTES, "listUsers");
          return print(ctx, users, () => users.map((u) => `${u.name}${u.enable ? "" : " (disabled)"}${u.comment ? `  ${u.comment}` : ""}\n`).join(""));
        }
        if (!name) usage(USER_USAGE);
        if (sub === "add") {
          await c.call(ROUTES, "addUser", { json: { name, password: newPassword(), comment: ctx.values.comment as string | undefined, expire: expireOption(ctx) } });
          return print(ctx, { created: name }, () => `created user ${name}\n`);
        }
        if (sub === "passwd") {
          await c.call(ROUTES, "updateUser", { params: { user: name }, json: { password: newPassword() } });
          return print(ctx, { updated: name }, () => `changed the password of ${name}\n`);
        }
        if (sub === "update") {
          const enable = ctx.values.enable ? true : ctx.values.disable ? false : undefined;
          await c.call(ROUTES, "updateUser", { params: { user: name }, json: { comment: ctx.values.comment as string | undefined, expire: expireOption(ctx), enable } });
          return print(ctx, { updated: name }, () => `updated user ${name}\n`);
        }
        if (sub === "remove") {
          await c.call(ROUTES, "removeUser", { params: { user: name } });
          return print(ctx, { removed: name }, () => `removed user ${name} with its tokens and permissions\n`);
        }
        usage(USER_USAGE);
      });
    },
  },

  token: {
    options: { ...common, comment: { type: "string" }, expire: { type: "string" } },
    async run(ctx) {
      const [sub, url, user, token] = ctx.positionals;
      if (!sub || !url || !user) usage(TOKEN_USAGE);
      await withServer(ctx, url, true, async (r) => {
        const c = r.conn;
        if (sub === "list") {
          const list = await c.call(ROUTES, "listTokens", { params: { user } });
          return print(ctx, list, () => list.map((t) => `${t.tokenId}${t.enable ? "" : " (disabled)"}${t.expire ? `  expires ${new Date(t.expire * 1000).toISOString()}` : ""}\n`).join(""));
        }
        if (!token) usage(TOKEN_USAGE);
        if (sub === "add") {
          const res = await c.call(ROUTES, "addToken", { params: { user, token }, json: { comment: ctx.values.comment as string | undefined, expire: expireOption(ctx) } });
          return print(ctx, res, () => `token ${res.tokenId}\nsecret ${res.secret}\n(the secret is shown only now; it has no permissions until an ACL grants some)\n`);
        }
        if (sub === "remove") {
          await c.call(ROUTES, "removeToken", { params: { user, token } });
          return print(ctx, { removed: `${user}!${token}` }, () => `revoked token ${user}!${token}\n`);
        }
        usage(TOKEN_USAGE);
      });
    },
  },

  acl: {
    options: { ...common, "no-propagate": { type: "boolean" } },
    async run(ctx) {
      const [sub, url, path, authId, role] = ctx.positionals;
      if (!sub || !url) usage(ACL_USAGE);
      await withServer(ctx, url, true, async (r) => {
        const c = r.conn;
        if (sub === "list") {
          const list = await c.call(ROUTES, "listAcl");
          return print(ctx, list, () => list.map((a) => `${a.path}  ${a.authId}  ${a.role}${a.propagate ? "" : "  (no propagate)"}\n`).join(""));
        }
        if (!path || !authId || !role || (sub !== "set" && sub !== "remove")) usage(ACL_USAGE);
        await c.call(ROUTES, "setAcl", { json: { path, authId, role: roleName(role), propagate: !ctx.values["no-propagate"], remove: sub === "remove" } });
        print(ctx, { path, authId, role, removed: sub === "remove" }, () => `${sub === "remove" ? "removed" : "granted"} ${role} on ${path} ${sub === "remove" ? "from" : "to"} ${authId}\n`);
      });
    },
  },

  owner: {
    options: { ...common, ns: { type: "string" } },
    async run(ctx) {
      const [url, groupArg, owner] = ctx.positionals;
      if (!url || !groupArg || ctx.positionals.length > 3) usage("owner <repo> <group> [<new owner>]");
      const group = formatGroup(parseGroup(groupArg));
      const ns = parseNamespace(ctx.values.ns as string | undefined);
      await withServer(ctx, url, false, async (r) => {
        if (owner !== undefined) {
          await r.setOwner(ns, group, owner);
          return print(ctx, { group, owner }, () => `${group} now belongs to ${owner}\n`);
        }
        const g = (await r.groups(ns)).find((x) => x.group === group);
        if (!g) throw new GordeError("not-found", `group ${group} does not exist or is not visible to you.`);
        print(ctx, { group, owner: g.owner }, () => `${g.owner ?? "(no owner)"}\n`);
      });
    },
  },

  status: {
    options: { ...common },
    async run(ctx) {
      const [url] = ctx.positionals;
      if (!url || ctx.positionals.length > 1) usage("status <repo>");
      await withServer(ctx, url, false, async (r) => {
        const s = await r.status();
        print(ctx, s, () =>
          `${r.store}: ${formatBytes(s.used)} used of ${formatBytes(s.total)}, ${formatBytes(s.available)} available\n` +
            `  ${s.snapshots} snapshots, ${s.chunks} chunks (${formatBytes(s.chunkBytes)}) for ${formatBytes(s.logicalBytes)} of data: dedup factor ${s.dedupFactor.toFixed(2)}\n` +
            (s.maintenance !== "none" ? `  maintenance: ${s.maintenance}\n` : "") +
            (s.warning ? `  warning: ${s.warning}\n` : ""),
        );
      });
    },
  },

  remote: {
    options: { ...common, url: { type: "string" }, "remote-fingerprint": { type: "string" } },
    async run(ctx) {
      const [sub, url, name] = ctx.positionals;
      if (!sub || !url || ctx.positionals.length > 3) usage(REMOTE_USAGE);
      if (sub !== "list" && sub !== "add" && sub !== "remove") usage(REMOTE_USAGE);
      if (sub === "list" && name !== undefined) usage(REMOTE_USAGE);
      if (sub !== "list") {
        if (!name) usage(REMOTE_USAGE);
        if (!REMOTE_NAME_RE.test(name)) throw new GordeError("usage", `"${name}" is not a valid remote name: a letter, then letters, digits, '_' or '-', at most 32.`);
      }
      let body: { name: string; url: string; fingerprint: string; secret: string } | undefined;
      if (sub === "add") {
        const remoteUrl = ctx.values.url as string | undefined;
        if (!remoteUrl) throw new GordeError("usage", "give the remote's datastore with --url https://<user>[!<token>]@<host>[:<port>]/<store>.");
        const fingerprint = ctx.values["remote-fingerprint"] as string | undefined;
        if (!fingerprint) throw new GordeError("usage", "give the remote's certificate fingerprint with --remote-fingerprint (it prints it when it starts).");
        const secret = process.env.GORDE_REMOTE_PASSWORD;
        if (!secret) throw new GordeError("usage", "set GORDE_REMOTE_PASSWORD to the password or token secret of the remote's user.");
        body = { name: name!, url: remoteUrl, fingerprint, secret };
      } else if (ctx.values.url !== undefined || ctx.values["remote-fingerprint"] !== undefined) {
        throw new GordeError("usage", `--url and --remote-fingerprint belong to remote add, not remote ${sub}.`);
      }
      await withServer(ctx, url, true, async (r) => {
        const c = r.conn;
        if (sub === "list") {
          const list = await c.call(ROUTES, "listRemotes");
          return print(ctx, list, () => list.map((x) => `${x.name}  ${x.url}  ${x.fingerprint}\n`).join(""));
        }
        if (sub === "add") {
          const added = await c.call(ROUTES, "addRemote", { json: body! });
          return print(ctx, added, () => `added remote ${added.name}: ${added.url}\n`);
        }
        await c.call(ROUTES, "removeRemote", { params: { name: name! } });
        print(ctx, { removed: name }, () => `removed remote ${name}\n`);
      });
    },
  },

  sync: {
    options: { ...common, group: { type: "string", multiple: true }, last: { type: "string" }, ns: { type: "string" } },
    async run(ctx) {
      const [url, remote] = ctx.positionals;
      if (!url || !remote || ctx.positionals.length > 2) usage(SYNC_USAGE);
      if (remote.includes("://")) {
        throw new GordeError("usage", `"${remote}" is a URL, but a sync names a remote: an administrator adds the server first with gorde remote add <server> <name> --url <url> --remote-fingerprint <fp>.`);
      }
      if (!REMOTE_NAME_RE.test(remote)) throw new GordeError("usage", `"${remote}" is not a valid remote name: a letter, then letters, digits, '_' or '-', at most 32.`);
      const last = ctx.values.last === undefined ? undefined : Number(ctx.values.last);
      if (last !== undefined && !(Number.isInteger(last) && last > 0)) throw new GordeError("usage", "--last takes a positive whole number.");
      await withServer(ctx, url, false, async (r) => {
        const body = { remote, ns: (ctx.values.ns as string | undefined) || undefined, groups: strs(ctx, "group"), last };
        const res = await r.runTask("sync", body, (e) => {
          if (!ctx.values.json && e.type === "log" && e.line) ctx.err(`${e.line}\n`);
        }, ctx.signal);
        print(ctx, res, () => `pulled ${res.snapshots} snapshots (${res.chunks} new chunks, ${formatBytes(res.bytes)})${res.skipped ? `; skipped ${res.skipped} of groups owned by others` : ""}\n`);
      });
    },
  },

  task: {
    options: { ...common, running: { type: "boolean" }, limit: { type: "string" } },
    async run(ctx) {
      const [sub, url, id] = ctx.positionals;
      if (!sub || !url) usage("task list|log|abort <server> [<task id>] [--running]");
      await withServer(ctx, url, true, async (r) => {
        const c = r.conn;
        if (sub === "list") {
          const limit = ctx.values.limit === undefined ? undefined : Number(ctx.values.limit);
          const list = await c.call(ROUTES, "listTasks", { query: { running: ctx.values.running ? "true" : undefined, limit } });
          return print(ctx, list, () =>
            list
              .map((t) => `${t.id}  ${t.type}  ${t.authId}  ${new Date(t.startTime).toISOString()}  ${t.state}${t.error ? `: ${t.error}` : ""}\n`)
              .join(""),
          );
        }
        if (!id) usage("task log|abort <server> <task id>");
        if (sub === "log") {
          const log = await c.call(ROUTES, "taskLog", { params: { id } });
          return print(ctx, log, () => log.lines.map((l) => `${l}\n`).join(""));
        }
        if (sub === "abort") {
          await c.call(ROUTES, "abortTask", { params: { id } });
          return print(ctx, { aborted: id }, () => `aborted ${id}\n`);
        }
        usage("task list|log|abort <server> [<task id>]");
      });
    },
  },

  maintenance: {
    options: { ...common },
    async run(ctx) {
      const [url, mode] = ctx.positionals;
      if (!url || (mode !== "none" && mode !== "read-only" && mode !== "offline")) usage("maintenance <repo> none|read-only|offline");
      await withServer(ctx, url, false, async (r) => {
        await r.setMaintenance(mode);
        print(ctx, { maintenance: mode }, () => `datastore ${r.store}: maintenance mode ${mode}\n`);
      });
    },
  },
};
