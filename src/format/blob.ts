// Blob codec: the byte layout of every chunk file (docs/format.md, "Blobs" and
// "Encrypted blobs").
//   plain kinds (BP, BZ):     magic(8) || crc32(4, LE, of everything after it) || data
//   encrypted kinds (BE, BX): magic(8) || crc32(4) || iv(16) || tag(16) || ciphertext
// Compressed blobs hold a zstd frame; a blob is stored uncompressed when compression
// does not make it smaller. Encrypted blobs are AES-256-GCM with the magic as
// additional authenticated data; their CRC lets the server check them without the key.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import zlib from "node:zlib";
import { GordeError, corrupt } from "../errors.ts";
import type { ChunkKey } from "./crypt.ts";
import { BLOB_HEADER_SIZE, ENCRYPTED_BLOB_HEADER_SIZE, MAGIC, MAX_CHUNK_SIZE, kindVersion, magicKind } from "./magic.ts";

/** zstd level for chunks: level 1 runs ~1.5× faster than 3 here for ~5% more bytes. */
export const DEFAULT_ZSTD_LEVEL = 1;

const IV_SIZE = 16;
const TAG_SIZE = 16;

function compress(data: Uint8Array, level: number): Uint8Array | undefined {
  if (level <= 0 || data.length === 0) return undefined;
  const z = zlib.zstdCompressSync(data, {
    params: { [zlib.constants.ZSTD_c_compressionLevel]: level, [zlib.constants.ZSTD_c_checksumFlag]: 0 },
  });
  return z.length < data.length ? z : undefined;
}

/** Encodes `data` as a blob; with `key`, compressed (when smaller) then encrypted. */
export function encodeBlob(data: Uint8Array, level = DEFAULT_ZSTD_LEVEL, key?: ChunkKey): Buffer {
  const z = compress(data, level);
  const payload = z ?? data;
  if (key) return encrypt(payload, z ? MAGIC.blobEncryptedZstd : MAGIC.blobEncrypted, key);
  const out = Buffer.allocUnsafe(BLOB_HEADER_SIZE + payload.length);
  (z ? MAGIC.blobZstd : MAGIC.blobPlain).copy(out, 0);
  out.writeUInt32LE(zlib.crc32(payload), 8);
  out.set(payload, BLOB_HEADER_SIZE);
  return out;
}

function encrypt(payload: Uint8Array, magic: Buffer, key: ChunkKey): Buffer {
  // A random IV per blob: one key encrypts very many chunks, so a counter would need
  // shared state between clients; 2^-128 collision odds need none.
  const iv = randomBytes(IV_SIZE);
  const cipher = createCipheriv("aes-256-gcm", key.encKey, iv, { authTagLength: TAG_SIZE });
  cipher.setAAD(magic);
  const ct = cipher.update(payload);
  const rest = cipher.final(); // empty for GCM
  const out = Buffer.allocUnsafe(ENCRYPTED_BLOB_HEADER_SIZE + ct.length + rest.length);
  magic.copy(out, 0);
  iv.copy(out, BLOB_HEADER_SIZE);
  cipher.getAuthTag().copy(out, BLOB_HEADER_SIZE + IV_SIZE);
  ct.copy(out, ENCRYPTED_BLOB_HEADER_SIZE);
  rest.copy(out, ENCRYPTED_BLOB_HEADER_SIZE + ct.length);
  out.writeUInt32LE(zlib.crc32(out.subarray(BLOB_HEADER_SIZE)), 8);
  return out;
}

type BlobKind = "BP" | "BZ" | "BE" | "BX";

