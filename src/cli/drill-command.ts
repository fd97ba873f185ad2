// `gorde drill run|list|show`: restore drills on a node (its URL https://<user>@<host>[:8006]
// from --node or GORDE_NODE). `run` follows the drill's task live on stderr and exits 0 only
// when the drill passed; --json prints the contract's document (design.md).
import type { DrillRecord } from "../api/node-routes.ts";
import { NodeClient } from "../client/node-client.ts";
import { GordeError } from "../errors.ts";
import { drillJson } from "../node/drill.ts";
import { type Command, str } from "./command.ts";
import { taskProgress } from "./progress-bar.ts";

const USAGE = `drill run <guest> [--snapshot <snapshot>] [--node <url>] [--json]
  drill list [--guest <id>] [--node <url>] [--json]
  drill show <id> [--node <url>] [--json]`;

function guestId(s: string | undefined, what = "a guest id"): number {
  if (s === undefined || !/^[1-9]\d{2,8}$/.test(s)) throw new GordeError("usage", `"${s ?? ""}" is not ${what} (a number from 100).`);
  return Number(s);
}

function when(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

function summary(d: DrillRecord): string {
  const head = `drill ${d.id} of guest ${d.guest}${d.snapshot ? ` (${d.snapshot})` : ""} on node ${d.node}: ${d.result.toUpperCase()}`;
  const width = Math.max(5, ...d.checks.map((c) => c.name.length));
  const rows = d.checks.map((c) => `  ${c.name.padEnd(width)}  ${c.ok ? "ok    " : "FAILED"}  ${c.seconds.toFixed(1).padStart(6)} s  ${c.message}`);
  const times =
    d.result === "passed"
      ? `RPO ${d.rpoSeconds} s, RTO ${d.rtoSeconds} s (restored at ${d.restoredSeconds} s, booted at ${d.bootedSeconds} s)`
      : d.result === "failed"
        ? `failed at check ${d.failedCheck}: ${d.error}`
        : `error: ${d.error ?? "no reason given"}`;
  return [head, ...rows, times].join("\n") + "\n";
}

export const drillCommand: Command = {
  options: {
    node: { type: "string" },
    fingerprint: { type: "string" },
    json: { type: "boolean" },
    snapshot: { type: "string" },
    guest: { type: "string" },
  },
  async run(ctx) {
    const [sub, arg, ...rest] = ctx.positionals;
    if (!sub || rest.length) throw new GordeError("usage", `usage: gorde ${USAGE}`);
    if (!["run", "list", "show"].includes(sub)) throw new GordeError("usage", `unknown drill command "${sub}"; usage: gorde ${USAGE}`);
    if (sub === "list" ? arg !== undefined : arg === undefined) throw new GordeError("usage", `usage: gorde ${USAGE}`);
    if (sub !== "run" && ctx.values.snapshot !== undefined) throw new GordeError("usage", "--snapshot applies to gorde drill run.");
    if (sub !== "list" && ctx.values.guest !== undefined) throw new GordeError("usage", "--guest applies to gorde drill list.");
    const guest = sub === "run" ? guestId(arg) : undefined;
    const listGuest = str(ctx, "guest") === undefined ? undefined : guestId(str(ctx, "guest"));
    const id = sub === "show" ? (/^[1-9]\d{0,15}$/.test(arg!) ? Number(arg) : undefined) : undefined;
    if (sub === "show" && id === undefined) throw new GordeError("usage", `"${arg}" is not a drill id (a number from 1).`);
    const url = str(ctx, "node") ?? process.env.GORDE_NODE;
    if (!url) throw new GordeError("usage", "name the node with --node https://<user>@<host>[:8006] or GORDE_NODE.");
    const asJson = ctx.values.json === true;
    const node = await NodeClient.connect(url, { secret: process.env.GORDE_PASSWORD, fingerprint: str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT, signal: ctx.signal });
    try {
      if (sub === "run") {
        const echo = asJson ? undefined : taskProgress(process.stderr, "drill");
        let d: DrillRecord;
        try {
          d = await node.runDrill({ guest: guest!, snapshot: str(ctx, "snapshot") }, echo && ((e) => echo.event(e)), ctx.signal);
        } finally {
          echo?.end();
        }
        ctx.out(asJson ? JSON.stringify(drillJson(d), null, 2) + "\n" : summary(d));
        return d.result === "passed" ? 0 : 1;
      }
      if (sub === "list") {
        const list = await node.listDrills({ guest: listGuest });
        if (asJson) {
          ctx.out(JSON.stringify(list.map((d) => ({ ...drillJson(d), start: when(d.start), node: d.node, failed_check: d.failedCheck, error: d.error })), null, 2) + "\n");
          return;
        }
        for (const d of list) {
          const rto = d.rtoSeconds !== null ? ` RTO ${d.rtoSeconds} s` : "";
          const why = d.result === "passed" || d.result === "running" ? "" : ` (${d.failedCheck ? `${d.failedCheck}: ` : ""}${d.error ?? ""})`;
          ctx.out(`${d.id} ${when(d.start)} guest ${d.guest} ${d.snapshot ?? "-"} ${d.result}${rto}${why}\n`);
        }
        return;
      }
      const d = await node.drill(id!);
      ctx.out(asJson ? JSON.stringify({ ...drillJson(d), start: when(d.start), node: d.node, sandbox: d.sandbox, job: d.job, restored_s: d.restoredSeconds, booted_s: d.bootedSeconds, bytes_restored: d.bytesRestored, failed_check: d.failedCheck, error: d.error, log: d.log }, null, 2) + "\n" : summary(d) + `--- log\n${d.log}`);
    } finally {
      node.close();
    }
  },
};
