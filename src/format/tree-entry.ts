// File archives: the entry stream (docs/format.md, "File archive").
// The stream starts with MAGIC.treeEntries, then one record per entry in depth-first
// order, children sorted by the bytes of their names, and ends with an end record.
// File contents live in a second stream (the payload). A file record stores its offset
// there relative to the end of the previous file record's content (usually 0), so a
// change early in the tree does not change every later record and metadata dedups.
//
// record := len u32 (bytes after this field) | kind u8 | mode u32 | uid u32 | gid u32
//           | mtimeNs i64 | ctimeNs i64 | ino u64 | size u64 | offsetDelta i64 | rdev u64
//           | pathLen u32 | path | linkLen u32 | link | xattrCount u32
//           | xattrCount × (nameLen u16 | name | valueLen u32 | value)
// end    := len u32 | kind 0 | entryCount u64
import { corrupt } from "../errors.ts";
import { MAGIC, MAX_CHUNK_SIZE } from "./magic.ts";
import { checkMagic } from "./index-header.ts";

export const ENTRY_KINDS = ["end", "dir", "file", "symlink", "hardlink", "chardev", "blockdev", "fifo", "socket"] as const;
export type EntryKind = Exclude<(typeof ENTRY_KINDS)[number], "end">;

export interface Xattr {
  name: Buffer;
  value: Buffer;
}

export interface TreeEntry {
  kind: EntryKind;
  /** relative path, '/'-separated bytes; the root directory is the empty path */
  path: Buffer;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
  /** file: content size */
  size: number;
  /** file: offset of its content in the payload stream */
  offset: number;
  rdev: bigint;
  /** symlink target, or the path of the entry a hard link points to */
  link: Buffer;
  xattrs: Xattr[];
}

const FIXED = 1 + 4 * 3 + 8 * 6; // kind .. rdev
const MAX_XATTR_VALUE = 64 * 1024;

export function encodedSize(e: TreeEntry): number {
  let n = 4 + FIXED + 4 + e.path.length + 4 + e.link.length + 4;
  for (const x of e.xattrs) n += 2 + x.name.length + 4 + x.value.length;
  return n;
}

/**
 * Writes `e` at `off`; returns the offset after it. `out` must have encodedSize(e) bytes
 * free. `prevEnd` is where the previous file's content ended in the payload stream.
 */
export function encodeEntry(e: TreeEntry, out: Buffer, off: number, prevEnd = 0): number {
  const start = off;
  off += 4;
  out[off++] = ENTRY_KINDS.indexOf(e.kind);
  off = out.writeUInt32LE(e.mode >>> 0, off);
  off = out.writeUInt32LE(e.uid >>> 0, off);
  off = out.writeUInt32LE(e.gid >>> 0, off);
  off = out.writeBigInt64LE(e.mtimeNs, off);
  off = out.writeBigInt64LE(e.ctimeNs, off);
  off = out.writeBigUInt64LE(e.ino, off);
  off = out.writeBigUInt64LE(BigInt(e.size), off);
  off = out.writeBigInt64LE(e.kind === "file" ? BigInt(e.offset - prevEnd) : 0n, off);
  off = out.writeBigUInt64LE(e.rdev, off);
  off = out.writeUInt32LE(e.path.length, off);
  off += e.path.copy(out, off);
  off = out.writeUInt32LE(e.link.length, off);
  off += e.link.copy(out, off);
  off = out.writeUInt32LE(e.xattrs.length, off);
  for (const x of e.xattrs) {
    off = out.writeUInt16LE(x.name.length, off);
    off += x.name.copy(out, off);
    off = out.writeUInt32LE(x.value.length, off);
    off += x.value.copy(out, off);
  }
  out.writeUInt32LE(off - start - 4, start);
  return off;
}

export function encodeEnd(count: number): Buffer {
  const b = Buffer.alloc(13);
  b.writeUInt32LE(9, 0);
  b[4] = 0;
  b.writeBigUInt64LE(BigInt(count), 5);
  return b;
}

export function streamHeader(): Buffer {
  return Buffer.from(MAGIC.treeEntries);
}

/**
 * Parses a whole entry stream. Untrusted input: every length is bounded by the
 * record, every path is checked (no absolute paths, no "." or "..", no empty
 * components, no NUL), each parent must be a directory seen before, paths are unique
 * and in order, file contents lie inside the payload stream, hard links point back.
 */
