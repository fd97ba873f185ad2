// The manifest (manifest.json) names a snapshot's archives and makes it finished:
// it is written last, after every index file is durable (docs/format.md, "Manifest").
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { GordeError, corrupt } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import { deriveManifestKey } from "./crypt.ts";
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
  /** SHA-256 of the protected part (format 3): everything but `format`, `csum`, `mac` and `unprotected` */
  csum: hex64.optional(),
  /** encrypted snapshots (format 3): HMAC-SHA256 of the protected part under a key derived from the master key */
  mac: hex64.optional(),
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
export function manifestFormat(m: Pick<Manifest, "captures" | "unprotected"> & Partial<Pick<Manifest, "csum" | "mac">>): number {
  if (m.csum !== undefined || m.mac !== undefined) return 3;
  return m.captures !== undefined || m.unprotected.drill !== undefined ? 2 : 1;
}

/** Encodes the manifest at the lowest format version that holds it, so older readers keep reading what they can. */
export function encodeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify({ ...m, format: manifestFormat(m) }, null, 2) + "\n");
}

/** JSON with every object's keys sorted and no spaces: one text for one value. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/** The bytes the checksum and the MAC cover: the manifest without its format, checksum, MAC and unprotected part. */
function protectedBytes(m: Manifest): Buffer {
  const { format: _f, csum: _c, mac: _m, unprotected: _u, ...rest } = m;
  return Buffer.from(canonicalJson(rest));
}

function macOf(m: Manifest, master: Uint8Array): string {
  return createHmac("sha256", deriveManifestKey(master)).update(protectedBytes(m)).digest("hex");
}

/**
 * A new snapshot's manifest as a backup writes it (format 3): the protected part checksummed,
 * and, when encrypted, signed under `master` (as PBS signs its manifests), so a change to a
 * stored guest config, an index checksum or a capture is found by every reader.
 */
export function sealManifest(m: Manifest, master?: Uint8Array): Manifest {
  const { csum: _c, mac: _m, ...bare } = m;
  const sealed: Manifest = { ...bare, csum: sha256Hex(protectedBytes(m)) };
  if (m.cryptMode === "encrypt") {
    if (!master) throw new GordeError("usage", "an encrypted manifest is signed with its key: no key was given.");
    sealed.mac = macOf(m, master);
  }
  return { ...sealed, format: manifestFormat(sealed) };
}

/**
 * Checks an encrypted manifest's signature under `master` (the key is checked against the
 * fingerprint before): a manifest of format 3 must carry a good one; older ones have none.
 */
export function checkManifestMac(m: Manifest, master: Uint8Array, what: string): void {
  if (m.cryptMode !== "encrypt" || m.format < 3) return;
  const want = Buffer.from(macOf(m, master), "hex");
  if (m.mac === undefined || !timingSafeEqual(Buffer.from(m.mac, "hex"), want)) {
    throw corrupt(`${what} is not signed by its key: its protected part was changed.`);
  }
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
  const m = parsed.data;
  if (m.format < manifestFormat(m)) throw corrupt(`${what} is malformed: it has members of format ${manifestFormat(m)} but says format ${m.format}.`);
  if (m.format >= 3) {
    if (m.csum === undefined) throw corrupt(`${what} is malformed: a manifest of format ${m.format} has a checksum (csum).`);
    if ((m.mac !== undefined) !== (m.cryptMode === "encrypt")) throw corrupt(`${what} is malformed: ${m.cryptMode === "encrypt" ? "an encrypted manifest of format 3 is signed (mac)" : "a manifest that is not encrypted has no signature (mac)"}.`);
    if (sha256Hex(protectedBytes(m)) !== m.csum) throw corrupt(`${what} does not match its checksum: its protected part was changed.`);
  }
  return m;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
