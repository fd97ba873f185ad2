// A guest's configuration, as PVE keeps one per guest: numeric id, kind, resources, disks
// or root file system, and the 127.0.0.1 port its service is forwarded to. It is saved in
// every snapshot (the manifest's `config`), so a restore recreates the guest, not just its
// disk. Unknown keys are refused: a typo must not silently change a guest.
import { z } from "zod";
import { GordeError } from "../errors.ts";
import { firstIssue, issueSentence } from "../schema-issue.ts";

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