export function decodeEntries(stream: Buffer, payloadSize: number, what = "entry stream"): TreeEntry[] {
  if (stream.length < 8) throw corrupt(`${what} is truncated.`);
  checkMagic(Buffer.concat([stream.subarray(0, 8), Buffer.alloc(56)]), "TE", what);
  const out: TreeEntry[] = [];
  const dirs = new Set<string>();
  const files = new Set<string>();
  let off = 8;
  let prevPath: Buffer | undefined;
  let prevEnd = 0;
  let ended = false;
  while (off < stream.length) {
    if (ended) throw corrupt(`${what} has data after its end record.`);
    if (off + 5 > stream.length) throw corrupt(`${what} is truncated at byte ${off}.`);
    const len = stream.readUInt32LE(off);
    const recEnd = off + 4 + len;
    if (recEnd > stream.length || len < 1) throw corrupt(`${what} has a record that runs past its end at byte ${off}.`);
    const kindNo = stream[off + 4]!;
    if (kindNo === 0) {
      if (len !== 9) throw corrupt(`${what} has a malformed end record.`);
      const count = Number(stream.readBigUInt64LE(off + 5));
      if (count !== out.length) throw corrupt(`${what} ends after ${out.length} entries but says it has ${count}.`);
      ended = true;
      off = recEnd;
      continue;
    }
    const kind = ENTRY_KINDS[kindNo];
    if (kind === undefined || kind === "end") throw corrupt(`${what} has an unknown entry kind ${kindNo}.`);
    const r = new RecordReader(stream, off + 5, recEnd, what);
    const mode = r.u32();
    const uid = r.u32();
    const gid = r.u32();
    const mtimeNs = r.i64();
    const ctimeNs = r.i64();
    const ino = r.u64();
    const size = Number(r.u64());
    const offset = kind === "file" ? prevEnd + Number(r.i64()) : (r.i64(), 0);
    const rdev = r.u64();
    const path = r.bytes(r.u32());
    const link = r.bytes(r.u32());
    const nx = r.u32();
    const xattrs: Xattr[] = [];
    for (let i = 0; i < nx; i++) {
      const name = r.bytes(r.u16());
      const vlen = r.u32();
      if (vlen > MAX_XATTR_VALUE) throw corrupt(`${what} has an xattr value of ${vlen} bytes.`);
      xattrs.push({ name, value: r.bytes(vlen) });
    }
    if (r.off !== recEnd) throw corrupt(`${what} has a record whose length does not match its fields.`);
    const e: TreeEntry = { kind, path, mode, uid, gid, mtimeNs, ctimeNs, ino, size, offset, rdev, link, xattrs };
    checkEntry(e, out.length === 0, prevPath, dirs, files, payloadSize, what);
    const key = path.toString("latin1");
    if (kind === "dir") dirs.add(key);
    if (kind === "file") {
      files.add(key);
      prevEnd = offset + size;
    }
    prevPath = path;
    out.push(e);
    off = recEnd;
  }
  if (!ended) throw corrupt(`${what} is truncated: it has no end record.`);
  return out;
}

class RecordReader {
  off: number;
  private readonly buf: Buffer;
  private readonly end: number;
  private readonly what: string;

  constructor(buf: Buffer, off: number, end: number, what: string) {
    this.buf = buf;
    this.off = off;
    this.end = end;
    this.what = what;
  }

  private need(n: number): number {
    const o = this.off;
    if (o + n > this.end) throw corrupt(`${this.what} has a record shorter than its fields.`);
    this.off += n;
    return o;
  }

  u16(): number {
    return this.buf.readUInt16LE(this.need(2));
  }
  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }
  u64(): bigint {
    return this.buf.readBigUInt64LE(this.need(8));
  }
  i64(): bigint {
    return this.buf.readBigInt64LE(this.need(8));
  }
  bytes(n: number): Buffer {
    const o = this.need(n);
    return Buffer.from(this.buf.subarray(o, o + n));
  }
}

function checkEntry(
  e: TreeEntry,
  first: boolean,
  prev: Buffer | undefined,
  dirs: Set<string>,
  files: Set<string>,
  payloadSize: number,
  what: string,
): void {
  const shown = JSON.stringify(e.path.toString("utf8"));
  if (first) {
    if (e.path.length !== 0 || e.kind !== "dir") throw corrupt(`${what} does not start with its root directory.`);
    return;
  }
  if (!isSafeRelativePath(e.path)) throw corrupt(`${what} has an unsafe path ${shown}.`);
  if (prev !== undefined && comparePaths(prev, e.path) >= 0) throw corrupt(`${what} is not in order at ${shown}.`);
  const slash = e.path.lastIndexOf(0x2f);
  const parent = slash < 0 ? "" : e.path.subarray(0, slash).toString("latin1");
  if (!dirs.has(parent)) throw corrupt(`${what} has ${shown} whose parent is not a directory in the archive.`);
  if (e.kind === "file") {
    if (e.offset < 0 || e.offset + e.size > payloadSize || !Number.isSafeInteger(e.offset + e.size)) {
      throw corrupt(`${what} places ${shown} outside the payload stream.`);
    }
  } else if (e.size !== 0 && e.kind !== "hardlink") {
    throw corrupt(`${what} gives a size to ${shown}, which is not a file.`);
  }
  if (e.kind === "hardlink" && !files.has(e.link.toString("latin1"))) {
    throw corrupt(`${what} has a hard link ${shown} to something that is not an earlier file.`);
  }
  if (e.kind === "symlink" && (e.link.length === 0 || e.link.includes(0))) {
    throw corrupt(`${what} has an invalid symlink target at ${shown}.`);
  }
  if (e.xattrs.length > 0 && e.xattrs.length > MAX_CHUNK_SIZE) throw corrupt(`${what} has too many xattrs.`);
}

export function isSafeRelativePath(p: Buffer): boolean {
  if (p.length === 0 || p[0] === 0x2f || p.includes(0)) return false;
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === 0x2f) {
      const n = i - start;
      if (n === 0) return false;
      if (p[start] === 0x2e && (n === 1 || (n === 2 && p[start + 1] === 0x2e))) return false;
      start = i + 1;
    }
  }
  return true;
}

/**
 * Depth-first order: compares component by component, so "a/b" sorts right after "a"
 * and before "a.txt" (plain byte order would put "a.txt" between them).
 */
export function comparePaths(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) {
      if (x === 0x2f) return -1;
      if (y === 0x2f) return 1;
      return x - y;
    }
  }
  return a.length - b.length;
}
