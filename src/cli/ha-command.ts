// `gorde ha add|remove|status|recoveries`: HA resources as PVE's ha-manager names them
// (vm:100, ct:101), on a node of the cluster (--node or GORDE_NODE). `status --json` is
// design.md's contract: an array of {"sid", "state", "node"} (and the rest of each resource).
import type { HaResource, Recovery } from "../api/ha-routes.ts";
import { parseSid } from "../cluster/ha-store.ts";
import { NodeClient } from "../client/node-client.ts";
import { GordeError } from "../errors.ts";
import { type Command, int, str } from "./command.ts";

const USAGE = `ha add <vm|ct>:<id> [--max-restart N] [--max-relocate N] [--state started|stopped] [--node <url>]
  ha remove <vm|ct>:<id> [--node <url>]
  ha status [--node <url>] [--json]
  ha recoveries [--node <url>] [--json]`;

function describe(list: HaResource[]): string {
  if (list.length === 0) return "no HA resources\n";
  const w = Math.max(...list.map((r) => r.sid.length));
  return list.map((r) => `${r.sid.padEnd(w)}  ${r.state.padEnd(8)}  ${r.node}${r.reason ? `  (${r.reason})` : ""}\n`).join("");
}

function recoveryLine(r: Recovery): string {
  const when = new Date(r.failedAt).toISOString().replace(/\.\d+Z$/, "Z");
  const times = r.result === "recovered" ? `RPO ${r.rpoSeconds} s, RTO ${r.rtoSeconds} s` : r.result === "failed" ? `failed: ${r.error}` : "under way";
  return `${when}  ${r.sid} from ${r.from} on ${r.node}  ${r.snapshot ?? "-"}  ${times}\n`;
}

export const haCommand: Command = {
  options: {
    node: { type: "string" },
    fingerprint: { type: "string" },
    json: { type: "boolean" },
    "max-restart": { type: "string" },
    "max-relocate": { type: "string" },
    state: { type: "string" },
  },
  async run(ctx) {
    const [sub, sid, ...rest] = ctx.positionals;
    const usage = (): never => {
      throw new GordeError("usage", `usage: gorde ${USAGE}`);
    };
    if (!sub || rest.length) usage();
    if (sub === "add" || sub === "remove") {
      if (!sid) usage();
      parseSid(sid!);
    } else if (sub === "status" || sub === "recoveries") {
      if (sid !== undefined) usage();
    } else {
      throw new GordeError("usage", `unknown ha command "${sub}"; usage: gorde ${USAGE}`);
    }
    const state = str(ctx, "state");
    if (state !== undefined && state !== "started" && state !== "stopped") throw new GordeError("usage", `--state is started or stopped, not "${state}".`);
    const url = str(ctx, "node") ?? process.env.GORDE_NODE;
    if (!url) throw new GordeError("usage", "name the node with --node https://<user>@<host>[:8006] or GORDE_NODE.");
    const node = await NodeClient.connect(url, { secret: process.env.GORDE_PASSWORD, fingerprint: str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT, signal: ctx.signal });
    try {
      const print = (v: unknown, human: string): void => {
        ctx.out(ctx.values.json ? JSON.stringify(v, null, 2) + "\n" : human);
      };
      switch (sub) {
        case "add": {
          const r = await node.call("addHa", { json: { sid: sid!, maxRestart: int(ctx, "max-restart"), maxRelocate: int(ctx, "max-relocate"), state } });
          return print(r, `${r.sid} is an HA resource on node ${r.node} (${r.request})\n`);
        }
        case "remove":
          await node.call("removeHa", { params: { sid: sid! } });
          return print({ ok: true }, `${sid} is no HA resource any more (the guest itself is unchanged)\n`);
        case "status": {
          const list = await node.call("haStatus");
          return print(list, describe(list));
        }
        default: {
          const list = await node.call("listRecoveries", { query: {} });
          return print(list, list.length ? list.map(recoveryLine).join("") : "no recoveries on this node\n");
        }
      }
    } finally {
      node.close();
    }
  },
};
