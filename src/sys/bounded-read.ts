// Files of a datastore read as its format promises (docs/format.md §7): never through a
// symlink, only regular files, never more than the format allows. A FIFO in a chunk's place
// would block a reader forever, a symlink to /dev/zero feed it without end, a directory fail
// it with a raw errno: each is refused at once, as damage ("corrupt"), naming the file.
// A missing file keeps its ENOENT: callers say what a missing file means to them.
import fs from "node:fs";
import { GordeError } from "../errors.ts";

// O_NONBLOCK: opening a FIFO does not wait for a writer (and reading a regular file ignores it).
const FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return "directory";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "device";
  return "special file";
}

function openError(err: unknown, what: string): unknown {
  // O_NOFOLLOW on a symlink: ELOOP.
  if ((err as NodeJS.ErrnoException).code === "ELOOP") return new GordeError("corrupt", `${what} is a symlink, not a regular file.`, { cause: err });
  return err;
}

function checkStat(st: fs.Stats, max: number, what: string): void {
  if (!st.isFile()) throw new GordeError("corrupt", `${what} is a ${kindOf(st)}, not a regular file.`);
  if (st.size > max) throw new GordeError("corrupt", `${what} is ${st.size} bytes, more than the ${max} it may have.`);
}

function tooLong(max: number, what: string): GordeError {
  return new GordeError("corrupt", `${what} grew beyond the ${max} bytes it may have while it was read.`);
}

/** The whole of a regular file of at most `max` bytes (`what` names it in errors). */
export function readRegularFileSync(file: string | Buffer, max: number, what: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, FLAGS);
  } catch (err) {
    throw openError(err, what);
  }
  try {
    const st = fs.fstatSync(fd);
    checkStat(st, max, what);
    // One byte more than it says: a file that grew since the stat is noticed.
    const buf = Buffer.allocUnsafe(Math.min(st.size + 1, max + 1));
    let got = 0;
    for (let n; got < buf.length && (n = fs.readSync(fd, buf, got, buf.length - got, got)) > 0; ) got += n;
    if (got > max) throw tooLong(max, what);
    return got === buf.length ? Buffer.concat([buf, readRest(fd, got, max, what)]) : buf.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

/** What a file that grew past its stat holds beyond `from`, up to `max` in all. */
function readRest(fd: number, from: number, max: number, what: string): Buffer {
  const parts: Buffer[] = [];
  let pos = from;
  for (;;) {
    const buf = Buffer.allocUnsafe(64 * 1024);
    const n = fs.readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) return Buffer.concat(parts);
    pos += n;
    if (pos > max) throw tooLong(max, what);
    parts.push(buf.subarray(0, n));
  }
}

/** The whole of a regular file of at most `max` bytes, read asynchronously. */
export async function readRegularFile(file: string, max: number, what: string): Promise<Buffer> {
  let h: fs.promises.FileHandle;
  try {
    h = await fs.promises.open(file, FLAGS);
  } catch (err) {
    throw openError(err, what);
  }
  try {
    const st = await h.stat();
    checkStat(st, max, what);
    const buf = Buffer.allocUnsafe(Math.min(st.size + 1, max + 1));
    let got = 0;
    for (let n; got < buf.length && (n = (await h.read(buf, got, buf.length - got, got)).bytesRead) > 0; ) got += n;
    if (got > max) throw tooLong(max, what);
    if (got < buf.length) return buf.subarray(0, got);
    // It grew since the stat: the rest, still bounded.
    const parts = [buf];
    for (let pos = got; ; ) {
      const more = Buffer.allocUnsafe(64 * 1024);
      const { bytesRead } = await h.read(more, 0, more.length, pos);
      if (bytesRead === 0) return Buffer.concat(parts);
      pos += bytesRead;
      if (pos > max) throw tooLong(max, what);
      parts.push(more.subarray(0, bytesRead));
    }
  } finally {
    await h.close();
  }
}
