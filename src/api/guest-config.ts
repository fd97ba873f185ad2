// A guest's configuration, as PVE keeps one per guest: numeric id, kind, resources, disks
// or root file system, and the 127.0.0.1 port its service is forwarded to. It is saved in
// every snapshot (the manifest's `config`), so a restore recreates the guest, not just its
// disk. Unknown keys are refused: a typo must not silently change a guest.
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { firstIssue, issueSentence } from "../schema-issue.ts";

/** Names the drill gives its own steps; a probe cannot take them. */
export const RESERVED_CHECK_NAMES = ["verify", "restore", "boot"] as const;

const checkName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,31}$/, "a check name of lower-case letters, digits and '-'")
  .refine((n) => !(RESERVED_CHECK_NAMES as readonly string[]).includes(n), "a name other than verify, restore and boot");
const timeoutSeconds = z.number().int().min(1).max(3600);

/** a name from the node's own `scripts` table: a guest config never carries a command */
export const scriptName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "a script name of letters, digits, '.', '_' or '-'");

function isRegex(source: string): boolean {
  try {
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
}

/** the guest's service port (httpPort) accepts a connection */
export const TcpProbeSchema = z.strictObject({
  type: z.literal("tcp"),
  name: checkName,
  timeoutSeconds: timeoutSeconds.default(30),
});

/**
 * A GET on the guest's service port. `expect: "snapshot"` marks a read-only answer that a
 * backup captures before and after its point-in-time view; a drill then wants that answer.
 */
export const HttpProbeSchema = z.strictObject({
  type: z.literal("http"),
  name: checkName,
  method: z.literal("GET").default("GET"),
  path: z.string().regex(/^\/[\x21-\x7e]{0,1023}$/, "an absolute path of printable characters"),
  status: z.number().int().min(100).max(599).default(200),
  contains: z.string().min(1).max(1024).optional(),
  matches: z.string().min(1).max(256).refine(isRegex, "a valid regular expression").optional(),
  expect: z.literal("snapshot").optional(),
  timeoutSeconds: timeoutSeconds.default(30),
});

/** a script the node's configuration defines, run with the sandbox's address and port */
export const ScriptProbeSchema = z.strictObject({
  type: z.literal("script"),
  name: checkName,
  script: scriptName,
  timeoutSeconds: timeoutSeconds.default(60),
});

export const ProbeSchema = z.discriminatedUnion("type", [TcpProbeSchema, HttpProbeSchema, ScriptProbeSchema]);
export type Probe = z.infer<typeof ProbeSchema>;

const probes = z
  .array(ProbeSchema)
  .max(16)
  .refine((ps) => new Set(ps.map((p) => p.name)).size === ps.length, "probe names that differ");

/** VM boot: a line on the serial console, or the guest agent answering a ping (Veeam's 120 s wait by default) */
export const VmBootCheckSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("serial"), marker: z.string().min(1).max(256), timeoutSeconds: timeoutSeconds.default(120) }),
  z.strictObject({ type: z.literal("agent"), timeoutSeconds: timeoutSeconds.default(120) }),
]);
/** container boot: its init is running */
export const CtBootCheckSchema = z.strictObject({ type: z.literal("init"), timeoutSeconds: timeoutSeconds.default(30) });

export const VmHealthChecksSchema = z.strictObject({ boot: VmBootCheckSchema, probes });
export const CtHealthChecksSchema = z.strictObject({ boot: CtBootCheckSchema, probes });

export type VmHealthChecks = z.infer<typeof VmHealthChecksSchema>;
export type CtHealthChecks = z.infer<typeof CtHealthChecksSchema>;
export type HealthChecks = VmHealthChecks | CtHealthChecks;

/**
 * The demo guests' probes: the port open, and the note read back as it was at backup
 * time (not the counter, which changes on every read).
 */
const DEMO_PROBES: Probe[] = [
  { type: "tcp", name: "port", timeoutSeconds: 30 },
  { type: "http", name: "note", method: "GET", path: "/cgi-bin/note", status: 200, expect: "snapshot", timeoutSeconds: 30 },
];
/** the demo VM prints this line on its serial console once its service runs */
export const DEMO_VM_HEALTH_CHECKS: VmHealthChecks = { boot: { type: "serial", marker: "gorde-guest: up", timeoutSeconds: 120 }, probes: DEMO_PROBES };
export const DEMO_CT_HEALTH_CHECKS: CtHealthChecks = { boot: { type: "init", timeoutSeconds: 30 }, probes: DEMO_PROBES };

const diskName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/, "a disk name of letters, digits, '.', '_' or '-'");

export const VmConfigSchema = z.strictObject({
  kind: z.literal("vm"),
  id: z.number().int().min(100).max(999_999_999),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, "a host name"),
  memoryMiB: z.number().int().min(64).max(1024 * 1024),
  cpus: z.number().int().min(1).max(64),
  /** disk name → raw image file (absolute path on the node) */
  disks: z.record(diskName, z.string().startsWith("/", "an absolute path")).refine((d) => Object.keys(d).length >= 1, "at least one disk"),
  httpPort: z.number().int().min(1024).max(65535),
  /** the guest runs the QEMU guest agent: backups freeze its file systems for their instant */
  agent: z.boolean().optional(),
  /** start the guest when its node starts */
  onboot: z.boolean().optional(),
  /** what a restore drill checks (and, on a cluster, what counts as recovered) */
  healthChecks: VmHealthChecksSchema.optional(),
});

export const CtConfigSchema = z.strictObject({
  kind: z.literal("ct"),
  id: z.number().int().min(100).max(999_999_999),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, "a host name"),
  memoryMiB: z.number().int().min(16).max(1024 * 1024),
  cpus: z.number().int().min(1).max(64),
  rootfs: z.string().startsWith("/", "an absolute path"),
  init: z.string().min(1).max(4096),
  httpPort: z.number().int().min(1024).max(65535),
  onboot: z.boolean().optional(),
  healthChecks: CtHealthChecksSchema.optional(),
});

export const GuestConfigSchema = z.discriminatedUnion("kind", [VmConfigSchema, CtConfigSchema]);
export type GuestConfig = z.infer<typeof GuestConfigSchema>;
export type VmGuestConfig = z.infer<typeof VmConfigSchema>;

/** Parses a guest configuration; the first problem becomes one sentence naming the key. */
export function parseGuestConfig(raw: unknown, what = "guest configuration"): GuestConfig {
  const r = GuestConfigSchema.safeParse(raw);
  if (r.success) return r.data;
  const { issue } = firstIssue(r.error);
  if (issue.code === "unrecognized_keys") throw new GordeError("invalid", `${what} has an unknown key ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}.`);
  if (issue.code === "invalid_key") {
    const key = issue.path.at(-1);
    throw new GordeError("invalid", `${what} ${issue.path.slice(0, -1).join(".")} has an invalid name ${JSON.stringify(key)}.`);
  }
  throw new GordeError("invalid", issueSentence(r.error, what));
}
