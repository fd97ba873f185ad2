// `gorde node` (the node agent in the foreground) and `gorde guest …` (its guests, through
// its API: https://<user>@<host>[:8006] from --node or GORDE_NODE).
import fs from "node:fs";
import { parseGuestConfig } from "../api/guest-config.ts";
import { BackupMode, type CreateGuest, type GuestStatus } from "../api/node-routes.ts";
import { NodeClient } from "../client/node-client.ts";
import { GordeError } from "../errors.ts";
import { loadNodeConfig } from "../node/node-config.ts";
import { startNode } from "../node/node-server.ts";
import { formatBytes, taskProgress } from "./progress-bar.ts";
import { parseListen } from "./server-command.ts";
import { type Command, int, str, untilAborted } from "./command.ts";

export const nodeCommand: Command = {
  options: { config: { type: "string" }, listen: { type: "string" } },
  async run(ctx) {
    if (ctx.positionals.length) throw new GordeError("usage", "usage: gorde node --config <file> [--listen <host:port>]");
    const file = ctx.values.config as string | undefined;
    if (!file) throw new GordeError("usage", "gorde node needs --config <file> (name, dataDir, listen, server).");
    const config = loadNodeConfig(file);
    const { host, port } = parseListen((ctx.values.listen as string | undefined) ?? config.listen ?? "0.0.0.0:8006", 8006);
    const node = await startNode({
      config,
      host,
      port,
      adminPassword: process.env.GORDE_ADMIN_PASSWORD,
      log: (line) => ctx.err(`${new Date().toISOString()} ${line}\n`),
    });
    ctx.out(`node ${node.name} listening on ${host.includes(":") ? `[${host}]` : host}:${node.port}\n`);
    ctx.out(`fingerprint: ${node.fingerprint}\n`);
    await untilAborted(ctx.signal);
    await node.close();
    ctx.err("node stopped, its guests with it\n");
  },
};

const GUEST_USAGE = `guest <command> [--node https://<user>@<host>[:8006]]
  list | status <id> | config <id> [--set <file>] | log <id> | start <id> | stop <id> | remove <id>
  create <id> --demo vm|ct --port <p> [--name <n>] [--memory <MiB>] [--cpus N] [--disk-size <MiB>]
  create <id> --config <file>
  backup <id> [--mode snapshot|suspend|stop] [--notes <text>]
  restore <snapshot> [--id <new id>] [--port <p>] [--start] [--force]`;

function guestId(s: string | undefined): number {
  if (s === undefined || !/^[1-9]\d{2,8}$/.test(s)) throw new GordeError("usage", `"${s ?? ""}" is not a guest id (a number from 100).`);
  return Number(s);
}

