// The node agent's configuration file (JSON, strict): the node's name, where it keeps its
// guests, where it listens, and the backup server every node of the cluster backs up to
// with one identity (as a PVE cluster shares one storage definition).
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { scriptName } from "../api/guest-config.ts";
import { firstIssue } from "../schema-issue.ts";

export const DEFAULT_NODE_PORT = 8006;
/** guest ids a drill's sandbox takes, unless the config names others */
export const DEFAULT_DRILL_IDS = { first: 9900, last: 9999 } as const;

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
  /**
   * script name → absolute path of an executable that a `script` health check runs, as
   * PVE's hookscripts: only the node's administrator defines them (root-owned, writable by
   * no one else), guest configs and snapshots only name them.
   */
  scripts: z.record(scriptName, z.string().startsWith("/", "an absolute path")).optional(),
  drill: z
    .strictObject({
      /** the guest ids drill sandboxes take: never a production guest's */
      ids: z
        .strictObject({ first: z.number().int().min(100).max(999_999_999), last: z.number().int().min(100).max(999_999_999) })
        .refine((r) => r.first <= r.last && r.last - r.first < 10_000, "a range first..last of at most 10000 ids"),
    })
    .optional(),
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

/**
 * The file of a health check's script, checked as PVE checks a hookscript: defined in the
 * node's config, a regular executable file owned by root and writable by no one else, in
 * directories writable by no one else (else anyone could swap it for their own).
 */
export function checkedScript(config: NodeConfig, name: string): string {
  const file = config.scripts?.[name];
  if (!file) throw new GordeError("usage", `script ${JSON.stringify(name)} is not defined in the node's configuration (scripts).`);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (err) {
    throw new GordeError("usage", `script ${name} (${file}) cannot be read: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
  if (!st.isFile()) throw new GordeError("usage", `script ${name} (${file}) is not a regular file.`);
  if (st.uid !== 0) throw new GordeError("usage", `script ${name} (${file}) is not owned by root.`);
  if (st.mode & 0o022) throw new GordeError("usage", `script ${name} (${file}) is writable by others than its owner.`);
  if (!(st.mode & 0o100)) throw new GordeError("usage", `script ${name} (${file}) is not executable.`);
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const d = fs.statSync(dir);
    if (d.uid !== 0 || (d.mode & 0o022 && !(d.mode & 0o1000))) throw new GordeError("usage", `script ${name} (${file}) is in ${dir}, which others than root may change.`);
    if (dir === "/") break;
  }
  return file;
}
