// POSIX calls Node lacks, from the native helper built by src/sys/build.sh (posix.c).
// All calls are synchronous. Paths and xattr names may be strings (UTF-8) or Buffers
// (raw bytes, for names that are not valid UTF-8). Failures throw an Error shaped like
// Node's own (see SysError).

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** A path or name: a string is encoded as UTF-8, a Buffer/Uint8Array is taken as raw bytes. */
export type PathLike = string | Uint8Array;

/** Lock kinds for flock: shared, exclusive, unlock. */
export type FlockOp = "sh" | "ex" | "un";

/** The error thrown when a system call fails, with the same properties as Node's fs errors. */
export interface SysError extends Error {
  code: string; // errno name, e.g. "ENOENT"
  errno: number; // negated errno, e.g. -2
  syscall: string;
  path?: string; // lossy for names that are not valid UTF-8
}

interface Native {
  llistxattr(path: PathLike): Buffer[];
  lgetxattr(path: PathLike, name: PathLike): Buffer;
  lsetxattr(path: PathLike, name: PathLike, value: Uint8Array): undefined;
  mknod(path: PathLike, mode: number, dev: bigint): undefined;
  lutimes(path: PathLike, atimeNs: bigint, mtimeNs: bigint): undefined;
  flock(fd: number, op: FlockOp, wait: boolean): boolean;
  syncfs(fd: number): undefined;
  mallocTrim(): undefined;
  seekData(fd: number, offset: number, hole: boolean): number;
  scanDir(path: PathLike): Promise<[Buffer, BigInt64Array]>;
}

/** Absolute path of the compiled module, e.g. for child processes that load it directly. */
export const nativePath: string = fileURLToPath(new URL("./build/posix.node", import.meta.url));

function load(): Native {
  if (!existsSync(nativePath)) {
    throw new Error("the native helper src/sys/build/posix.node is not built: run npm install");
  }
  return createRequire(import.meta.url)("./build/posix.node") as Native;
}

const native = load();

/** Lists the extended attribute names of path (not following symlinks); [] if the filesystem has none. */
export function llistxattr(path: PathLike): Buffer[] {
  return native.llistxattr(path);
}

/** Reads one extended attribute (not following symlinks); throws ENODATA when it is absent. */
export function lgetxattr(path: PathLike, name: PathLike): Buffer {
  return native.lgetxattr(path, name);
}

/** Creates or replaces one extended attribute (not following symlinks). */
export function lsetxattr(path: PathLike, name: PathLike, value: Uint8Array): void {
  native.lsetxattr(path, name, value);
}

/** Creates a device node, fifo or socket; mode includes the S_IF* type bits, dev is the raw rdev. */
export function mknod(path: PathLike, mode: number, dev: bigint = 0n): void {
  native.mknod(path, mode, dev);
}

/** Sets access and modification times in nanoseconds since the epoch, on a symlink itself. */
export function lutimes(path: PathLike, atimeNs: bigint, mtimeNs: bigint): void {
  native.lutimes(path, atimeNs, mtimeNs);
}

/** Takes or releases a flock; false when !wait and another holder has it (waiting blocks the thread). */
export function flock(fd: number, op: FlockOp, wait: boolean): boolean {
  return native.flock(fd, op, wait);
}

/** Flushes the whole filesystem that holds fd to stable storage. */
export function syncfs(fd: number): void {
  native.syncfs(fd);
}

/**
 * The data ranges of a file, from lseek(SEEK_DATA/SEEK_HOLE): everything outside them
 * reads as zeros. A file system that cannot tell reports the whole file as data.
 */
export function dataExtents(fd: number, size: number): [start: number, end: number][] {
  const out: [number, number][] = [];
  let pos = 0;
  while (pos < size) {
    const start = native.seekData(fd, pos, false);
    if (start < 0 || start >= size) break;
    const end = Math.min(native.seekData(fd, start, true), size);
    out.push([start, end]);
    pos = end;
  }
  return out;
}

/** lstat fields per entry of scanDir, in this order. */
export const SCAN_FIELDS = ["mode", "uid", "gid", "size", "mtimeNs", "ctimeNs", "ino", "dev", "nlink", "rdev"] as const;

/**
 * Reads a directory (never through a symlink) and lstats each entry, in one job on
 * the thread pool: names as raw bytes, and SCAN_FIELDS.length values per name.
 * Entries that vanish meanwhile are left out.
 */
export async function scanDir(path: PathLike): Promise<{ names: Buffer[]; stats: BigInt64Array }> {
  const [blob, stats] = await native.scanDir(path);
  const names: Buffer[] = [];
  let start = 0;
  for (let i = blob.indexOf(0); i >= 0; i = blob.indexOf(0, start)) {
    names.push(blob.subarray(start, i));
    start = i + 1;
  }
  return { names, stats };
}

/** Returns freed heap memory of every malloc arena to the system (glibc malloc_trim). */
export function mallocTrim(): void {
  native.mallocTrim();
}