/** Magic, version, length and CRC; `withEncrypted` false refuses BE/BX before the CRC. */
function readHeader(blob: Uint8Array, what: string, withEncrypted: boolean): { kind: BlobKind; b: Buffer } {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < BLOB_HEADER_SIZE) throw corrupt(`${what} is truncated (${b.length} bytes).`);
  const m = magicKind(b);
  if (!m) throw corrupt(`${what} does not start with a gorde blob magic.`);
  const encrypted = m.kind === "BE" || m.kind === "BX";
  if (encrypted && !withEncrypted) {
    throw new GordeError("unsupported", `${what} is encrypted and this operation has no key.`);
  }
  if (!encrypted && m.kind !== "BP" && m.kind !== "BZ") throw corrupt(`${what} has an unknown blob kind "${m.kind}".`);
  if (m.version < 1) throw corrupt(`${what} has an invalid format version 0.`);
  if (m.version > kindVersion(m.kind)) {
    throw new GordeError(
      "unsupported",
      `${what} was written by a newer gorde (format version ${m.version}); this gorde reads up to version ${kindVersion(m.kind)}.`,
    );
  }
  if (encrypted && b.length < ENCRYPTED_BLOB_HEADER_SIZE) throw corrupt(`${what} is truncated (${b.length} bytes).`);
  if (zlib.crc32(b.subarray(BLOB_HEADER_SIZE)) !== b.readUInt32LE(8)) throw corrupt(`${what} fails its CRC check.`);
  return { kind: m.kind as BlobKind, b };
}

const DECODE_BUFFER = 256 * 1024 + 1024;

export type BlobEncoding = "plain" | "zstd";

/** Checks magic and CRC of an unencrypted blob; returns how the data is encoded and a view of it. */
export function parseBlob(blob: Uint8Array, what = "blob"): { encoding: BlobEncoding; payload: Buffer } {
  const { kind, b } = readHeader(blob, what, false);
  return { encoding: kind === "BZ" ? "zstd" : "plain", payload: b.subarray(BLOB_HEADER_SIZE) };
}

/**
 * Checks magic, version and CRC of any blob, encrypted or not, without a key: what a
 * datastore can check of a chunk it cannot read.
 */
export function checkBlob(blob: Uint8Array, what = "blob"): { encrypted: boolean; compressed: boolean } {
  const { kind } = readHeader(blob, what, true);
  return { encrypted: kind === "BE" || kind === "BX", compressed: kind === "BZ" || kind === "BX" };
}

/**
 * Decodes a blob to its plain data; `maxSize` bounds the output (a size that lies is
 * refused). With `key`, encrypted blobs are decrypted and unencrypted ones are read as
 * they are: whoever reads by keyed digest still proves the data came from a key holder,
 * since only a key holder can compute the name it is checked against.
 */
export function decodeBlob(blob: Uint8Array, what = "blob", maxSize = MAX_CHUNK_SIZE, key?: ChunkKey): Buffer {
  const { kind, b } = readHeader(blob, what, key !== undefined);
  let payload: Buffer;
  if (kind === "BE" || kind === "BX") {
    // A compressed payload is smaller than its data, so no valid ciphertext exceeds maxSize.
    if (b.length - ENCRYPTED_BLOB_HEADER_SIZE > maxSize) throw corrupt(`${what} is larger than ${maxSize} bytes.`);
    payload = decrypt(b, what, key!);
  } else {
    payload = b.subarray(BLOB_HEADER_SIZE);
  }
  if (kind === "BP" || kind === "BE") {
    if (payload.length > maxSize) throw corrupt(`${what} is larger than ${maxSize} bytes.`);
    return payload;
  }
  try {
    // One output buffer a little larger than an image chunk: zlib's default 16 KiB pieces
    // cost a concat (and its garbage) for every chunk.
    return zlib.zstdDecompressSync(payload, { maxOutputLength: maxSize, chunkSize: Math.max(64, Math.min(maxSize + 1, DECODE_BUFFER)) });
  } catch (err) {
    throw corrupt(`${what} does not decompress: ${(err as Error).message}.`, err);
  }
}

function decrypt(b: Buffer, what: string, key: ChunkKey): Buffer {
  const iv = b.subarray(BLOB_HEADER_SIZE, BLOB_HEADER_SIZE + IV_SIZE);
  const tag = b.subarray(BLOB_HEADER_SIZE + IV_SIZE, ENCRYPTED_BLOB_HEADER_SIZE);
  const decipher = createDecipheriv("aes-256-gcm", key.encKey, iv, { authTagLength: TAG_SIZE });
  decipher.setAAD(b.subarray(0, 8));
  decipher.setAuthTag(tag);
  const data = decipher.update(b.subarray(ENCRYPTED_BLOB_HEADER_SIZE));
  try {
    decipher.final();
  } catch (err) {
    throw corrupt(`${what} cannot be decrypted with this key (wrong key or damaged data).`, err);
  }
  return data;
}
