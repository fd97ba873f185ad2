// Block images: fixed-size chunks in, a fixed index out; and back to a sparse file.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { GordeError, systemCode } from "../errors.ts";
import { type FixedIndex, fixedChunkCount } from "../format/fixed-index.ts";
import { DIGEST_SIZE } from "../format/magic.ts";
import { formatBytes } from "../format/units.ts";
import { isZero } from "../format/zero-chunk.ts";
import { dataExtents, flock } from "../sys/posix.ts";
import { sourceSize } from "./block-source.ts";
import type { ChunkLoader } from "../datastore/chunk-reader.ts";
import { ChunkWriter } from "./chunk-writer.ts";
import type { ProgressFn } from "./progress.ts";

/** Default chunk size for block images; bench/chunk-size.md has the measurements behind it. */
export const DEFAULT_IMAGE_CHUNK_SIZE = 256 * 1024;
const READ_AHEAD = 8;

export interface ImageBackupOptions {
  /** every chunk of the index is still stored (the index can be reused as it is) */
  allStored(index: FixedIndex): Promise<boolean>;
  writer: ChunkWriter;
  chunkSize: number;
  /** the same archive in the base snapshot (named), with the stat of its source then */
  prev?: { index: FixedIndex; source?: SourceStat; snapshot?: string };
  signal?: AbortSignal;
  progress?: ProgressFn;
}

/** What identifies an unchanged image file (as restic and PBS do for files). */
export interface SourceStat {
  ino: string;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
}

/**
 * A block image to back up that is not a local file: a VM disk's point-in-time view read
 * over NBD, for instance.
 */
export interface BlockReader {
  readonly name: string;
  readonly size: number;
  /** sorted [start, end) ranges that may hold data; the rest reads as zeros */
  dataExtents(): Promise<[number, number][]>;
  /**
   * Sorted [start, end) ranges changed since the base snapshot `base` (a dirty bitmap);
   * chunks outside them keep the base's digests without being read. Undefined (no record
   * of changes since exactly that snapshot): read everything.
   */
  changedExtents?(base: string): Promise<[number, number][] | undefined>;
  read(buf: Buffer, pos: number): Promise<void>;
}

export async function backupImage(
  source: string | BlockReader,
  opts: ImageBackupOptions,
): Promise<{ index: FixedIndex; source?: SourceStat; readChunks: number; dirtyChunks: number | null }> {
  if (typeof source !== "string") return backupBlocks(source, opts);
  const fh = await openSource(source);
  try {
    const st = await fh.stat({ bigint: true });
    const stat: SourceStat | undefined = st.isFile()
      ? { ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) }
      : undefined; // a block device is always read: its times say nothing about its content
    const size = sourceSize(source, st);
    const { chunkSize, writer } = opts;
    const prev = opts.prev;
    if (stat && prev?.source && prev.index.chunkSize === chunkSize && sameStat(prev.source, stat) && (await opts.allStored(prev.index))) {
      writer.reuse(size);
      opts.progress?.({ done: size, total: size, stats: writer.stats });
      return { index: { ...prev.index, ctime: Math.floor(Date.now() / 1000) }, source: stat, readChunks: 0, dirtyChunks: null };
    }
    const r = await backupBlocks(
      {
        name: source,
        size,
        dataExtents: () => Promise.resolve(stat ? dataExtents(fh.fd, size) : [[0, size]]),
        read: (buf, pos) => readFully(fh, buf, pos, source),
      },
      { ...opts, prev: undefined },
    );
    return { ...r, source: stat };
  } finally {
    await fh.close();
  }
}

