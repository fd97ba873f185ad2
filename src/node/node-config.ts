// The node agent's configuration file (JSON, strict): the node's name, where it keeps its
// guests, where it listens, and the backup server every node of the cluster backs up to
// with one identity (as a PVE cluster shares one storage definition).
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";

export const DEFAULT_NODE_PORT = 8006;

export const NodeConfigSchema = z.strictObject({
  /** the node's name in the cluster */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, "a host name"),
  /** guests' configs, disks, root file systems, run files and the node's own state */
  dataDir: z.string().startsWith("/", "an absolute path"),
  /** host:port of the HTTPS API (default 0.0.0.0:8006) */
  listen: z.string().optional(),
  server: z.strictObject({
    /** https://<user>[!<token>]@<host>[:<port>]/<store> */
    url: z.string().startsWith("https://", "an https:// repository URL"),
    /** SHA-256 fingerprint of the server's certificate */
    fingerprint: z.string().min(1),
    /** file holding the password or token secret (else GORDE_SERVER_SECRET) */
    secretFile: z.string().startsWith("/", "an absolute path").optional(),
  }),
});
export type NodeConfig = z.infer<typeof NodeConfigSchema>;

/** Reads and checks a node configuration file; every problem is one sentence naming the key. */
export function loadNodeConfig(file: string): NodeConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new GordeError("usage", `node config ${file} cannot be read as JSON: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
  const r = NodeConfigSchema.safeParse(raw);
  if (!r.success) {
    const { issue: i, path: at, message } = firstIssue(r.error);
    if (i.code === "unrecognized_keys") throw new GordeError("usage", `node config ${file} has an unknown key ${i.keys.map((k) => JSON.stringify([...i.path, k].join("."))).join(", ")}.`);
    throw new GordeError("usage", `node config ${file}: ${at || "top level"} is invalid: ${message}.`);
  }
  return { ...r.data, dataDir: path.resolve(r.data.dataDir) };
}

/** The secret of the node's backup server identity. */
export function serverSecret(config: NodeConfig): string {
  if (config.server.secretFile) {
    try {
      return fs.readFileSync(config.server.secretFile, "utf8").trim();
    } catch (err) {
      throw new GordeError("usage", `cannot read the backup server secret from ${config.server.secretFile}: ${(err as Error).message.replace(/\.$/, "")}.`);
    }
  }
  const s = process.env.GORDE_SERVER_SECRET;
  if (!s) throw new GordeError("usage", "the node needs the backup server's secret: set server.secretFile in its config or GORDE_SERVER_SECRET.");
  return s;
}
