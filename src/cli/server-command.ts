// `gorde server`: starts the backup server in the foreground until SIGINT or SIGTERM.
import fs from "node:fs";
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import { DEFAULT_PORT, startServer } from "../server/server.ts";
import { type Command, untilAborted } from "./command.ts";

const ConfigSchema = z.strictObject({
  listen: z.string().optional(),
  datastores: z.record(z.string(), z.string()).optional(),
  sessionIdleSeconds: z.number().int().min(1).optional(),
});

/** `host:port`, `[v6]:port`, `:port` or `host`. */
export function parseListen(s: string, defaultPort = DEFAULT_PORT): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*))(?::(\d{1,5}))?$/.exec(s);
  const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
  if (!m || port > 65535) throw new GordeError("usage", `--listen takes <host>:<port>, not "${s}".`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

function loadConfig(file: string): z.infer<typeof ConfigSchema> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new GordeError("usage", `config file ${file} cannot be read as JSON: ${(err as Error).message}.`);
  }
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) {
    const { path: at, message } = firstIssue(r.error);
    throw new GordeError("usage", `config file ${file}: ${at || "top level"}: ${message}.`);
  }
  return r.data;
}

export const serverCommand: Command = {
  options: {
    listen: { type: "string" },
    "state-dir": { type: "string" },
    datastore: { type: "string", multiple: true },
    config: { type: "string" },
  },
  async run(ctx) {
    if (ctx.positionals.length) throw new GordeError("usage", "usage: gorde server [--listen <host:port>] --state-dir <dir> --datastore <name>=<dir>... [--config <file>]");
    const configFile = ctx.values.config as string | undefined;
    const config = configFile ? loadConfig(configFile) : {};
    const stateDir = ctx.values["state-dir"] as string | undefined;
    if (!stateDir) throw new GordeError("usage", "gorde server needs --state-dir <dir>.");
    const datastores: Record<string, string> = { ...config.datastores };
    for (const d of (ctx.values.datastore as string[] | undefined) ?? []) {
      const i = d.indexOf("=");
      if (i <= 0 || i === d.length - 1) throw new GordeError("usage", `"${d}" is not <name>=<dir>.`);
      datastores[d.slice(0, i)] = d.slice(i + 1);
    }
    const { host, port } = parseListen((ctx.values.listen as string | undefined) ?? config.listen ?? `0.0.0.0:${DEFAULT_PORT}`);
    const server = await startServer({
      stateDir,
      host,
      port,
      datastores,
      adminPassword: process.env.GORDE_ADMIN_PASSWORD,
      sessionIdleMs: config.sessionIdleSeconds ? config.sessionIdleSeconds * 1000 : undefined,
      log: (line) => ctx.err(`${new Date().toISOString()} ${line}\n`),
    });
    ctx.out(`listening on ${host.includes(":") ? `[${host}]` : host}:${server.port}\n`);
    ctx.out(`fingerprint: ${server.fingerprint}\n`);
    await untilAborted(ctx.signal);
    await server.close();
    ctx.err("server stopped\n");
  },
};
