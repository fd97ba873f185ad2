// The records of users, tokens and ACLs as their state files hold them, their checks, and
// the state files' reading and writing (mode 0600, atomic): what AuthStore keeps.
import { createHash, randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import * as fsp from "node:fs/promises";
import { z } from "zod";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { GordeError } from "../errors.ts";
import { firstIssue } from "../schema-issue.ts";
import { NAME_RE, ROLE_NAMES, isValidAuthId, parseAclPath } from "./auth-roles.ts";

export const MIN_PASSWORD = 5;
export const MAX_SECRET = 1024;
export const MAX_COMMENT = 256;
export const CACHE_MAX = 4096;
export const DEFAULT_SCRYPT = { n: 2 ** 15, r: 8, p: 1 };
export const SCRYPT_KEYLEN = 32;
export const TOKEN_SECRET_BYTES = 32;

// ---- file schemas

export const Name = z.string().regex(NAME_RE);
export const Comment = z
  .string()
  .max(MAX_COMMENT)
  // eslint-disable-next-line no-control-regex
  .regex(/^[^\x00-\x1f\x7f]*$/, "must be one line without control characters");
export const Expire = z.int().min(1).max(Number.MAX_SAFE_INTEGER);
export const Base64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, "must be base64");

export const PasswordHashSchema = z
  .strictObject({
    kdf: z.literal("scrypt"),
    n: z.int().min(2).max(2 ** 20),
    r: z.int().min(1).max(32),
    p: z.int().min(1).max(16),
    salt: Base64,
    hash: Base64,
  })
  .refine((h) => (h.n & (h.n - 1)) === 0, "n must be a power of two")
  // bounds the memory a tampered file can make verification allocate
  .refine((h) => 128 * h.n * h.r <= 256 * 2 ** 20, "n and r need more than 256 MiB");
export type PasswordHash = z.infer<typeof PasswordHashSchema>;

export const UserRecordSchema = z.strictObject({
  name: Name,
  password: PasswordHashSchema,
  comment: Comment.optional(),
  expire: Expire.optional(),
  enable: z.boolean(),
});
export type UserRecord = z.infer<typeof UserRecordSchema>;

export const TokenRecordSchema = z.strictObject({
  tokenId: z.string().refine((s) => s.includes("!") && isValidAuthId(s), "must be <user>!<token name>"),
  /** hex SHA-256 of the secret */
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  comment: Comment.optional(),
  expire: Expire.optional(),
  enable: z.boolean(),
});
export type TokenRecord = z.infer<typeof TokenRecordSchema>;

export const AclEntrySchema = z.strictObject({
  path: z.string().refine((s) => {
    try {
      parseAclPath(s);
      return true;
    } catch {
      return false;
    }
  }, "must be /, /datastore or /datastore/<store>[/<namespace>...]"),
  authId: z.string().refine(isValidAuthId, "must be <user> or <user>!<token name>"),
  role: z.enum(ROLE_NAMES),
  propagate: z.boolean(),
});

export const UsersFileSchema = z.strictObject({ version: z.literal(1), users: z.array(UserRecordSchema) });
export const TokensFileSchema = z.strictObject({ version: z.literal(1), tokens: z.array(TokenRecordSchema) });
export const AclFileSchema = z.strictObject({ version: z.literal(1), acl: z.array(AclEntrySchema) });

// ---- helpers

export function usage(message: string): GordeError {
  return new GordeError("usage", message);
}

export function notFound(message: string): GordeError {
  return new GordeError("not-found", message);
}

export function checkUserName(name: string): void {
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw usage(`"${String(name)}" is not a valid user name: use letters, digits, '.', '_' and '-' (not first), at most 64.`);
  }
}

export function checkPassword(password: string): void {
  if (typeof password !== "string" || password.length < MIN_PASSWORD) {
    throw usage(`the password must have at least ${MIN_PASSWORD} characters.`);
  }
  if (Buffer.byteLength(password) > MAX_SECRET) throw usage(`the password is longer than ${MAX_SECRET} bytes.`);
}

export function checkComment(comment: string | undefined): void {
  if (comment !== undefined && !Comment.safeParse(comment).success) {
    throw usage(`the comment must be one line of at most ${MAX_COMMENT} characters.`);
  }
}

/** 0 means never, as in PBS. */
export function checkExpire(expire: number | undefined): void {
  if (expire !== undefined && !(Number.isSafeInteger(expire) && expire >= 0)) {
    throw usage(`expire must be a unix time in seconds, or 0 for never.`);
  }
}

export function scryptAsync(password: string, salt: Buffer, cost: { n: number; r: number; p: number }, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const maxmem = 128 * cost.n * cost.r * 2 + 2 ** 20;
    scrypt(password, salt, keylen, { N: cost.n, r: cost.r, p: cost.p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

export async function hashPassword(password: string, cost: { n: number; r: number; p: number }): Promise<PasswordHash> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, cost, SCRYPT_KEYLEN);
  return { kdf: "scrypt", n: cost.n, r: cost.r, p: cost.p, salt: salt.toString("base64"), hash: hash.toString("base64") };
}

export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const expected = Buffer.from(stored.hash, "base64");
  const got = await scryptAsync(password, Buffer.from(stored.salt, "base64"), stored, expected.length);
  return timingSafeEqual(got, expected);
}

// Token secrets are 256 random bits: a fast hash is as safe as a slow one for them.
export function hashToken(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** A state file, written atomically with mode 0600. */
export async function writeState(file: string, data: unknown): Promise<void> {
  try {
    await writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
  } catch (err) {
    throw new GordeError("io", `cannot write ${file}: ${(err as Error).message}.`, { cause: err });
  }
}

export async function readState<T>(file: string, schema: z.ZodType<T>, what: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new GordeError("io", `cannot read ${file}: ${(err as Error).message}.`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new GordeError("invalid", `${file} is not a valid ${what} file: it is not JSON.`, { cause: err });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const { path: at, message } = firstIssue(parsed.error);
    throw new GordeError("invalid", `${file} is not a valid ${what} file: ${at || "(root)"}: ${message}.`);
  }
  return parsed.data;
}


export function userOf(authId: string): string {
  const bang = authId.indexOf("!");
  return bang < 0 ? authId : authId.slice(0, bang);
}

export function belongsTo(authId: string, user: string): boolean {
  return authId === user || authId.startsWith(`${user}!`);
}

export function aclKey(e: { path: string; authId: string; role: string }): string {
  return `${e.path}\0${e.authId}\0${e.role}`;
}


/** A user or token record with `patch` applied: comment "" and expire 0 clear those fields. */
export function patchAccount<T extends { comment?: string; expire?: number; enable?: boolean }>(record: T, patch: { comment?: string; expire?: number; enable?: boolean }): T {
  const rec = { ...record };
  if (patch.comment !== undefined) {
    if (patch.comment) rec.comment = patch.comment;
    else delete rec.comment;
  }
  if (patch.expire !== undefined) {
    if (patch.expire) rec.expire = patch.expire;
    else delete rec.expire;
  }
  if (patch.enable !== undefined) rec.enable = patch.enable;
  return rec;
}

