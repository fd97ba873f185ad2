// Blob codec: the byte layout of every chunk file (docs/format.md, "Blobs").
//   magic(8) || crc32(4, LE, of everything after it) || data
// Compressed blobs hold a zstd frame; a blob is stored plain when compression does not
// make it smaller. Encrypted layouts (magic BE/BX) are reserved for client-side keys.
import zlib from "node:zlib";
import { GordeError, corrupt } from "../errors.ts";
import { BLOB_HEADER_SIZE, FORMAT_VERSION, MAGIC, MAX_CHUNK_SIZE, magicKind } from "./magic.ts";

/** zstd level for chunks: level 1 runs ~1.5× faster than 3 here for ~5% more bytes. */
export const DEFAULT_ZSTD_LEVEL = 1;

export function encodeBlob(data: Uint8Array, level = DEFAULT_ZSTD_LEVEL): Buffer {
  let payload: Uint8Array = data;
  let magic: Buffer = MAGIC.blobPlain;
  if (level > 0 && data.length > 0) {
    const z = zlib.zstdCompressSync(data, {
      params: { [zlib.constants.ZSTD_c_compressionLevel]: level, [zlib.constants.ZSTD_c_checksumFlag]: 0 },
    });
    if (z.length < data.length) {
      payload = z;
      magic = MAGIC.blobZstd;
    }
  }
  const out = Buffer.allocUnsafe(BLOB_HEADER_SIZE + payload.length);
  magic.copy(out, 0);
  out.writeUInt32LE(zlib.crc32(payload), 8);
  out.set(payload, BLOB_HEADER_SIZE);
  return out;
}

export type BlobEncoding = "plain" | "zstd";

/** Checks magic and CRC; returns how the data is encoded and a view of it. */
export function parseBlob(blob: Uint8Array, what = "blob"): { encoding: BlobEncoding; payload: Buffer } {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < BLOB_HEADER_SIZE) throw corrupt(`${what} is truncated (${b.length} bytes).`);
  const m = magicKind(b);
  if (!m) throw corrupt(`${what} does not start with a gorde blob magic.`);
  if (m.kind === "BE" || m.kind === "BX") {
    throw new GordeError("unsupported", `${what} is encrypted and this operation has no key.`);
  }
  if (m.kind !== "BP" && m.kind !== "BZ") throw corrupt(`${what} has an unknown blob kind "${m.kind}".`);
  if (m.version < 1) throw corrupt(`${what} has an invalid format version 0.`);
  if (m.version > FORMAT_VERSION) {
    throw new GordeError(
      "unsupported",
      `${what} was written by a newer gorde (format version ${m.version}); this gorde reads up to version ${FORMAT_VERSION}.`,
    );
  }
  const payload = b.subarray(BLOB_HEADER_SIZE);
  if (zlib.crc32(payload) !== b.readUInt32LE(8)) throw corrupt(`${what} fails its CRC check.`);
  return { encoding: m.kind === "BZ" ? "zstd" : "plain", payload };
}

/** Decodes a blob to its plain data; `maxSize` bounds the output (a size that lies is refused). */
export function decodeBlob(blob: Uint8Array, what = "blob", maxSize = MAX_CHUNK_SIZE): Buffer {
  const { encoding, payload } = parseBlob(blob, what);
  if (encoding === "plain") {
    if (payload.length > maxSize) throw corrupt(`${what} is larger than ${maxSize} bytes.`);
    return payload;
  }
  try {
    return zlib.zstdDecompressSync(payload, { maxOutputLength: maxSize });
  } catch (err) {
    throw corrupt(`${what} does not decompress: ${(err as Error).message}.`, err);
  }
}
