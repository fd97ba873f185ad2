// Key files (docs/format.md, "Key files"): the 32-byte master key of client-side
// encryption, wrapped with AES-256-GCM under a key derived from a passphrase with
// scrypt. JSON, mode 0600, never overwritten by create or import. The fingerprint is
// stored in clear so a key can be identified without its passphrase.
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { z } from "zod";
import { GordeError, invalid } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import { MASTER_KEY_SIZE, deriveChunkKey, type ChunkKey } from "../format/crypt.ts";
import { fsyncDir } from "../sys/atomic-write.ts";

export interface ScryptParams {
  readonly n: number;
  readonly r: number;
  readonly p: number;
}

/** One derivation takes ~190 ms and 64 MiB here; stored per file, so it can rise later. */
export const DEFAULT_SCRYPT: ScryptParams = { n: 2 ** 16, r: 8, p: 1 };

export interface KeyFileOptions {
  /** KDF cost of the file written; tests pass a cheap one. */
  readonly scrypt?: ScryptParams;
}

/** No key file is this large; a larger file is not read. */
const MAX_KEY_FILE_SIZE = 64 * 1024;
const SALT_SIZE = 16;
const WRAP_IV_SIZE = 12;
const TAG_SIZE = 16;

const hex = (bytes: number) =>
  z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`), `expected ${bytes} bytes as ${bytes * 2} lower-case hex digits`);

const KdfSchema = z
  .strictObject({
    name: z.literal("scrypt"),
    n: z
      .number()
      .int()
      .min(2 ** 10)
      .max(2 ** 22)
      .refine((n) => (n & (n - 1)) === 0, "expected a power of two"),
    r: z.number().int().min(1).max(32),
    p: z.number().int().min(1).max(16),
    salt: hex(SALT_SIZE),
  })
  // Bounds the memory a (possibly tampered) file can make a derivation allocate.
  .refine((k) => scryptMemory(k) <= 1024 * 1024 * 1024, "needs more than 1 GiB of memory");

const KeyFileSchema = z.strictObject({
  format: z.literal(1),
  created: z.iso.datetime(),
  fingerprint: z.string().regex(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/, "expected 32 hex pairs joined by colons"),
  kdf: KdfSchema,
  cipher: z.literal("aes-256-gcm"),
  iv: hex(WRAP_IV_SIZE),
  tag: hex(TAG_SIZE),
  wrappedKey: hex(MASTER_KEY_SIZE),
});

type KeyFileData = z.infer<typeof KeyFileSchema>;
type Wrapped = Pick<KeyFileData, "kdf" | "cipher" | "iv" | "tag" | "wrappedKey">;

function scryptMemory(k: ScryptParams): number {
  return 128 * k.r * (k.n + k.p + 2); // what OpenSSL allocates
}

function checkPassphrase(passphrase: string): void {
  if (passphrase.length === 0) throw new GordeError("usage", "the passphrase is empty; a key file needs a non-empty passphrase.");
}

function deriveWrapKey(passphrase: string, kdf: KeyFileData["kdf"]): Promise<Buffer> {
  // NFC: the same passphrase typed on another system gives the same bytes.
  const secret = Buffer.from(passphrase.normalize("NFC"), "utf8");
  return new Promise((resolve, reject) => {
    scrypt(
      secret,
      Buffer.from(kdf.salt, "hex"),
      32,
      { N: kdf.n, r: kdf.r, p: kdf.p, maxmem: scryptMemory(kdf) + 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

async function wrap(master: Buffer, passphrase: string, cost: ScryptParams): Promise<Wrapped> {
  const kdf = { name: "scrypt" as const, n: cost.n, r: cost.r, p: cost.p, salt: randomBytes(SALT_SIZE).toString("hex") };
  const parsed = KdfSchema.safeParse(kdf);
  if (!parsed.success) throw new GordeError("usage", `scrypt parameters n=${cost.n} r=${cost.r} p=${cost.p} are out of range.`);
  const iv = randomBytes(WRAP_IV_SIZE);
  const cipher = createCipheriv("aes-256-gcm", await deriveWrapKey(passphrase, kdf), iv, { authTagLength: TAG_SIZE });
  const wrapped = Buffer.concat([cipher.update(master), cipher.final()]);
  return {
    kdf,
    cipher: "aes-256-gcm",
    iv: iv.toString("hex"),
    tag: cipher.getAuthTag().toString("hex"),
    wrappedKey: wrapped.toString("hex"),
  };
}

/** The master key and the chunk key of a key file; the clear fingerprint must match. */
async function openKey(data: KeyFileData, passphrase: string, what: string): Promise<{ master: Buffer; key: ChunkKey }> {
  checkPassphrase(passphrase);
  const wrapKey = await deriveWrapKey(passphrase, data.kdf);
  const decipher = createDecipheriv("aes-256-gcm", wrapKey, Buffer.from(data.iv, "hex"), { authTagLength: TAG_SIZE });
  decipher.setAuthTag(Buffer.from(data.tag, "hex"));
  let master: Buffer;
  try {
    master = Buffer.concat([decipher.update(Buffer.from(data.wrappedKey, "hex")), decipher.final()]);
  } catch (err) {
    // A wrong passphrase and a damaged file look the same; the passphrase is far likelier.
    throw new GordeError("usage", `the passphrase does not open ${what} (a wrong passphrase, or the file was changed).`, { cause: err });
  }
  const key = deriveChunkKey(master);
  if (key.fingerprint !== data.fingerprint) throw invalid(`${what} records a fingerprint that does not match its key.`);
  return { master, key };
}

export function parseKeyFile(content: Uint8Array, what = "key file"): KeyFileData {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(content).toString("utf8"));
  } catch (err) {
    throw invalid(`${what} is not a gorde key file (not JSON).`, err);
  }
  const parsed = KeyFileSchema.safeParse(json);
  if (!parsed.success) {
    const { path: at, message } = firstIssue(parsed.error);
    throw invalid(`${what} is malformed (${at ? `member ${at}: ${message}` : message}).`);
  }
  return parsed.data;
}

async function readKeyFile(file: string): Promise<{ content: Buffer; data: KeyFileData }> {
  const what = `key file ${file}`;
  let fh;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new GordeError("not-found", `${what} does not exist.`, { cause: err });
    throw new GordeError("io", `${what} cannot be opened: ${(err as Error).message}.`, { cause: err });
  }
  let content: Buffer;
  try {
    const buf = Buffer.alloc(MAX_KEY_FILE_SIZE + 1);
    let len = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > MAX_KEY_FILE_SIZE) throw invalid(`${what} is larger than ${MAX_KEY_FILE_SIZE} bytes: not a gorde key file.`);
    }
    content = buf.subarray(0, len);
  } catch (err) {
    if (err instanceof GordeError) throw err;
    throw new GordeError("io", `${what} cannot be read: ${(err as Error).message}.`, { cause: err });
  } finally {
    await fh.close();
  }
  return { content, data: parseKeyFile(content, what) };
}

function serialize(data: KeyFileData): Buffer {
  return Buffer.from(JSON.stringify(data, null, 2) + "\n");
}

/**
 * Writes `content` to a temp file (mode 0600, fsynced), then puts it in place: with
 * `replace`, by rename; otherwise by link(2), which fails when `file` exists, so a key
 * file is never overwritten and never seen half-written.
 */
async function writeKeyFileAtomic(file: string, content: Uint8Array, replace: boolean): Promise<void> {
  try {
    await writeAndPlace(file, content, replace);
  } catch (err) {
    if (err instanceof GordeError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new GordeError("not-found", `the directory of key file ${file} does not exist.`, { cause: err });
    throw new GordeError("io", `key file ${file} cannot be written (${code ?? (err as Error).message}).`, { cause: err });
  }
}

async function writeAndPlace(file: string, content: Uint8Array, replace: boolean): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fh = await fsp.open(tmp, "wx", 0o600);
  try {
    try {
      await fh.write(content, 0, content.length, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (replace) {
      await fsp.rename(tmp, file);
    } else {
      try {
        await fsp.link(tmp, file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") {
          throw new GordeError("exists", `${file} already exists; a key file is never overwritten.`, { cause: err });
        }
        throw err;
      }
    }
  } finally {
    await fsp.rm(tmp, { force: true });
  }
  await fsyncDir(path.dirname(file));
}

async function refuseExisting(file: string): Promise<void> {
  // Checked early so an existing file is reported before the slow KDF; the link in
  // writeKeyFileAtomic is what guarantees it.
  try {
    await fsp.lstat(file);
  } catch {
    return;
  }
  throw new GordeError("exists", `${file} already exists; a key file is never overwritten.`);
}

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

/** Creates a new key file with a random master key; refuses to overwrite. */
export async function createKeyFile(file: string, passphrase: string, options: KeyFileOptions = {}): Promise<{ fingerprint: string }> {
  checkPassphrase(passphrase);
  await refuseExisting(file);
  const master = randomBytes(MASTER_KEY_SIZE);
  const { fingerprint } = deriveChunkKey(master);
  const data: KeyFileData = { format: 1, created: now(), fingerprint, ...(await wrap(master, passphrase, options.scrypt ?? DEFAULT_SCRYPT)) };
  await writeKeyFileAtomic(file, serialize(data), false);
  return { fingerprint };
}

/** Opens a key file with its passphrase. */
export async function loadKey(file: string, passphrase: string): Promise<ChunkKey> {
  return (await loadMasterKey(file, passphrase)).chunkKey;
}

/** The master key (what worker threads derive their keys from) and its derived keys. */
export async function loadMasterKey(file: string, passphrase: string): Promise<{ master: Buffer; chunkKey: ChunkKey }> {
  const { data } = await readKeyFile(file);
  const { master, key } = await openKey(data, passphrase, `key file ${file}`);
  return { master: Buffer.from(master), chunkKey: key };
}

/** Re-wraps the master key under a new passphrase (new salt, current KDF cost); the key itself stays. */
export async function changePassphrase(file: string, oldPassphrase: string, newPassphrase: string, options: KeyFileOptions = {}): Promise<void> {
  checkPassphrase(newPassphrase);
  const { data } = await readKeyFile(file);
  const { master } = await openKey(data, oldPassphrase, `key file ${file}`);
  const next: KeyFileData = { ...data, ...(await wrap(master, newPassphrase, options.scrypt ?? DEFAULT_SCRYPT)) };
  await writeKeyFileAtomic(file, serialize(next), true);
}

/** What can be known of a key file without its passphrase. */
export async function keyInfo(file: string): Promise<{ fingerprint: string; created: string; kdf: string }> {
  const { data } = await readKeyFile(file);
  const { n, r, p } = data.kdf;
  return { fingerprint: data.fingerprint, created: data.created, kdf: `scrypt (n=${n}, r=${r}, p=${p})` };
}

/** Writes a key file from its content (e.g. typed back from a paper key); refuses to overwrite. */
export async function importKeyFile(file: string, content: Uint8Array): Promise<{ fingerprint: string }> {
  const data = parseKeyFile(content, "the imported key file");
  await writeKeyFileAtomic(file, content, false);
  return { fingerprint: data.fingerprint };
}

// Paper key: the key file content, still protected by its passphrase, as lines a
// human can type back in:
//   -----BEGIN GORDE KEY FILE-----
//   01: KRUG S4ZA NFZS AYJA ORSX G5BA 6ZTG 6ZLS 3f9a
//   …
//   -----END GORDE KEY FILE-----
// Each line holds 20 bytes as 32 base32 characters (RFC 4648, no padding) and ends in
// the first 2 bytes of SHA-256("<line number>:<its characters>") as hex, so a typo is
// reported with its line number. The bytes are: 0x01 (this layout), the key file
// deflated (raw deflate), the first 4 bytes of SHA-256 of the key file.

const PAPER_BEGIN = "-----BEGIN GORDE KEY FILE-----";
const PAPER_END = "-----END GORDE KEY FILE-----";
const PAPER_LAYOUT = 1;
const PAPER_LINE_BYTES = 20;
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(bytes: Uint8Array): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xfff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31]!;
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31]!;
  return out;
}

function unbase32(chars: string): Buffer {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const c of chars) {
    acc = ((acc << 5) | BASE32.indexOf(c)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function lineChecksum(n: number, chars: string): string {
  return createHash("sha256").update(`${n}:${chars}`).digest().subarray(0, 2).toString("hex");
}

function sha4(content: Uint8Array): Buffer {
  return createHash("sha256").update(content).digest().subarray(0, 4);
}

/** The key file as printable text to keep on paper (it still needs the passphrase). */
export function paperKey(keyFileContent: Buffer): string {
  const data = parseKeyFile(keyFileContent, "the key file");
  const body = zlib.deflateRawSync(keyFileContent, { level: 9 });
  const bytes = Buffer.concat([Buffer.from([PAPER_LAYOUT]), body, sha4(keyFileContent)]);
  const lines = [
    "gorde key file",
    `fingerprint: ${data.fingerprint}`,
    `created: ${data.created}`,
    "The key is still protected by its passphrase. To restore the file, type the lines",
    "between the markers into a text file and run: gorde key import <text file> <key file>",
    "",
    PAPER_BEGIN,
  ];
  const count = Math.ceil(bytes.length / PAPER_LINE_BYTES);
  const width = Math.max(2, String(count).length);
  for (let i = 0; i < count; i++) {
    const chars = base32(bytes.subarray(i * PAPER_LINE_BYTES, (i + 1) * PAPER_LINE_BYTES));
    const n = i + 1;
    const groups = chars.match(/.{1,4}/g) ?? [];
    lines.push(`${String(n).padStart(width, "0")}: ${groups.join(" ")} ${lineChecksum(n, chars)}`);
  }
  lines.push(PAPER_END, "");
  return lines.join("\n");
}

/** Turns a typed-back paper key into the key file content; a typo is reported with its line. */
export function parsePaperKey(text: string): Buffer {
  const all = text.split(/\r?\n/).map((l) => l.trim());
  const begin = all.indexOf(PAPER_BEGIN);
  if (begin < 0) throw invalid(`the paper key has no line "${PAPER_BEGIN}".`);
  const end = all.indexOf(PAPER_END, begin + 1);
  if (end < 0) throw invalid(`the paper key has no line "${PAPER_END}" after its beginning.`);
  const lines = all.slice(begin + 1, end).filter((l) => l !== "");
  if (lines.length === 0) throw invalid("the paper key has no lines between its markers.");
  let chars = "";
  lines.forEach((line, i) => {
    const n = i + 1;
    const m = /^(\d+)\s*:?\s+(.*\S)\s+(\S+)$/.exec(line);
    if (!m) throw invalid(`line ${n} of the paper key is not "<number>: <characters> <checksum>".`);
    if (Number(m[1]) !== n) throw invalid(`line ${n} of the paper key is numbered ${m[1]}: a line is missing or out of order.`);
    const lineChars = m[2]!.replace(/\s+/g, "").toUpperCase();
    const bad = [...lineChars].find((c) => !BASE32.includes(c));
    if (bad !== undefined) throw invalid(`line ${n} of the paper key has "${bad}", which is not a base32 character (A-Z, 2-7).`);
    if (lineChecksum(n, lineChars) !== m[3]!.toLowerCase()) {
      throw invalid(`line ${n} of the paper key does not match its checksum; check it for a typo.`);
    }
    chars += lineChars;
  });
  const bytes = unbase32(chars);
  const fail = (): GordeError => invalid("the paper key does not decode to a key file; a line may be missing at its end.");
  if (bytes.length < 6 || bytes[0] !== PAPER_LAYOUT) throw fail();
  let content: Buffer;
  try {
    content = zlib.inflateRawSync(bytes.subarray(1, -4), { maxOutputLength: MAX_KEY_FILE_SIZE });
  } catch {
    throw fail();
  }
  if (!sha4(content).equals(bytes.subarray(-4))) throw fail();
  parseKeyFile(content, "the key file on the paper key");
  return content;
}
