// `gorde cluster create|join|witness|status`: a cluster of two nodes and the backup host as
// its witness (three etcd members). Each command talks to the host it changes: a node
// (--node or GORDE_NODE, password GORDE_PASSWORD) or, for the witness, the backup server
// (--server). Joining names a node of the cluster and an administrator's secret there
// (GORDE_MEMBER_PASSWORD), as PVE's `pvecm add` asks for the cluster node's root password.
import type { ClusterStatus } from "../api/cluster-routes.ts";
import type { ServerConnection } from "../api/connection.ts";
import { NODE_ROUTES } from "../api/node-routes.ts";
import { ROUTES } from "../api/routes.ts";
import { NodeClient } from "../client/node-client.ts";
import { RemoteRepository } from "../client/remote.ts";
import { GordeError } from "../errors.ts";
import { type Command, type CommandContext, int, str } from "./command.ts";

const USAGE = `cluster create <name> --address <ip> [--node <url>]
  cluster join <name> <member node url> --member-fingerprint <fp> --address <ip> [--node <url>]
  cluster witness <name> <member node url> --member-fingerprint <fp> --address <ip> --server <url>
  cluster status [--node <url> | --server <url>] [--json]
  (--peer-port and --client-port: where this host's etcd member listens, 2380 and 2379 by default)`;

/** The host a command changes or asks: a node, or with --server the backup server. */
async function withHost<T>(ctx: CommandContext, fn: (conn: ServerConnection) => Promise<T>): Promise<T> {
  const secret = process.env.GORDE_PASSWORD;
  const fingerprint = str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT;
  const server = str(ctx, "server");
  if (server !== undefined) {
    const r = await RemoteRepository.connect(server, { secret, fingerprint, signal: ctx.signal }, true);
    try {
      return await fn(r.conn);
    } finally {
      r.close();
    }
  }
  const url = str(ctx, "node") ?? process.env.GORDE_NODE;
  if (!url) throw new GordeError("usage", "name the node with --node https://<user>@<host>[:8006] or GORDE_NODE.");
  const node = await NodeClient.connect(url, { secret, fingerprint, signal: ctx.signal });
  try {
    return await fn(node.conn);
  } finally {
    node.close();
  }
}

function listen(ctx: CommandContext): { address: string; peerPort?: number; clientPort?: number } {
  const address = str(ctx, "address");
  if (!address) throw new GordeError("usage", "give the address this host's cluster member listens at with --address <ip> (the other members must reach it).");
  return { address, peerPort: int(ctx, "peer-port"), clientPort: int(ctx, "client-port") };
}

function describe(s: ClusterStatus): string {
  if (s.cluster === null) return "this host is in no cluster\n";
  const nodes = s.nodes.map((n) => `  ${n.name}  ${n.online ? "online " : "OFFLINE"}  guests ${n.guests.join(", ") || "none"}\n`).join("");
  return `cluster ${s.cluster}: ${s.quorate ? "quorate" : "NOT QUORATE (this side has no majority of the members)"}\n${nodes}  witness  ${s.witness.online ? "online" : "OFFLINE"}\n`;
}

export const clusterCommand: Command = {
  options: {
    node: { type: "string" },
    server: { type: "string" },
    fingerprint: { type: "string" },
    "member-fingerprint": { type: "string" },
    address: { type: "string" },
    "peer-port": { type: "string" },
    "client-port": { type: "string" },
    json: { type: "boolean" },
  },
  async run(ctx) {
    const [sub, name, member, ...rest] = ctx.positionals;
    const usage = (): never => {
      throw new GordeError("usage", `usage: gorde ${USAGE}`);
    };
    if (rest.length) usage();
    const print = (s: ClusterStatus): void => {
      ctx.out(ctx.values.json ? JSON.stringify(s, null, 2) + "\n" : describe(s));
    };
    switch (sub) {
      case "status": {
        if (name !== undefined) usage();
        return print(await withHost(ctx, (c) => c.call(ROUTES, "clusterStatus")));
      }
      case "create": {
        if (!name || member !== undefined) usage();
        if (str(ctx, "server") !== undefined) throw new GordeError("usage", "a cluster is created on its first node (--node), not on the backup server.");
        const at = listen(ctx);
        return print(await withHost(ctx, (c) => c.call(NODE_ROUTES, "createCluster", { json: { name: name!, ...at } })));
      }
      case "join":
      case "witness": {
        if (!name || !member) usage();
        if ((sub === "witness") !== (str(ctx, "server") !== undefined)) {
          throw new GordeError("usage", sub === "witness" ? "gorde cluster witness joins the backup server: name it with --server <url>." : "a node joins with --node; the backup server joins with gorde cluster witness.");
        }
        const fp = str(ctx, "member-fingerprint");
        if (!fp) throw new GordeError("usage", "give the member node's certificate fingerprint with --member-fingerprint (it prints it when it starts).");
        const secret = process.env.GORDE_MEMBER_PASSWORD;
        if (!secret) throw new GordeError("usage", "set GORDE_MEMBER_PASSWORD to the password or token secret of the user named in the member node's URL.");
        const at = listen(ctx);
        return print(await withHost(ctx, (c) => c.call(ROUTES, "joinCluster", { json: { cluster: name!, member: { url: member!, fingerprint: fp, secret }, ...at } })));
      }
      default:
        usage();
    }
  },
};
