// The cluster's routes on a host (a node, or the backup server as the witness): its status,
// joining the cluster of a node (as PVE's `pvecm add`: this host asks a member, with an
// administrator's credentials there, to admit it), admitting a host, and on a node the
// creation of a cluster.
import { CLUSTER_ROUTES, type CREATE_CLUSTER_ROUTE } from "../api/cluster-routes.ts";
import { ServerConnection, parseServerUrl } from "../api/connection.ts";
import { GordeError } from "../errors.ts";
import { denied } from "../host/access-handlers.ts";
import type { ApiHandler, ApiHandlers } from "../host/api-host.ts";
import type { AuthStore } from "../host/auth.ts";
import { type ClusterMembership, DEFAULT_PEER_PORT } from "./membership.ts";

const NODE_PORT = 8006;

export function clusterHandlers(auth: AuthStore, membership: ClusterMembership): ApiHandlers<typeof CLUSTER_ROUTES> {
  const need = (authId: string, priv: "Sys.Audit" | "Sys.Modify", what: string): void => {
    if (!auth.can(authId, "/", priv)) throw denied(authId, what);
  };
  return {
    clusterStatus: async ({ authId }) => {
      need(authId, "Sys.Audit", "see the cluster");
      return { json: await membership.status() };
    },
    admitMember: async ({ authId, body }) => {
      need(authId, "Sys.Modify", "admit a member to the cluster");
      return { json: await membership.admit(body.name, body.peerUrl, body.role) };
    },
    joinCluster: async ({ authId, body }) => {
      need(authId, "Sys.Modify", "join a cluster");
      membership.assertFree();
      const addr = parseServerUrl(body.member.url, NODE_PORT);
      if (addr.store !== "" || !addr.authId) throw new GordeError("usage", `"${body.member.url}" is not a node's URL with a user: https://<user>@<host>[:<port>].`);
      const at = { address: body.address, peerPort: body.peerPort, clientPort: body.clientPort };
      const host = body.address.includes(":") ? `[${body.address}]` : body.address;
      const conn = await ServerConnection.connect({ host: addr.host, port: addr.port, authId: addr.authId, secret: body.member.secret, fingerprint: body.member.fingerprint });
      try {
        // The cluster named is the member's: a wrong name adds nothing anywhere.
        const theirs = await conn.call(CLUSTER_ROUTES, "clusterStatus");
        if (theirs.cluster !== body.cluster) {
          if (theirs.cluster === null) throw new GordeError("not-found", `${addr.host}:${addr.port} is in no cluster.`);
          throw new GordeError("usage", `${addr.host}:${addr.port} is in cluster ${theirs.cluster}, not ${body.cluster}.`);
        }
        const bundle = await conn.call(CLUSTER_ROUTES, "admitMember", {
          json: { name: membership.member, role: membership.role, peerUrl: `https://${host}:${at.peerPort ?? DEFAULT_PEER_PORT}` },
        });
        await membership.join(bundle, at);
      } finally {
        conn.close();
      }
      return { json: await membership.status() };
    },
  };
}

/** A node's creation of a cluster with itself as the first member. */
export function createClusterHandler(auth: AuthStore, membership: ClusterMembership): ApiHandler<typeof CREATE_CLUSTER_ROUTE> {
  return async ({ authId, body }) => {
    if (!auth.can(authId, "/", "Sys.Modify")) throw denied(authId, "create a cluster");
    await membership.create(body.name, { address: body.address, peerPort: body.peerPort, clientPort: body.clientPort });
    return { json: await membership.status() };
  };
}
