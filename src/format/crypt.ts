// Keys for client-side encryption (docs/format.md, "Encrypted blobs").
// One 32-byte master key, kept in a key file, yields two independent keys with
// HKDF-SHA256: one encrypts chunks (AES-256-GCM), the other names them (HMAC-SHA256),
// so a chunk's digest reveals nothing about its content to anyone without the key.
import { createHash, createHmac, hkdfSync } from "node:crypto";
import { GordeError } from "../errors.ts";

export const MASTER_KEY_SIZE = 32;

// HKDF info strings: part of the format, never change them (existing digests and
// ciphertexts depend on them).
const ENC_INFO = "gorde chunk encryption key v1";
const ID_INFO = "gorde chunk digest key v1";
const FINGERPRINT_LABEL = "gorde key fingerprint";
const MANIFEST_INFO = "gorde manifest mac key v1";

export interface ChunkKey {
  /** AES-256-GCM key for blob payloads. */
  readonly encKey: Buffer;
  /** HMAC-SHA256 key for chunk digests. */
  readonly idKey: Buffer;
  /** Identifies the key without revealing it: "aa:bb:…", 32 bytes. */
  readonly fingerprint: string;
}

export function deriveChunkKey(master: Uint8Array): ChunkKey {
  if (master.length !== MASTER_KEY_SIZE) {
    throw new GordeError("invalid", `a master key is ${MASTER_KEY_SIZE} bytes, not ${master.length}.`);
  }
  // The master key is uniformly random, so HKDF needs no salt.
  const encKey = Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), ENC_INFO, 32));
  const idKey = Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), ID_INFO, 32));
  const fingerprint = formatFingerprint(createHmac("sha256", idKey).update(FINGERPRINT_LABEL).digest());
  return { encKey, idKey, fingerprint };
}

/** A chunk's digest when encrypted: HMAC-SHA256(idKey, data), 32 bytes. */
export function keyedDigest(key: ChunkKey, data: Uint8Array): Buffer {
  return createHmac("sha256", key.idKey).update(data).digest();
}

/** The digest a chunk is stored under, in hex: SHA-256 of its bytes, or keyed when encrypted. */
export function chunkDigestHex(data: Uint8Array, key?: ChunkKey): string {
  return key ? keyedDigest(key, data).toString("hex") : createHash("sha256").update(data).digest("hex");
}

/** "aa:bb:…": lower-case hex pairs joined by colons. */
export function formatFingerprint(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** The key that signs an encrypted snapshot's manifest (HMAC-SHA256), derived apart from the chunk keys. */
export function deriveManifestKey(master: Uint8Array): Buffer {
  if (master.length !== MASTER_KEY_SIZE) {
    throw new GordeError("invalid", `a master key is ${MASTER_KEY_SIZE} bytes, not ${master.length}.`);
  }
  return Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), MANIFEST_INFO, 32));
}
