// The manifest (manifest.json) names a snapshot's archives and makes it finished:
// it is written last, after every index file is durable (docs/format.md, "Manifest").
import { createHash } from "node:crypto";
import { z } from "zod";
import { GordeError, corrupt } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import { type DrillState, DrillStateSchema } from "./drill-state.ts";
import { FORMAT_VERSION } from "./magic.ts";

/** lines of a backup's log kept in its manifest */
export const MAX_LOG_LINES = 1000;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const fileName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/);

export const IndexFileSchema = z.strictObject({
  file: fileName,
  /** SHA-256 of the index file's bytes */
  csum: hex64,
  size: z.number().int().nonnegative(),
});

export const ArchiveSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,120}\.(img|tree)$/),
  kind: z.enum(["img", "tree"]),
  /** bytes of the image, or of the file contents of a tree */
  size: z.number().int().nonnegative(),
  indexes: z.array(IndexFileSchema).min(1).max(2),
  /** image files: the source's identity at backup time; unchanged, the next backup reuses the index */
  source: z
    .strictObject({
      ino: z.string().regex(/^\d{1,20}$/),
      size: z.number().int().nonnegative(),
      mtimeNs: z.string().regex(/^-?\d{1,20}$/),
      ctimeNs: z.string().regex(/^-?\d{1,20}$/),
    })
    .optional(),
});

export const VerifyStateSchema = z.strictObject({
  state: z.enum(["ok", "failed"]),
  time: z.number().int(),
  badChunks: z.number().int().nonnegative().optional(),
});

/** what a drill or check name looks like (the probe names of a guest's health checks) */
const checkName = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/);

/**
 * An `expect: snapshot` probe's answer, read just before and just after the backup's
 * point-in-time view (format 2). Equal answers are `captured` (digest and a short
 * excerpt); different ones `unstable`, and a drill does not use them.
 */
export const CaptureSchema = z.strictObject({
  probe: checkName,
  path: z.string().max(1024),
  state: z.enum(["captured", "unstable", "failed"]),
  time: z.number().int(),
  status: z.number().int().min(100).max(599).optional(),
  /** SHA-256 of the answer's body */
  digest: hex64.optional(),
  /** the body's first bytes, for people reading the snapshot */
  excerpt: z.string().max(256).optional(),
  message: z.string().max(1024).optional(),
});

export type Capture = z.infer<typeof CaptureSchema>;
export type { DrillState };

export const ManifestSchema = z.strictObject({
  format: z.number().int().positive(),
  type: z.enum(["vm", "ct", "host"]),
  id: z.string(),
  time: z.number().int(),
  archives: z.array(ArchiveSchema),
  cryptMode: z.enum(["none", "encrypt"]),
  keyFingerprint: z.string().nullable(),
  /** guest configuration, so a restore recreates the guest (set by nodes) */
  config: z.record(z.string(), z.unknown()).optional(),
  /** the backup's log (set by nodes: mode, freeze, dirty chunks) */
  log: z.array(z.string().max(1024)).max(MAX_LOG_LINES).optional(),
  stats: z
    .strictObject({
      newBytes: z.number().nonnegative(),
      reusedBytes: z.number().nonnegative(),
      newChunks: z.number().int().nonnegative(),
      durationMs: z.number().nonnegative(),
    })
    .optional(),
  /** answers of the guest's `expect: snapshot` probes at backup time (format 2) */
  captures: z.array(CaptureSchema).max(16).optional(),
  /** may change after the backup: notes, verify state, drill result */
  unprotected: z.strictObject({
    notes: z.string().max(64 * 1024).optional(),
    verify: VerifyStateSchema.optional(),
    drill: DrillStateSchema.optional(),
  }),
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type ArchiveEntry = z.infer<typeof ArchiveSchema>;

/** The lowest format version that holds the manifest's members (docs/format.md §8). */
export function manifestFormat(m: Pick<Manifest, "captures" | "unprotected">): number {
  return m.captures !== undefined || m.unprotected.drill !== undefined ? 2 : 1;
}

/** Encodes the manifest at the lowest format version that holds it, so older readers keep reading what they can. */
export function encodeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify({ ...m, format: manifestFormat(m) }, null, 2) + "\n");
}

export function decodeManifest(buf: Buffer, what = "manifest"): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString("utf8"));
  } catch {
    throw corrupt(`${what} is not valid JSON.`);
  }
  const fmt = (raw as { format?: unknown } | null)?.format;
  if (typeof fmt === "number" && fmt > FORMAT_VERSION) {
    throw new GordeError(
      "unsupported",
      `${what} was written by a newer gorde (format version ${fmt}); this gorde reads up to version ${FORMAT_VERSION}.`,
    );
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const { path: at, message } = firstIssue(parsed.error);
    throw corrupt(`${what} is malformed: ${at || "(root)"}: ${message}.`);
  }
  if (parsed.data.format < manifestFormat(parsed.data)) throw corrupt(`${what} is malformed: it has members of format ${manifestFormat(parsed.data)} but says format ${parsed.data.format}.`);
  return parsed.data;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
