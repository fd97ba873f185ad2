// File archives, backup side: walk a directory, write the entry stream and the payload
// stream. A file whose size, mtime, ctime, inode, mode and owner match the previous
// snapshot is not read: the chunks holding its bytes are spliced in by digest.
import fs from "node:fs";
import fsp from "node:fs/promises";
import picomatch from "picomatch";
import { GordeError } from "../errors.ts";
import type { ChunkPool } from "../datastore/chunk-pool.ts";
import type { ChunkReader } from "../datastore/chunk-reader.ts";
import type { DynamicIndex } from "../format/dynamic-index.ts";
import { type TreeEntry, type Xattr, encodeEnd, encodeEntry, encodedSize, streamHeader } from "../format/tree-entry.ts";
import { SCAN_FIELDS, lgetxattr, llistxattr, scanDir } from "../sys/posix.ts";
import type { ChunkWriter } from "./chunk-writer.ts";
import { ChunkedStream } from "./chunked-stream.ts";
import type { ProgressFn } from "./progress.ts";
import { readTreeEntries } from "../datastore/tree-reader.ts";

/** Average chunk sizes: payload as restic's ~1 MiB; entries small so metadata dedups well. */
export const PAYLOAD_AVG_CHUNK = 1024 * 1024;
export const ENTRIES_AVG_CHUNK = 64 * 1024;

export interface TreeOptions {
  /** glob patterns: without '/' they match a name at any depth, with '/' a path from the root */
  excludes?: string[];
  /** do not descend into other file systems (mount points are kept, empty) */
  oneFileSystem?: boolean;
}

