// The one way gorde writes a file that must be either old or whole: temp file in the same
// directory, fsync, rename, fsync of the directory. A failure leaves no temp file behind.
import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";

export async function writeFileAtomic(file: string, data: Uint8Array | string, opts: { mode?: number } = {}): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const fh = await fsp.open(tmp, "wx", opts.mode ?? 0o644);
    try {
      if (opts.mode !== undefined) await fh.chmod(opts.mode); // exactly `mode`, whatever the umask took away
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(path.dirname(file));
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
