// File archives, restore side: recreate every entry exactly (type, mode, owner, times
// to the nanosecond, xattrs and ACLs, hard links, devices, non-UTF-8 names), refusing
// anything that would write outside the target. What the target refuses for one entry (a
// name too long, an xattr it does not support, a device without root) is skipped and named,
// and the rest restored; damage, a full disk or an abort stop the restore.
import fs from "node:fs";
import path from "node:path";
import { GordeError, corrupt } from "../errors.ts";
import type { ChunkReader } from "../datastore/chunk-reader.ts";
import type { DynamicIndex } from "../format/dynamic-index.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { selectEntries } from "../datastore/tree-reader.ts";
import { isZero } from "../format/zero-chunk.ts";
import { lsetxattr, lutimes, mknod } from "../sys/posix.ts";
import type { ProgressFn } from "./progress.ts";

const SLASH = Buffer.from("/");
const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
const TYPE_BITS = 0o170000;

export interface TreeRestoreOptions {
  reader: ChunkReader;
  /** restore only this path (a file or a whole subtree), kept at its place under the target */
  path?: string;
  signal?: AbortSignal;
  progress?: ProgressFn;
}

export async function restoreTree(
  all: TreeEntry[],
  payload: DynamicIndex,
  target: string,
  opts: TreeRestoreOptions,
): Promise<{ entries: number; bytes: number; skipped: SkippedEntry[] }> {
  const entries = selectEntries(all, opts.path);
  prepareTarget(target);
  const root = Buffer.from(path.resolve(target));
  const asRoot = process.geteuid?.() === 0;
  const byPath = new Map<string, TreeEntry>();
  const restoredFiles = new Set<string>();
  for (const e of all) if (e.kind === "file") byPath.set(e.path.toString("latin1"), e);

  const plan = new ChunkPlan(entries, byPath, payload, opts.reader);
  const dirs: { abs: Buffer; e: TreeEntry }[] = [];
  const total = entries.reduce((n, e) => n + (e.kind === "file" ? e.size : 0), 0);
  let bytes = 0;
  const skipped: SkippedEntry[] = [];
  const skip = (e: TreeEntry, reason: string, metadataOnly?: true): void => void skipped.push(metadataOnly ? { path: shown(e), reason, metadataOnly } : { path: shown(e), reason });
  /** folders that could not be made: what is below them is skipped with them */
  const lostDirs: Buffer[] = [];
  const underLost = (p: Buffer): boolean => lostDirs.some((d) => p.length > d.length && p[d.length] === 0x2f && p.subarray(0, d.length).equals(d));
  for (const e of entries) {
    opts.signal?.throwIfAborted();
    const abs = e.path.length ? Buffer.concat([root, SLASH, e.path]) : root;
    if (underLost(e.path)) {
      skip(e, `${shown(e)} was not restored: a folder above it could not be made.`);
      if (e.kind === "dir") lostDirs.push(e.path);
      continue;
    }
    try {
      switch (e.kind) {
        case "dir":
          if (e.path.length) fs.mkdirSync(abs, 0o700);
          dirs.push({ abs, e });
          continue; // metadata once its children are in place
        case "file":
          await writeFile(abs, e, plan);
          restoredFiles.add(e.path.toString("latin1"));
          bytes += e.size;
          opts.progress?.({ done: bytes, total });
          break;
        case "hardlink": {
          const key = e.link.toString("latin1");
          if (restoredFiles.has(key)) {
            fs.linkSync(Buffer.concat([root, SLASH, e.link]), abs);
            continue; // shares the inode's metadata
          }
          // Its first name was not selected (or not restored): this name gets the content.
          await writeFile(abs, { ...byPath.get(key)!, path: e.path }, plan);
          restoredFiles.add(key);
          applyMeta(abs, byPath.get(key)!, asRoot, skip);
          continue;
        }
        case "symlink":
          fs.symlinkSync(e.link, abs);
          break;
        case "chardev":
        case "blockdev":
        case "fifo":
        case "socket":
          mknod(abs, (e.mode & TYPE_BITS) | 0o600, e.rdev);
          break;
      }
    } catch (err) {
      // What this file system or these privileges refuse for one entry: skipped and named,
      // the rest restored (restic's choice). Damage, a full disk, an abort: the restore stops.
      const why = entryProblem(err);
      if (why === undefined) throw err;
      skip(e, `${shown(e)} was not restored: ${why}.`);
      if (e.kind === "dir") lostDirs.push(e.path);
      continue;
    }
    applyMeta(abs, e, asRoot, skip);
  }
  for (let i = dirs.length - 1; i >= 0; i--) applyMeta(dirs[i]!.abs, dirs[i]!.e, asRoot, skip);
  return { entries: entries.length - skipped.filter((x) => !x.metadataOnly).length, bytes, skipped };
}

/** An entry, or part of its metadata, the restore could not recreate. */
export interface SkippedEntry {
  path: string;
  /** one sentence */
  reason: string;
  /** the entry is there; only some of its metadata is not */
  metadataOnly?: boolean;
}

function shown(e: TreeEntry): string {
  return e.path.length ? e.path.toString() : ".";
}

