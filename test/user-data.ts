// Data that looks like users' data, for every test that moves chunks: repeated blocks,
// identical files, zeros, sparse regions, many small files, text. Random bytes alone hide
// every bug that only equal chunks trigger (two uploads of one digest at once, a chunk
// named twice in one index, one block in two archives of a snapshot).
import fs from "node:fs";
import path from "node:path";
import { Prng } from "../bench/prng.ts";

const KIB = 1024;
/** The default fixed chunk size: blocks aligned to it become equal chunks. */
const BLOCK = 256 * KIB;

function random(prng: Prng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let o = 0; o + 4 <= n; o += 4) b.writeUInt32LE(prng.u32(), o);
  for (let o = n - (n % 4); o < n; o++) b[o] = prng.u32() & 0xff;
  return b;
}

function logText(n: number, tag: string): Buffer {
  const lines: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const l = `2026-12-0${(i % 9) + 1}T0${i % 10}:00:00Z ${tag} service[${1000 + (i % 7)}]: request ${i} served in ${i % 13} ms\n`;
    lines.push(l);
    len += l.length;
  }
  return Buffer.from(lines.join("")).subarray(0, n);
}

/** Blocks shared by the images and trees of one data set, so archives repeat each other. */
export interface UserBlocks {
  /** repeated 16 times in a row in the first image, and again in the second */
  a: Buffer;
  /** repeated at scattered places */
  b: Buffer;
  /** a documentation file: several identical copies in the trees */
  doc: Buffer;
}

export function userBlocks(seed = 1): UserBlocks {
  const prng = new Prng(seed);
  return { a: random(prng, BLOCK), b: random(prng, BLOCK), doc: logText(300 * KIB + 123, "doc") };
}

/**
 * A disk image of about 9 MiB: 16 equal blocks, written zeros, a sparse hole, log text,
 * one block scattered three times, and a tail that is not a whole chunk.
 */
export function writeUserImage(file: string, blocks: UserBlocks, opts: { seed?: number; variant?: number } = {}): void {
  const prng = new Prng(opts.seed ?? 2);
  const fd = fs.openSync(file, "w");
  try {
    let o = 0;
    const put = (b: Buffer): void => {
      fs.writeSync(fd, b, 0, b.length, o);
      o += b.length;
    };
    for (let i = 0; i < 16; i++) put(blocks.a);
    put(Buffer.alloc(BLOCK * 4)); // zeros written out
    o += BLOCK * 6; // a hole: never written
    put(blocks.b);
    put(logText(BLOCK * 2, `host${opts.variant ?? 0}`));
    put(blocks.b);
    put(random(prng, BLOCK));
    put(blocks.b);
    put(blocks.a.subarray(0, 100 * KIB)); // a tail shorter than a chunk
    if (opts.variant) put(random(new Prng(opts.variant), 64 * KIB));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A directory tree: identical documentation files, 300 small files of which many are
 * equal, empty files, a zero-filled file, a sparse file, a file made of the image's
 * repeated block, and log files.
 */
export function writeUserTree(dir: string, blocks: UserBlocks, opts: { seed?: number } = {}): void {
  const prng = new Prng(opts.seed ?? 3);
  for (const d of ["usr/share/doc/a", "usr/share/doc/b", "usr/share/doc/c", "etc/conf.d", "var/log", "var/lib/data", "home/user"]) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  for (const d of ["a", "b", "c"]) fs.writeFileSync(path.join(dir, "usr/share/doc", d, "README"), blocks.doc);
  fs.writeFileSync(path.join(dir, "home/user/README.copy"), blocks.doc);
  for (let i = 0; i < 300; i++) {
    const body = i % 3 === 0 ? "enabled=yes\n" : i % 3 === 1 ? `name=unit${i}\nenabled=${i % 2 === 0}\n` : random(prng, 1 + (prng.u32() % 4000));
    fs.writeFileSync(path.join(dir, "etc/conf.d", `unit${i}.conf`), body);
  }
  for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(dir, "var/lib/data", `empty${i}`), "");
  fs.writeFileSync(path.join(dir, "var/lib/data", "zeros.bin"), Buffer.alloc(1024 * KIB));
  const sparse = fs.openSync(path.join(dir, "var/lib/data", "sparse.bin"), "w");
  fs.writeSync(sparse, blocks.b, 0, blocks.b.length, 3 * BLOCK);
  fs.ftruncateSync(sparse, 8 * BLOCK);
  fs.closeSync(sparse);
  fs.writeFileSync(path.join(dir, "var/lib/data", "blocks.bin"), Buffer.concat([blocks.a, blocks.a, blocks.a, blocks.b]));
  fs.writeFileSync(path.join(dir, "var/log", "syslog"), logText(700 * KIB, "syslog"));
  fs.writeFileSync(path.join(dir, "var/log", "syslog.1"), logText(700 * KIB, "syslog"));
}