/** The chunk loop: holes become zero chunks, unchanged chunks keep the base's digests, the rest is read. */
async function backupBlocks(reader: BlockReader, opts: ImageBackupOptions): Promise<{ index: FixedIndex; readChunks: number; dirtyChunks: number | null }> {
  const { chunkSize, writer } = opts;
  const size = reader.size;
  const count = fixedChunkCount(size, chunkSize);
  const digests = Buffer.alloc(count * DIGEST_SIZE);
  const prev = opts.prev?.index;
  // Only a base of the same geometry whose chunks are all still stored can lend digests.
  const changed =
    prev && opts.prev?.snapshot && prev.chunkSize === chunkSize && prev.size === size && reader.changedExtents && (await opts.allStored(prev))
      ? await reader.changedExtents(opts.prev.snapshot)
      : undefined;
  const dirty = changed ? new HoleMap(changed) : undefined;
  // Several reads in flight: one at a time leaves a cold disk idle between requests.
  const read = (i: number): Promise<Buffer> => {
    // Each chunk has its own ArrayBuffer so it can move to a worker without a copy.
    const buf = writer.buffer(Math.min(chunkSize, size - i * chunkSize));
    return reader.read(buf, i * chunkSize).then(() => buf);
  };
  const holes = new HoleMap(await reader.dataExtents());
  const wanted: number[] = [];
  const kept = new Set<number>();
  for (let i = 0; i < count; i++) {
    const start = i * chunkSize;
    const end = Math.min(size, start + chunkSize);
    if (dirty && dirty.isHole(start, end)) kept.add(i);
    else if (!holes.isHole(start, end)) wanted.push(i);
  }
  const ahead = new Map<number, Promise<Buffer>>();
  let next = 0;
  const fill = (): void => {
    while (ahead.size < READ_AHEAD && next < wanted.length) {
      const i = wanted[next++]!;
      ahead.set(i, read(i));
    }
  };
  for (let i = 0; i < count; i++) {
    opts.signal?.throwIfAborted();
    const len = Math.min(chunkSize, size - i * chunkSize);
    const setDigest = (hex: string): void => void digests.write(hex, i * DIGEST_SIZE, "hex");
    if (kept.has(i)) {
      prev!.digests.copy(digests, i * DIGEST_SIZE, i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
      writer.reuse(len);
      continue;
    }
    fill();
    const pending = ahead.get(i);
    if (!pending) {
      writer.addZero(len, setDigest);
      continue;
    }
    ahead.delete(i);
    await writer.add(await pending, setDigest);
    opts.progress?.({ done: Math.min((i + 1) * chunkSize, size), total: size, stats: writer.stats });
  }
  await writer.drain();
  return { index: { ctime: Math.floor(Date.now() / 1000), size, chunkSize, digests }, readChunks: wanted.length, dirtyChunks: dirty ? count - kept.size : null };
}

/** Sorted data extents of a file; a range outside all of them is a hole. */
class HoleMap {
  private readonly extents: [number, number][];
  private k = 0;

  constructor(extents: [number, number][]) {
    this.extents = extents;
  }

  /** For ascending ranges only (the image is walked once, in order). */
  isHole(start: number, end: number): boolean {
    while (this.k < this.extents.length && this.extents[this.k]![1] <= start) this.k++;
    const e = this.extents[this.k];
    return e === undefined || e[0] >= end;
  }
}

function sameStat(a: SourceStat, b: SourceStat): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/** Every chunk of the index is still in the store (verify may have moved one aside). */

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
  loader: ChunkLoader;
  /** the digest a chunk of these bytes is stored under (keyed when encrypted) */
  digestHex(data: Uint8Array): string;
  /** digest of a zero chunk of `size` bytes (keyed when encrypted) */
  zeroHex(size: number): string;
  signal?: AbortSignal;
  progress?: ProgressFn;
  inflight?: number;
}

export interface ImageRestoreResult {
  /** bytes an interrupted restore to the same target had put in place, found whole and not fetched again */
  resumedBytes: number;
}

/**
 * Where an image is restored before it is renamed to its target: beside it, hidden. A
 * restore interrupted keeps it with what it holds, and the same restore run again goes on
 * from there (as restic's restore does): every chunk already in place is checked against
 * its digest and only the others are fetched.
 */
