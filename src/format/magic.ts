// DO NOT MODIFY the values in this file: they are the on-disk format of every
// existing datastore (docs/format.md, "Magic numbers"). A new kind of file gets a new
// magic; a changed layout gets a new format version.
//
// Every magic is 8 bytes: "GRDE", two ASCII letters naming the kind of file, and the
// kind's layout version as a big-endian u16. Each kind's version is pinned here: a
// kind whose layout changes gets a new version; the others keep theirs.

/**
 * The newest format version of any file this build writes (docs/format.md §8); it reads
 * every version up to this one. Version 2: the manifest's `captures` and
 * `unprotected.drill`; version 3: the manifest's checksum (`csum`) and, encrypted, its
 * signature (`mac`). A file is written at the lowest version that holds its content.
 */
export const FORMAT_VERSION = 3;
/**
 * The datastore marker's format: raised only when which chunks are referenced from where
 * changes (an older GC must then refuse the datastore), not for every new file version.
 */
export const DATASTORE_FORMAT = 1;

function magic(kind: string, version: number): Buffer {
  const b = Buffer.alloc(8);
  b.write("GRDE" + kind, 0, "latin1");
  b.writeUInt16BE(version, 6);
  return b;
}

export const MAGIC = {
  /** Blob (chunk or other small file), data stored as is. */
  blobPlain: magic("BP", 1),
  /** Blob, data compressed with zstd. */
  blobZstd: magic("BZ", 1),
  /** Blob, data encrypted with AES-256-GCM (not compressed). */
  blobEncrypted: magic("BE", 1),
  /** Blob, data compressed with zstd, then encrypted with AES-256-GCM. */
  blobEncryptedZstd: magic("BX", 1),
  /** Fixed index: block image, one digest per fixed-size chunk. */
  fixedIndex: magic("FI", 1),
  /** Dynamic index: (end offset, digest) per variable-size chunk. */
  dynamicIndex: magic("DI", 1),
  /** Start of the entry stream of a file archive. */
  treeEntries: magic("TE", 1),
} as const;

export type MagicName = keyof typeof MAGIC;

/** The newest layout version of a kind of binary file that this build can decode. */
export function kindVersion(kind: string): number {
  let v = 0;
  for (const m of Object.values(MAGIC)) if (m.toString("latin1", 4, 6) === kind) v = Math.max(v, m.readUInt16BE(6));
  return v;
}

/** The kind letters of a magic, or undefined when `bytes` is not a gorde magic. */
export function magicKind(bytes: Uint8Array): { kind: string; version: number } | undefined {
  if (bytes.length < 8) return undefined;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, 8);
  if (b.toString("latin1", 0, 4) !== "GRDE") return undefined;
  return { kind: b.toString("latin1", 4, 6), version: b.readUInt16BE(6) };
}

// Sizes and limits that are part of the format.
export const BLOB_HEADER_SIZE = 12; // magic(8) crc32(4)
export const ENCRYPTED_BLOB_HEADER_SIZE = 44; // magic(8) crc32(4) iv(16) tag(16)
export const INDEX_HEADER_SIZE = 64;
export const DIGEST_SIZE = 32;
export const DYNAMIC_ENTRY_SIZE = 40; // end offset u64 + digest
/** No chunk of any kind is larger than this; a size above it is a lie. */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
/** The largest chunk file (a blob: header and at most MAX_CHUNK_SIZE of data, stored plain when compression would grow it). */
export const MAX_CHUNK_FILE_SIZE = MAX_CHUNK_SIZE + ENCRYPTED_BLOB_HEADER_SIZE + 1024;
/** The largest index file a datastore takes (a fixed index of 8 Mi chunks, a 32 TiB disk at 4 MiB). */
export const MAX_INDEX_FILE_SIZE = 256 * 1024 * 1024;
/** The largest manifest (it arrives as a JSON request body of at most 1 MiB). */
export const MAX_MANIFEST_FILE_SIZE = 1024 * 1024;
/**
 * Chunk files live in .chunks/<first SHARD_HEX digits of the digest>/: 256 shard
 * directories. Creating a directory costs as much as writing a chunk here, and a
 * datastore of a few thousand chunks would otherwise create one per chunk.
 */
export const SHARD_HEX = 2;
export const MIN_FIXED_CHUNK_SIZE = 64 * 1024;
export const MAX_FIXED_CHUNK_SIZE = 4 * 1024 * 1024;