function readJsonFile(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new GordeError("usage", `${file} cannot be read as JSON: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
}

function statusLine(s: GuestStatus): string {
  const up = s.uptimeSeconds !== undefined ? ` up ${s.uptimeSeconds}s` : "";
  const last = s.lastBackup ? (s.lastBackup.ok ? ` last backup ${s.lastBackup.snapshot}` : ` last backup FAILED: ${s.lastBackup.error}`) : "";
  return `${s.kind} ${s.id} ${s.name} ${s.state}${up} port 127.0.0.1:${s.httpPort}${last}`;
}

export const guestCommand: Command = {
  options: {
    node: { type: "string" },
    fingerprint: { type: "string" },
    json: { type: "boolean" },
    demo: { type: "string" },
    config: { type: "string" },
    set: { type: "string" },
    port: { type: "string" },
    name: { type: "string" },
    memory: { type: "string" },
    cpus: { type: "string" },
    "disk-size": { type: "string" },
    mode: { type: "string" },
    notes: { type: "string" },
    id: { type: "string" },
    start: { type: "boolean" },
    force: { type: "boolean" },
  },
  async run(ctx) {
    const [sub, arg, ...rest] = ctx.positionals;
    if (!sub || rest.length) throw new GordeError("usage", `usage: gorde ${GUEST_USAGE}`);
    const url = str(ctx, "node") ?? process.env.GORDE_NODE;
    if (!url) throw new GordeError("usage", "name the node with --node https://<user>@<host>[:8006] or GORDE_NODE.");
    const asJson = ctx.values.json === true;
    const print = (v: unknown, human: () => string): void => {
      ctx.out(asJson ? JSON.stringify(v, null, 2) + "\n" : human());
    };
    /** A task of the node followed live: its log on stderr (not with --json); ^C aborts it there. */
    const follow = async <T>(label: string, run: (onEvent?: (e: { type: string; line?: string }) => void) => Promise<T>): Promise<T> => {
      const echo = asJson ? undefined : taskProgress(process.stderr, label);
      try {
        return await run(echo && ((e) => echo.event(e)));
      } finally {
        echo?.end();
      }
    };
    const needArg = (): string => {
      if (arg === undefined) throw new GordeError("usage", `usage: gorde ${GUEST_USAGE}`);
      return arg;
    };
    const node = await NodeClient.connect(url, { secret: process.env.GORDE_PASSWORD, fingerprint: str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT, signal: ctx.signal });
    try {
      switch (sub) {
        case "list": {
          const list = await node.call("listGuests");
          return print(list, () => list.map((s) => statusLine(s) + "\n").join(""));
        }
        case "status": {
          const s = await node.call("guestStatus", { params: { id: guestId(needArg()) } });
          return print(s, () => statusLine(s) + "\n");
        }
        case "config": {
          const id = guestId(needArg());
          const file = str(ctx, "set");
          const c = file
            ? await node.call("setGuestConfig", { params: { id }, json: parseGuestConfig(readJsonFile(file), `guest configuration ${file}`) })
            : await node.call("guestConfig", { params: { id } });
          return print(c, () => JSON.stringify(c, null, 2) + "\n");
        }
        case "log": {
          const text = await node.text("guestLog", { id: guestId(needArg()) });
          return print({ log: text }, () => text);
        }
        case "start":
        case "stop": {
          const s = await node.call(sub === "start" ? "startGuest" : "stopGuest", { params: { id: guestId(needArg()) } });
          return print(s, () => statusLine(s) + "\n");
        }
        case "remove": {
          const id = guestId(needArg());
          await node.call("removeGuest", { params: { id } });
          return print({ removed: id }, () => `removed guest ${id}\n`);
        }
        case "create": {
          const id = guestId(needArg());
          const file = str(ctx, "config");
          const demo = str(ctx, "demo");
          if ((file === undefined) === (demo === undefined)) throw new GordeError("usage", "gorde guest create takes either --demo vm|ct or --config <file>.");
          let body: CreateGuest;
          if (file) {
            const c = parseGuestConfig(readJsonFile(file), `guest configuration ${file}`);
            if (c.id !== id) throw new GordeError("usage", `${file} is the configuration of guest ${c.id}, not ${id}.`);
            body = { config: c };
          } else {
            if (demo !== "vm" && demo !== "ct") throw new GordeError("usage", `--demo takes vm or ct, not "${demo}".`);
            const port = int(ctx, "port");
            if (port === undefined) throw new GordeError("usage", "a demo guest needs --port <p>: the 127.0.0.1 port its service is forwarded to.");
            body = { demo: { kind: demo, id, name: str(ctx, "name"), httpPort: port, memoryMiB: int(ctx, "memory"), cpus: int(ctx, "cpus"), diskMiB: int(ctx, "disk-size") } };
          }
          const c = await node.call("createGuest", { json: body });
          return print(c, () => `created ${c.kind} ${c.id} (${c.name})\n`);
        }
        case "backup": {
          const id = guestId(needArg());
          const modeArg = str(ctx, "mode");
          const mode = BackupMode.optional().safeParse(modeArg);
          if (!mode.success) throw new GordeError("usage", `--mode takes snapshot, suspend or stop, not "${modeArg}".`);
          const r = await follow("backup", (onEvent) => node.backup(id, { mode: mode.data, notes: str(ctx, "notes") }, onEvent, ctx.signal));
          return print(r, () => `${r.snapshot}: ${(r.durationMs / 1000).toFixed(1)} s, ${formatBytes(r.newBytes)} new, ${formatBytes(r.reusedBytes)} reused\n`);
        }
        case "restore": {
          const snapshot = needArg();
          const req = { snapshot, id: ctx.values.id === undefined ? undefined : guestId(str(ctx, "id")), httpPort: int(ctx, "port"), start: ctx.values.start === true, force: ctx.values.force === true };
          const s = await follow("restore", (onEvent) => node.restore(req, onEvent, ctx.signal));
          return print(s, () => `restored ${snapshot} as ${statusLine(s)}\n`);
        }
        default:
          throw new GordeError("usage", `unknown guest command "${sub}"; usage: gorde ${GUEST_USAGE}`);
      }
    } finally {
      node.close();
    }
  },
};