export function partialFile(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.gorde-partial`);
}

/**
 * Writes the image to `target`: a new sparse file (written into its partial file, renamed
 * when complete) or an existing block device. Every chunk is checked against its digest.
 */
export async function restoreImage(index: FixedIndex, target: string, opts: ImageRestoreOptions): Promise<ImageRestoreResult> {
  let isDevice = false;
  try {
    isDevice = fs.statSync(target).isBlockDevice();
  } catch {
    // a new file
  }
  if (isDevice) {
    const fh = await fsp.open(target, "r+");
    try {
      await writeImage(fh, index, opts, { resume: false, sparse: false });
      await fh.sync();
    } finally {
      await fh.close();
    }
    return { resumedBytes: 0 };
  }
  const out = partialFile(target);
  const fh = await openPartial(out, target);
  let inPlace = 0;
  try {
    const { size } = await fh.stat();
    try {
      if (size !== index.size) await fh.truncate(index.size);
      const r = await writeImage(fh, index, opts, { resume: size > 0, sparse: true }, (n) => (inPlace += n));
      await fh.sync();
      await fsp.rename(out, target);
      return { resumedBytes: r.resumedBytes };
    } catch (err) {
      if (inPlace === 0 || !worthResuming(err)) {
        await fsp.rm(out, { force: true });
        throw err;
      }
      const why = err instanceof Error ? err.message : String(err);
      throw new GordeError(
        err instanceof GordeError ? err.code : "io",
        `${why.replace(/\.$/, "")}; the ${formatBytes(inPlace)} restored so far are kept in ${out}, and the same restore goes on from there.`,
        { cause: err },
      );
    }
  } finally {
    await fh.close();
  }
}

/**
 * Whether a restore that failed with `err` is kept for the same restore to go on: after an
 * interruption (a lost link, an expired session, Ctrl-C), not when the data or the request
 * was refused (a damaged or missing chunk, a wrong key: running it again fails the same way)
 * nor when the disk is full (keeping it would keep it full).
 */
function worthResuming(err: unknown): boolean {
  if (err instanceof GordeError && ["usage", "invalid", "corrupt", "unsupported", "denied"].includes(err.code)) return false;
  return systemCode(err) !== "ENOSPC";
}

/** The partial file, opened and held (flock) for this restore: a regular file, no symlink, no other restore's. */
async function openPartial(out: string, target: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(out, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = systemCode(err);
    if (code === "ELOOP" || code === "EISDIR") throw new GordeError("invalid", `${out} is not a regular file; remove it and restore again.`);
    throw err;
  }
  try {
    // A hard link planted there would have the restore overwrite the file it links to.
    const st = await fh.stat();
    if (!st.isFile() || st.nlink !== 1 || st.uid !== process.getuid?.()) throw new GordeError("invalid", `${out} is not a regular file of this user's with one name; remove it and restore again.`);
    if (!flock(fh.fd, "ex", false)) throw new GordeError("locked", `another restore to ${target} is running (it holds ${out}).`);
  } catch (err) {
    await fh.close();
    throw err;
  }
  return fh;
}

/**
 * Every chunk of the index into `fh`, `inflight` at a time. With `resume`, a chunk whose
 * bytes are already there (their digest matches) is left as it is; with `sparse`, zero
 * chunks of a new file are left as holes. `placed` hears of every byte put or found in place.
 */
async function writeImage(fh: fsp.FileHandle, index: FixedIndex, opts: ImageRestoreOptions, mode: { resume: boolean; sparse: boolean }, placed?: (bytes: number) => void): Promise<ImageRestoreResult> {
  const count = fixedChunkCount(index.size, index.chunkSize);
  let next = 0;
  let done = 0;
  let resumedBytes = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < count && !failed) {
      opts.signal?.throwIfAborted();
      const i = next++;
      const hex = index.digests.toString("hex", i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
      const len = Math.min(index.chunkSize, index.size - i * index.chunkSize);
      const pos = i * index.chunkSize;
      const zero = hex === opts.zeroHex(len);
      let there = false;
      if (mode.resume) {
        const have = Buffer.allocUnsafe(len);
        const { bytesRead } = await fh.read(have, 0, len, pos);
        there = bytesRead === len && (zero ? isZero(have) : opts.digestHex(have) === hex);
      }
      if (there) resumedBytes += len;
      else if (zero) {
        // A new file's holes are zeros already; a device, or a partial file from another image, is written.
        if (!mode.sparse || mode.resume) await fh.write(Buffer.alloc(len), 0, len, pos);
      } else {
        const data = await opts.loader.load(hex);
        if (data.length !== len) throw new GordeError("corrupt", `chunk ${hex} has ${data.length} bytes where the index expects ${len}.`);
        await fh.write(data, 0, len, pos);
      }
      placed?.(len);
      done += len;
      opts.progress?.({ done, total: index.size });
    }
  };
  // The first failure stops the other workers, and the file is closed only once none writes.
  const results = await Promise.allSettled(
    Array.from({ length: opts.inflight ?? 24 }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const firstError = results.find((r) => r.status === "rejected");
  if (firstError) throw firstError.reason;
  return { resumedBytes };
}