export interface TreeBackupOptions extends TreeOptions {
  writer: ChunkWriter;
  pool: ChunkPool;
  reader: ChunkReader;
  prev?: { entries: DynamicIndex; payload: DynamicIndex };
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export interface TreeBackupResult {
  entries: DynamicIndex;
  payload: DynamicIndex;
  entryCount: number;
  readFiles: number;
  reusedFiles: number;
}

interface Walked {
  entry: TreeEntry;
  abs: Buffer;
  /** previous entry when the file is unchanged */
  same?: TreeEntry;
}

const SLASH = Buffer.from("/");
const NO_LINK = Buffer.alloc(0);

export async function backupTree(source: string, opts: TreeBackupOptions): Promise<TreeBackupResult> {
  // The source itself may be reached through a symlink; nothing below it is followed.
  let root: Buffer;
  let rootSt: fs.BigIntStats;
  try {
    root = fs.realpathSync(source, { encoding: "buffer" });
    rootSt = fs.lstatSync(root, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new GordeError("not-found", `${source} does not exist.`);
    throw err;
  }
  if (!rootSt.isDirectory()) throw new GordeError("usage", `${source} is not a directory; use <name>.img= for files and devices.`);

  const prevByPath = new Map<string, TreeEntry>();
  if (opts.prev) {
    for (const e of await readTreeEntries(opts.prev.entries, opts.prev.payload.size, opts.reader)) {
      prevByPath.set(e.path.toString("latin1"), e);
    }
  }
  const walked = await walk(root, rootSt, prevByPath, opts);
  const total = walked.reduce((n, w) => n + (w.entry.kind === "file" ? w.entry.size : 0), 0);

  const entries = new ChunkedStream(opts.writer, ENTRIES_AVG_CHUNK);
  const payload = new ChunkedStream(opts.writer, PAYLOAD_AVG_CHUNK);
  const recs = new RecordBuffer(entries);
  await recs.push(streamHeader());

  const prefetch = new Prefetcher(
    walked.filter((w) => w.entry.kind === "file" && !w.same && w.entry.size > 0),
    opts.pool,
  );
  // The last chunk spliced from the previous snapshot: its index there, where it starts
  // in the new stream, and where the new stream ended right after it.
  let spliced = { prevIdx: -1, newStart: 0, endPos: -1 };
  let done = 0;
  let readFiles = 0;
  let reusedFiles = 0;
  for (const w of walked) {
    opts.signal?.throwIfAborted();
    const e = w.entry;
    if (e.kind === "file") {
      if (w.same && w.same.size > 0) {
        const prev = opts.prev!.payload;
        const first = prev.find(w.same.offset);
        const last = prev.find(w.same.offset + w.same.size - 1);
        let from = first;
        if (spliced.prevIdx === first && spliced.endPos === payload.pos) {
          from = first + 1; // the file starts in the chunk spliced last, nothing written since
        } else {
          await payload.cut();
          spliced = { prevIdx: first, newStart: payload.pos, endPos: -1 };
        }
        e.offset = spliced.newStart + (w.same.offset - prev.start(first));
        for (let i = from; i <= last; i++) {
          const start = payload.pos;
          await payload.splice(prev.digest(i).toString("hex"), prev.end(i) - prev.start(i));
          spliced = { prevIdx: i, newStart: start, endPos: payload.pos };
        }
        reusedFiles++;
      } else if (w.same) {
        e.offset = recs.prevEnd; // empty: placed where the previous file ended, as before
        reusedFiles++;
      } else {
        e.offset = payload.pos;
        e.size = e.size > 0 ? await prefetch.feed(w, payload) : 0;
        if (e.size === 0) e.offset = recs.prevEnd;
        readFiles++;
      }
      done += e.size;
      opts.progress?.({ done, total, stats: opts.writer.stats });
    }
    await recs.add(e);
  }
  await recs.push(encodeEnd(walked.length));
  await recs.flush();
  await entries.cut();
  await payload.cut();
  await opts.writer.drain();
  const now = Math.floor(Date.now() / 1000);
  return { entries: entries.build(now), payload: payload.build(now), entryCount: walked.length, readFiles, reusedFiles };
}

/** What the walk keeps of an entry's lstat (a BigIntStats object is large; the tree has many). */
interface Scanned {
  abs: Buffer;
  entry: TreeEntry;
  dev: bigint;
  nlink: bigint;
  children?: Scanned[];
}

function scanned(abs: Buffer, rel: Buffer, st: StatFields & { dev: bigint; nlink: bigint }): Scanned {
  return { abs, entry: toEntry(rel, st), dev: BigInt.asUintN(64, st.dev), nlink: st.nlink };
}

/** Directories scanned at once: a cold cache makes one at a time latency-bound. */
const SCAN_CONCURRENCY = 16;

/**
 * Walks the tree: first every directory is read and every entry stat'ed, many at a
 * time; then, in depth-first order with names sorted by their bytes, entries are built
 * (hard links are detected in that order, so the first name of an inode is stable).
 */
async function walk(root: Buffer, rootSt: fs.BigIntStats, prev: Map<string, TreeEntry>, opts: TreeOptions): Promise<Walked[]> {
  const plain: string[] = [];
  const anchored: string[] = [];
  for (const p of opts.excludes ?? []) (p.includes("/") ? anchored : plain).push(p.replace(/^\/+/, ""));
  const excludeName = plain.length ? picomatch(plain, { dot: true }) : undefined;
  const excludePath = anchored.length ? picomatch(anchored, { dot: true }) : undefined;
  const limit = new Limiter(SCAN_CONCURRENCY);

  const scan = async (node: Scanned): Promise<void> => {
    if (node.entry.kind !== "dir" || (opts.oneFileSystem && node.dev !== BigInt.asUintN(64, rootSt.dev))) return;
    const { names, stats } = await limit.run(() => scanDirChecked(node.abs));
    const order = names.map((_, i) => i).sort((a, b) => Buffer.compare(names[a]!, names[b]!));
    const kids: Scanned[] = [];
    for (const i of order) {
      const name = names[i]!;
      const rel = node.entry.path.length ? Buffer.concat([node.entry.path, SLASH, name]) : Buffer.from(name);
      if (excludeName?.(name.toString("utf8")) || excludePath?.(rel.toString("utf8"))) continue;
      const f = i * SCAN_FIELDS.length;
      kids.push(
        scanned(Buffer.concat([node.abs, SLASH, name]), rel, {
          mode: stats[f]!,
          uid: stats[f + 1]!,
          gid: stats[f + 2]!,
          size: stats[f + 3]!,
          mtimeNs: stats[f + 4]!,
          ctimeNs: stats[f + 5]!,
          ino: stats[f + 6]!,
          dev: stats[f + 7]!,
          nlink: stats[f + 8]!,
          rdev: stats[f + 9]!,
        }),
      );
    }
    node.children = kids;
    await Promise.all(kids.map(scan));
  };
  const top = scanned(root, Buffer.alloc(0), rootSt);
  await scan(top);

  const out: Walked[] = [];
  const links = new Map<string, Buffer>();
  const visit = (n: Scanned): void => {
    const { abs, entry } = n;
    const rel = entry.path;
    const w: Walked = { entry, abs };
    if (entry.kind === "file" && n.nlink > 1n) {
      const id = `${n.dev}:${entry.ino}`;
      const first = links.get(id);
      if (first) {
        entry.kind = "hardlink";
        entry.link = first;
        entry.size = 0;
      } else links.set(id, rel);
    }
    const p = prev.get(rel.toString("latin1"));
    if (entry.kind === "file" && p && p.kind === "file" && unchanged(p, entry)) {
      w.same = p;
      entry.xattrs = p.xattrs; // ctime unchanged: so are the xattrs
    } else {
      entry.xattrs = readXattrs(abs);
    }
    if (entry.kind === "symlink") entry.link = fs.readlinkSync(abs, { encoding: "buffer" });
    out.push(w);
    const children = n.children ?? [];
    n.children = undefined;
    for (const c of children) visit(c);
  };
  visit(top);
  return out;
}

async function scanDirChecked(abs: Buffer): Promise<{ names: Buffer[]; stats: BigInt64Array }> {
  try {
    return await scanDir(abs);
  } catch (err) {
    throw new GordeError("io", `cannot read directory ${abs.toString()}: ${(err as Error).message}.`, { cause: err });
  }
}

/** Runs at most `max` tasks at once. */
class Limiter {
  private active = 0;
  private queue: (() => void)[] = [];
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

/** The lstat fields an entry needs, as bigints (BigIntStats has them too). */
interface StatFields {
  mode: bigint;
  uid: bigint;
  gid: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
  rdev: bigint;
}

const KIND_BY_TYPE: Record<number, TreeEntry["kind"]> = {
  0o040000: "dir",
  0o100000: "file",
  0o120000: "symlink",
  0o020000: "chardev",
  0o060000: "blockdev",
  0o010000: "fifo",
  0o140000: "socket",
};

function toEntry(rel: Buffer, st: StatFields): TreeEntry {
  const mode = Number(st.mode);
  const kind = KIND_BY_TYPE[mode & 0o170000] ?? "socket";
  const dev = kind === "chardev" || kind === "blockdev";
  return {
    kind,
    path: rel,
    mode,
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    ino: BigInt.asUintN(64, st.ino),
    size: kind === "file" ? Number(st.size) : 0,
    offset: 0,
    rdev: dev ? BigInt.asUintN(64, st.rdev) : 0n,
    link: NO_LINK,
    xattrs: [],
  };
}

function unchanged(p: TreeEntry, e: TreeEntry): boolean {
  return (
    p.size === e.size &&
    p.mtimeNs === e.mtimeNs &&
    p.ctimeNs === e.ctimeNs &&
    p.ino === e.ino &&
    p.mode === e.mode &&
    p.uid === e.uid &&
    p.gid === e.gid
  );
}

function readXattrs(abs: Buffer): Xattr[] {
  const names = llistxattr(abs);
  if (names.length === 0) return [];
  const out: Xattr[] = [];
  for (const name of names.sort(Buffer.compare)) {
    try {
      out.push({ name, value: lgetxattr(abs, name) });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENODATA") throw err;
    }
  }
  return out;
}

/** Batches entry records into the entry stream. */
class RecordBuffer {
  private buf = Buffer.allocUnsafe(1024 * 1024);
  private len = 0;
  /** where the content of the last file record ended in the payload stream */
  prevEnd = 0;
  private readonly stream: ChunkedStream;

  constructor(stream: ChunkedStream) {
    this.stream = stream;
  }

  async add(e: TreeEntry): Promise<void> {
    const n = encodedSize(e);
    if (this.len + n > this.buf.length) await this.flush();
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    this.len = encodeEntry(e, this.buf, this.len, this.prevEnd);
    if (e.kind === "file") this.prevEnd = e.offset + e.size;
  }

  async push(bytes: Buffer): Promise<void> {
    if (this.len + bytes.length > this.buf.length) await this.flush();
    this.len += bytes.copy(this.buf, this.len);
  }

  async flush(): Promise<void> {
    if (this.len > 0) await this.stream.write(this.buf.subarray(0, this.len));
    this.len = 0;
  }
}

const SMALL_FILE = 4 * 1024 * 1024;
const PIECE = 4 * 1024 * 1024;

/**
 * Reads the files to back up ahead of the chunker. Small files are read whole, in
 * batches, by the worker threads (blocking reads there are much cheaper than one
 * asynchronous call per file here); large ones are streamed in pieces.
 */
class Prefetcher {
  private readonly files: Walked[];
  private readonly pool: ChunkPool;
  private next = 0;
  private inflight = new Map<Walked, Promise<Buffer | undefined>>();
  private bufferedBytes = 0;
  private batches = 0;
  private static readonly MAX_BATCHES = 6;
  private static readonly BATCH_FILES = 64;
  private static readonly BATCH_BYTES = 4 * 1024 * 1024;
  private static readonly MAX_BYTES = 32 * 1024 * 1024;

  constructor(files: Walked[], pool: ChunkPool) {
    this.files = files;
    this.pool = pool;
  }

  private fill(): void {
    while (this.next < this.files.length && this.batches < Prefetcher.MAX_BATCHES && this.bufferedBytes < Prefetcher.MAX_BYTES) {
      const batch: Walked[] = [];
      let bytes = 0;
      while (this.next < this.files.length && batch.length < Prefetcher.BATCH_FILES && bytes < Prefetcher.BATCH_BYTES) {
        const w = this.files[this.next]!;
        if (w.entry.size > SMALL_FILE) {
          if (batch.length > 0) break;
          this.next++;
          this.inflight.set(w, Promise.resolve(undefined)); // streamed when its turn comes
          continue;
        }
        this.next++;
        batch.push(w);
        bytes += w.entry.size;
      }
      if (batch.length === 0) continue;
      this.batches++;
      this.bufferedBytes += bytes;
      const read = this.pool.readFiles(batch.map((w) => w.abs));
      void read.finally(() => this.batches--).catch(() => undefined);
      batch.forEach((w, i) => {
        const p = read.then((datas) => {
          const d = datas[i]!;
          if (d instanceof GordeError) throw new GordeError("io", `cannot read ${w.abs.toString()}: ${d.message.replace(/\.$/, "")}.`, { cause: d });
          return d;
        });
        p.catch(() => undefined);
        this.inflight.set(w, p);
      });
    }
  }

  /** Streams the file's bytes into `out`; returns how many bytes it had. */
  async feed(w: Walked, out: ChunkedStream): Promise<number> {
    this.fill();
    const p = this.inflight.get(w);
    if (!p) throw new Error("prefetch order broken");
    const data = await p;
    this.inflight.delete(w);
    if (data !== undefined) {
      this.bufferedBytes -= w.entry.size;
      this.fill();
      await out.write(data);
      return data.length;
    }
    this.fill();
    const fh = await openNoFollow(w.abs);
    try {
      let n = 0;
      let buf = Buffer.allocUnsafe(PIECE);
      let pending = fh.read(buf, 0, PIECE, 0);
      while (true) {
        const { bytesRead } = await pending;
        if (bytesRead === 0) break;
        const cur = buf.subarray(0, bytesRead);
        n += bytesRead;
        buf = Buffer.allocUnsafe(PIECE);
        pending = fh.read(buf, 0, PIECE, n);
        await out.write(cur);
      }
      return n;
    } finally {
      await fh.close();
    }
  }
}

async function openNoFollow(abs: Buffer): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw new GordeError("io", `cannot read ${abs.toString()}: ${(err as Error).message}.`, { cause: err });
  }
}
