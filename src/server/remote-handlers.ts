// The remote routes: the remotes a server pulls from, and a sync from one of them into a
// datastore, as a task.
import type { ROUTES } from "../api/routes.ts";
import { parseNamespace } from "../format/names.ts";
import type { ApiHandlers } from "../host/api-host.ts";
import { remoteAclPath } from "../host/auth.ts";
import { HttpError } from "../host/http.ts";
import type { LongTasks } from "./long-tasks.ts";
import type { ServerContext } from "./server-context.ts";

type RemoteRoute = "listRemotes" | "addRemote" | "removeRemote" | "sync";

export function remoteHandlers(ctx: ServerContext, long: LongTasks): ApiHandlers<typeof ROUTES, RemoteRoute> {
  const { auth, remotes, log, privs, deny, storeFor } = ctx;
  const { startSync } = long;
  return {
    listRemotes: ({ authId }) => ({ json: remotes.list().filter((r) => auth.can(authId, remoteAclPath(r.name), "Remote.Audit")) }),
    addRemote: async ({ authId, body }) => {
      if (!auth.can(authId, remoteAclPath(), "Remote.Modify")) deny(authId, "add remotes");
      const r = await remotes.add(body);
      log(`${authId} added remote ${r.name} (${r.url})`);
      return { json: r };
    },
    removeRemote: async ({ authId, params }) => {
      if (!auth.can(authId, remoteAclPath(), "Remote.Modify")) deny(authId, "remove remotes");
      await remotes.remove(params.name);
      log(`${authId} removed remote ${params.name}`);
      return { json: { ok: true } };
    },
    sync: ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(b.ns);
      if (!privs(authId, e.name, ns).has("Datastore.Backup")) deny(authId, `sync into ${e.name}`);
      // Permission before existence: an unknown remote and one the caller may not read answer alike.
      if (!auth.can(authId, remoteAclPath(b.remote), "Remote.Read")) deny(authId, `sync from remote ${b.remote}`);
      const remote = remotes.get(b.remote);
      if (!remote) throw new HttpError(404, `no remote ${b.remote}; an administrator adds it with gorde remote add.`);
      return { json: { task: startSync(authId, e, { remote, ns, groups: b.groups, last: b.last }).id } };
    },
  };
}