/** Why one entry cannot be made here, in words, or undefined when the error is not the entry's own. */
function entryProblem(err: unknown): string | undefined {
  switch ((err as NodeJS.ErrnoException).code) {
    case "ENAMETOOLONG":
      return "its name or path is too long for the target file system";
    case "ENOTSUP":
    case "EOPNOTSUPP":
      return "the target file system does not support it";
    case "EPERM":
    case "EACCES":
      return "not permitted here (restore as root to recreate devices and owners)";
    case "EINVAL":
      return "the target file system refuses its name or kind";
    case "EMLINK":
      return "too many links to one file or folder on the target file system";
    case "ELOOP":
    case "ENOTDIR":
      return "a part of its path is not a folder on the target";
    default:
      return undefined;
  }
}
/** The target must be missing or an empty directory: nothing existing is overwritten. */
function prepareTarget(target: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (!st) {
    fs.mkdirSync(target, { recursive: true, mode: 0o700 });
    return;
  }
  if (!st.isDirectory()) throw new GordeError("usage", `${target} exists and is not a directory.`);
  if (fs.readdirSync(target).length > 0) throw new GordeError("usage", `${target} is not empty; restore into a new or empty directory.`);
}

/** Owner, extended attributes, mode and times; what the target refuses is named, the rest applied. */
function applyMeta(abs: Buffer, e: TreeEntry, asRoot: boolean, skip: (e: TreeEntry, reason: string, metadataOnly: true) => void): void {
  const attempt = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      const why = entryProblem(err);
      if (why === undefined) throw err;
      skip(e, `${shown(e)}: its ${what} was not restored: ${why}.`, true);
    }
  };
  if (asRoot) attempt("owner", () => fs.lchownSync(abs, e.uid, e.gid));
  for (const x of e.xattrs) attempt(`extended attribute ${x.name.toString()}`, () => lsetxattr(abs, x.name, x.value));
  if (e.kind !== "symlink") attempt("mode", () => fs.chmodSync(abs, e.mode & 0o7777));
  attempt("modification time", () => lutimes(abs, e.mtimeNs, e.mtimeNs));
}

async function writeFile(abs: Buffer, e: TreeEntry, plan: ChunkPlan): Promise<void> {
  const fd = fs.openSync(abs, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  let complete = false;
  try {
    if (e.size > 0) {
      fs.ftruncateSync(fd, e.size);
      let pos = e.offset;
      const end = e.offset + e.size;
      while (pos < end) {
        const { data, start } = await plan.chunkAt(pos);
        const from = pos - start;
        const to = Math.min(data.length, end - start);
        const piece = data.subarray(from, to);
        writeSparse(fd, piece, pos - e.offset);
        pos += piece.length;
      }
    }
    complete = true;
  } finally {
    fs.closeSync(fd);
    // A file whose contents could not all be read is not left behind looking whole.
    if (!complete) fs.rmSync(abs, { force: true });
  }
}

const HOLE_BLOCK = 64 * 1024;

/** Writes `data` at `at`, leaving 64 KiB blocks of zeros as holes (the file was truncated to size). */
function writeSparse(fd: number, data: Buffer, at: number): void {
  let runStart = -1;
  const flush = (end: number): void => {
    let off = runStart;
    while (off < end) off += fs.writeSync(fd, data, off, end - off, at + off);
    runStart = -1;
  };
  for (let o = 0; o < data.length; o += HOLE_BLOCK) {
    const end = Math.min(o + HOLE_BLOCK, data.length);
    if (isZero(data.subarray(o, end))) {
      if (runStart >= 0) flush(o);
    } else if (runStart < 0) runStart = o;
  }
  if (runStart >= 0) flush(data.length);
}

/**
 * Knows, from the entries to restore, which payload chunks are needed in which order,
 * and keeps the next few being read and decoded while files are written.
 */
class ChunkPlan {
  private readonly order: number[] = [];
  private cursor = 0;
  private readonly payload: DynamicIndex;
  private readonly reader: ChunkReader;
  private readonly ahead = 6;

  constructor(entries: TreeEntry[], byPath: Map<string, TreeEntry>, payload: DynamicIndex, reader: ChunkReader) {
    this.payload = payload;
    this.reader = reader;
    for (const e of entries) {
      const f = e.kind === "hardlink" ? byPath.get(e.link.toString("latin1")) : e;
      if (!f || f.kind !== "file" || f.size === 0) continue;
      const first = payload.find(f.offset);
      const last = payload.find(f.offset + f.size - 1);
      for (let i = first; i <= last; i++) if (this.order.at(-1) !== i) this.order.push(i);
    }
  }

  async chunkAt(pos: number): Promise<{ data: Buffer; start: number }> {
    const i = this.payload.find(pos);
    while (this.cursor < this.order.length && this.order[this.cursor] !== i) this.cursor++;
    for (let k = this.cursor + 1; k <= this.cursor + this.ahead && k < this.order.length; k++) {
      void this.reader.read(this.hex(this.order[k]!)).catch(() => undefined);
    }
    const data = await this.reader.read(this.hex(i));
    const start = this.payload.start(i);
    if (data.length !== this.payload.end(i) - start) {
      throw corrupt(`chunk ${this.hex(i)} has a different size than its index says.`);
    }
    return { data, start };
  }

  private hex(i: number): string {
    return this.payload.digest(i).toString("hex");
  }
}

