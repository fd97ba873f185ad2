// Block images: fixed-size chunks in, a fixed index out; and back to a sparse file.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { GordeError } from "../errors.ts";
import type { ChunkStore } from "../datastore/chunk-store.ts";
import { type FixedIndex, fixedChunkCount } from "../format/fixed-index.ts";
import { DIGEST_SIZE } from "../format/magic.ts";
import { sourceSize } from "./block-source.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import { ChunkWriter } from "./chunk-writer.ts";
import type { ProgressFn } from "./progress.ts";
import { zeroDigestHex } from "../format/zero-chunk.ts";

/** Default chunk size for block images; bench/chunk-size.md has the measurements behind it. */
export const DEFAULT_IMAGE_CHUNK_SIZE = 256 * 1024;

export interface ImageBackupOptions {
  store: ChunkStore;
  pool: ChunkPool;
  writer: ChunkWriter;
  chunkSize: number;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export async function backupImage(source: string, opts: ImageBackupOptions): Promise<FixedIndex> {
  const fh = await openSource(source);
  try {
    const size = sourceSize(source, await fh.stat());
    const { chunkSize, writer } = opts;
    const count = fixedChunkCount(size, chunkSize);
    const digests = Buffer.alloc(count * DIGEST_SIZE);
    for (let i = 0; i < count; i++) {
      opts.signal?.throwIfAborted();
      const len = Math.min(chunkSize, size - i * chunkSize);
      // Each chunk gets its own ArrayBuffer so it can move to a worker without a copy.
      const buf = Buffer.from(new ArrayBuffer(len));
      await readFully(fh, buf, i * chunkSize, source);
      await writer.add(buf, (hex) => digests.write(hex, i * DIGEST_SIZE, "hex"));
      opts.progress?.({ done: (i + 1) * chunkSize > size ? size : (i + 1) * chunkSize, total: size, stats: writer.stats });
    }
    await writer.drain();
    return { ctime: Math.floor(Date.now() / 1000), size, chunkSize, digests };
  } finally {
    await fh.close();
  }
}

async function openSource(source: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(source, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new GordeError("not-found", `${source} does not exist.`);
    if (code === "EISDIR") throw new GordeError("usage", `${source} is a directory; use <name>.tree= for directories.`);
    throw err;
  }
}

async function readFully(fh: fsp.FileHandle, buf: Buffer, pos: number, what: string): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) throw new GordeError("io", `${what} shrank while it was being read.`);
    off += bytesRead;
  }
}

export interface ImageRestoreOptions {
  store: ChunkStore;
  pool: ChunkPool;
  signal?: AbortSignal;
  progress?: ProgressFn;
  inflight?: number;
}

/**
 * Writes the image to `target`: a new sparse file (written beside it, renamed when
 * complete) or an existing block device. Every chunk is checked against its digest.
 */
export async function restoreImage(index: FixedIndex, target: string, opts: ImageRestoreOptions): Promise<void> {
  let isDevice = false;
  try {
    isDevice = fs.statSync(target).isBlockDevice();
  } catch {
    // a new file
  }
  const out = isDevice ? target : path.join(path.dirname(target), `.${path.basename(target)}.gorde-${randomBytes(4).toString("hex")}`);
  const fh = await fsp.open(out, isDevice ? "r+" : "wx", 0o600);
  let ok = false;
  try {
    if (!isDevice) await fh.truncate(index.size);
    const count = fixedChunkCount(index.size, index.chunkSize);
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < count) {
        opts.signal?.throwIfAborted();
        const i = next++;
        const hex = index.digests.toString("hex", i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
        const len = Math.min(index.chunkSize, index.size - i * index.chunkSize);
        const pos = i * index.chunkSize;
        if (hex === zeroDigestHex(len)) {
          if (isDevice) await fh.write(Buffer.alloc(len), 0, len, pos);
        } else {
          const data = await opts.pool.decode(await opts.store.read(hex), hex);
          if (data.length !== len) throw new GordeError("corrupt", `chunk ${hex} has ${data.length} bytes where the index expects ${len}.`);
          await fh.write(data, 0, len, pos);
        }
        done += len;
        opts.progress?.({ done, total: index.size });
      }
    };
    await Promise.all(Array.from({ length: opts.inflight ?? 6 }, worker));
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok && !isDevice) await fsp.rm(out, { force: true });
  }
  if (!isDevice) await fsp.rename(out, target);
}
