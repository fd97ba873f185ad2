// Benchmark data: a raw ext4 image populated from /usr and a directory tree
// copied from /usr/lib (each with a folder of repeated data added), built once and
// cached under bench/data/. Also the seeded modifications applied between backups.

import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  ftruncateSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { Prng } from "./prng.ts";
import { sortedEntries } from "./fsutil.ts";
import { must } from "./proc.ts";

export const BENCH_DIR = import.meta.dirname;
export const DATA_DIR = join(BENCH_DIR, "data");
export const WORK_DIR = join(BENCH_DIR, "work");

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Bump when the way data is built changes, so caches are rebuilt. */
/** 2: the gorde-repeats folder (addRepeats) in the image and the tree. */
const DATA_VERSION = 2;

export const IMAGE_WRITES = 500;
export const WRITE_SIZE = 4 * KiB;
export const IMAGE_SEED = 0x60bde001;
export const TREE_SEED = 0x60bde002;
export const TREE_MODIFY_FRACTION = 0.01;

// Fixed file-system identity so that rebuilding the image gives the same bytes.
const FS_UUID = "6f726465-6265-6e63-682d-696d61676530";
const FS_FAKE_TIME = "1700000000";

export interface Sizes {
  label: "full" | "quick";
  imageBytes: number;
  /** Bytes of /usr copied into the image. */
  stageBudget: number;
  treeBudget: number;
  /** Files above this size are skipped for the tree (keeps it a many-file tree). */
  treeFileCap: number;
}

export const FULL: Sizes = {
  label: "full",
  imageBytes: 2 * GiB,
  stageBudget: 1_100_000_000,
  treeBudget: 1 * GiB,
  treeFileCap: 16 * MiB,
};

export const QUICK: Sizes = {
  label: "quick",
  imageBytes: 256 * MiB,
  stageBudget: 137_500_000,
  treeBudget: 100 * MiB,
  treeFileCap: 16 * MiB,
};

export interface CopyStats {
  files: number;
  bytes: number;
  symlinks: number;
  dirs: number;
  skippedLarge: number;
  skippedOther: number;
  stoppedAt: string | null;
}

export interface ImageInfo {
  version: number;
  bytes: number;
  stageBudget: number;
  source: string;
  stage: CopyStats;
  mkfs: string;
  zeroBlockFraction: number;
  writes: number;
  distinctBlocksWritten: number;
  built: string;
}

export interface TreeInfo {
  version: number;
  budget: number;
  fileCap: number;
  source: string;
  copy: CopyStats;
  built: string;
}

export interface DataPaths {
  dir: string;
  image: string;
  imageV2: string;
  imageInfo: string;
  tree: string;
  treeInfo: string;
}

export function dataPaths(sizes: Sizes): DataPaths {
  const dir = sizes.label === "full" ? DATA_DIR : join(DATA_DIR, "quick");
  return {
    dir,
    image: join(dir, "disk.img"),
    imageV2: join(dir, "disk-v2.img"),
    imageInfo: join(dir, "disk.json"),
    tree: join(dir, "tree"),
    treeInfo: join(dir, "tree.json"),
  };
}

type Log = (msg: string) => void;

/**
 * Copies a sorted depth-first walk of src into dst (regular files, symlinks
 * and directories; modes and mtimes kept) until `budget` bytes of file data
 * have been copied.
 */
export function copyBudgeted(src: string, dst: string, budget: number, fileCap: number): CopyStats {
  const stats: CopyStats = {
    files: 0,
    bytes: 0,
    symlinks: 0,
    dirs: 0,
    skippedLarge: 0,
    skippedOther: 0,
    stoppedAt: null,
  };
  const full = (): boolean => stats.bytes >= budget;

  const copyDir = (s: string, d: string): void => {
    const st = lstatSync(s);
    mkdirSync(d);
    stats.dirs++;
    let names: string[];
    try {
      names = sortedEntries(s);
    } catch {
      names = [];
    }
    for (const name of names) {
      if (full()) break;
      const sp = join(s, name);
      const dp = join(d, name);
      let cst;
      try {
        cst = lstatSync(sp);
      } catch {
        stats.skippedOther++;
        continue;
      }
      if (cst.isDirectory()) {
        copyDir(sp, dp);
      } else if (cst.isSymbolicLink()) {
        symlinkSync(readlinkSync(sp), dp);
        lutimesSync(dp, cst.atime, cst.mtime);
        stats.symlinks++;
      } else if (cst.isFile()) {
        if (cst.size > fileCap) {
          stats.skippedLarge++;
          continue;
        }
        try {
          copyFileSync(sp, dp);
        } catch {
          stats.skippedOther++;
          continue;
        }
        chmodSync(dp, cst.mode & 0o7777);
        utimesSync(dp, cst.atime, cst.mtime);
        stats.files++;
        stats.bytes += cst.size;
        if (full()) stats.stoppedAt = sp;
      } else {
        stats.skippedOther++;
      }
    }
    chmodSync(d, st.mode & 0o7777);
    utimesSync(d, st.atime, st.mtime);
  };
  copyDir(src, dst);
  return stats;
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return null;
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return -1;
  }
}

/** The seeded list of 4 KiB-aligned block offsets written into the image. */
/**
 * What users' disks hold more of than /usr: three copies of a 1 MiB document, 64 equal
 * small files, one 256 KiB block 16 times in a row (every 256 KiB window of it is the same
 * chunk, wherever ext4 puts it) and 4 MiB of zeros. Equal chunks in flight at once broke
 * uploads that distinct data never did. Seeded, with a fixed time: rebuilds are identical.
 */
export function addRepeats(dir: string): void {
  const d = join(dir, "gorde-repeats");
  mkdirSync(d);
  const prng = new Prng(0x60bde003);
  const block = Buffer.alloc(256 * KiB);
  for (let o = 0; o < block.length; o += 4) block.writeUInt32LE(prng.u32(), o);
  const lines: string[] = [];
  for (let i = 0, n = 0; n < MiB; i++) {
    const l = `${i}: the service answered request ${i} in ${i % 17} ms\n`;
    lines.push(l);
    n += l.length;
  }
  const files: [string, Buffer | string][] = [
    ["blocks.bin", Buffer.concat(Array.from({ length: 16 }, () => block))],
    ["zeros.bin", Buffer.alloc(4 * MiB)],
    ...[0, 1, 2].map((i): [string, string] => [`README.${i}`, lines.join("")]),
    ...Array.from({ length: 64 }, (_, i): [string, string] => [`unit${i}.conf`, "enabled=yes\n"]),
  ];
  const t = Number(FS_FAKE_TIME);
  for (const [name, body] of files) {
    writeFileSync(join(d, name), body);
    utimesSync(join(d, name), t, t);
  }
  utimesSync(d, t, t);
}

export function imageWriteOffsets(imageBytes: number): number[] {
  const prng = new Prng(IMAGE_SEED);
  const blocks = imageBytes / WRITE_SIZE;
  const out: number[] = [];
  for (let i = 0; i < IMAGE_WRITES; i++) {
    out.push(prng.below(blocks) * WRITE_SIZE);
  }
  return out;
}

/** Applies the seeded 500 random 4 KiB writes of random bytes in place. */
export function applyImageWrites(file: string, imageBytes: number): void {
  const offsets = imageWriteOffsets(imageBytes);
  const data = new Prng(IMAGE_SEED ^ 0x5a5a5a5a);
  const buf = Buffer.alloc(WRITE_SIZE);
  const fd = openSync(file, "r+");
  try {
    for (const off of offsets) {
      data.fill(buf);
      writeSync(fd, buf, 0, buf.length, off);
    }
  } finally {
    closeSync(fd);
  }
}

function zeroBlockFraction(file: string): number {
  const buf = Buffer.allocUnsafe(4 * MiB);
  const zero = Buffer.alloc(WRITE_SIZE);
  let zeros = 0;
  let blocks = 0;
  const fd = openSync(file, "r");
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      for (let o = 0; o + WRITE_SIZE <= n; o += WRITE_SIZE) {
        blocks++;
        if (buf.compare(zero, 0, WRITE_SIZE, o, o + WRITE_SIZE) === 0) zeros++;
      }
    }
  } finally {
    closeSync(fd);
  }
  return blocks === 0 ? 0 : zeros / blocks;
}

function imageCacheValid(p: DataPaths, sizes: Sizes): ImageInfo | null {
  const info = readJson<ImageInfo>(p.imageInfo);
  if (!info || info.version !== DATA_VERSION || info.bytes !== sizes.imageBytes) return null;
  if (info.stageBudget !== sizes.stageBudget) return null;
  if (sizeOf(p.image) !== sizes.imageBytes) return null;
  return info;
}

export function ensureImage(sizes: Sizes, log: Log): ImageInfo {
  const p = dataPaths(sizes);
  mkdirSync(p.dir, { recursive: true });
  let info = imageCacheValid(p, sizes);
  if (!info) {
    rmSync(p.imageInfo, { force: true });
    rmSync(p.imageV2, { force: true });
    const stage = join(p.dir, "image-stage.tmp");
    rmSync(stage, { recursive: true, force: true });
    log(`building ${p.image}: copying ${(sizes.stageBudget / 1e6).toFixed(0)} MB from /usr ...`);
    const stageStats = copyBudgeted("/usr", stage, sizes.stageBudget, Number.POSITIVE_INFINITY);
    addRepeats(stage);
    const tmp = p.image + ".tmp";
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, "w");
    ftruncateSync(fd, sizes.imageBytes);
    closeSync(fd);
    const mkfs = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-U", FS_UUID, "-E", `hash_seed=${FS_UUID}`, "-d", stage, tmp];
    log(`running ${mkfs.join(" ")}`);
    must(mkfs, { env: { E2FSPROGS_FAKE_TIME: FS_FAKE_TIME } });
    rmSync(stage, { recursive: true, force: true });
    const zf = zeroBlockFraction(tmp);
    renameSync(tmp, p.image);
    info = {
      version: DATA_VERSION,
      bytes: sizes.imageBytes,
      stageBudget: sizes.stageBudget,
      source: "/usr",
      stage: stageStats,
      mkfs:
        `truncate -s ${sizes.imageBytes}; mkfs.ext4 -q -F -b 4096 -U <fixed> -E hash_seed=<fixed> -d <stage> ` +
        `(E2FSPROGS_FAKE_TIME=${FS_FAKE_TIME})`,
      zeroBlockFraction: zf,
      writes: IMAGE_WRITES,
      distinctBlocksWritten: new Set(imageWriteOffsets(sizes.imageBytes)).size,
      built: new Date().toISOString(),
    };
    writeFileSync(p.imageInfo, JSON.stringify(info, null, 2) + "\n");
  }
  if (sizeOf(p.imageV2) !== sizes.imageBytes) {
    log(`building ${p.imageV2} (${IMAGE_WRITES} seeded random 4 KiB writes) ...`);
    const tmp = p.imageV2 + ".tmp";
    must(["cp", "--reflink=never", p.image, tmp]);
    applyImageWrites(tmp, sizes.imageBytes);
    renameSync(tmp, p.imageV2);
  }
  return info;
}

export function ensureTree(sizes: Sizes, log: Log): TreeInfo {
  const p = dataPaths(sizes);
  mkdirSync(p.dir, { recursive: true });
  const info = readJson<TreeInfo>(p.treeInfo);
  if (
    info &&
    info.version === DATA_VERSION &&
    info.budget === sizes.treeBudget &&
    info.fileCap === sizes.treeFileCap &&
    existsSync(p.tree)
  ) {
    return info;
  }
  rmSync(p.treeInfo, { force: true });
  rmSync(p.tree, { recursive: true, force: true });
  const tmp = p.tree + ".tmp";
  rmSync(tmp, { recursive: true, force: true });
  log(`building ${p.tree}: copying ${(sizes.treeBudget / MiB).toFixed(0)} MiB from /usr/lib ...`);
  const copy = copyBudgeted("/usr/lib", tmp, sizes.treeBudget, sizes.treeFileCap);
  addRepeats(tmp);
  renameSync(tmp, p.tree);
  const out: TreeInfo = {
    version: DATA_VERSION,
    budget: sizes.treeBudget,
    fileCap: sizes.treeFileCap,
    source: "/usr/lib",
    copy,
    built: new Date().toISOString(),
  };
  writeFileSync(p.treeInfo, JSON.stringify(out, null, 2) + "\n");
  return out;
}

export interface TreeModification {
  files: number;
  overwritten: number;
  appended: number;
  bytesWritten: number;
}

/** Regular files below root, relative paths in sorted-walk order. */
export function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    for (const name of sortedEntries(dir)) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(join(dir, name));
      if (st.isDirectory()) walk(join(dir, name), r);
      else if (st.isFile()) out.push(r);
    }
  };
  walk(root, "");
  return out;
}

/**
 * Modifies 1% of the regular files (seeded choice): each either gets a 4 KiB
 * region overwritten at a 4 KiB-aligned offset or 4 KiB appended, and its
 * mtime set to now.
 */
export function modifyTree(root: string): TreeModification {
  const files = listFiles(root);
  const prng = new Prng(TREE_SEED);
  const count = Math.max(1, Math.round(files.length * TREE_MODIFY_FRACTION));
  // Partial Fisher-Yates shuffle picks `count` distinct files.
  const idx = files.map((_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + prng.below(idx.length - i);
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  const mod: TreeModification = { files: count, overwritten: 0, appended: 0, bytesWritten: 0 };
  const buf = Buffer.alloc(WRITE_SIZE);
  const now = new Date();
  for (let i = 0; i < count; i++) {
    const path = join(root, files[idx[i]!]!);
    const size = statSync(path).size;
    const overwrite = prng.below(2) === 0 && size >= WRITE_SIZE;
    const offset = overwrite ? prng.below(Math.floor(size / WRITE_SIZE)) * WRITE_SIZE : size;
    prng.fill(buf);
    const fd = openSync(path, "r+");
    try {
      writeSync(fd, buf, 0, buf.length, offset);
    } finally {
      closeSync(fd);
    }
    utimesSync(path, now, now);
    if (overwrite) mod.overwritten++;
    else mod.appended++;
    mod.bytesWritten += WRITE_SIZE;
  }
  return mod;
}

export function describeImage(info: ImageInfo): string {
  const s = info.stage;
  return (
    `${fmtBytes(info.bytes)} raw ext4 image (\`truncate\` + \`mkfs.ext4 -d\`) holding ${s.files} files / ` +
    `${s.symlinks} symlinks / ${s.dirs} dirs = ${(s.bytes / 1e6).toFixed(0)} MB copied from ${info.source} ` +
    `(sorted walk, stopped at ${(info.stageBudget / 1e6).toFixed(0)} MB); ` +
    `${(info.zeroBlockFraction * 100).toFixed(1)}% of its 4 KiB blocks are zero. ` +
    `Change between backups: ${info.writes} random 4 KiB writes of random bytes at 4 KiB-aligned offsets ` +
    `(${info.distinctBlocksWritten} distinct blocks, seed 0x${IMAGE_SEED.toString(16)}).`
  );
}

export function describeTree(info: TreeInfo, mod?: TreeModification): string {
  const c = info.copy;
  let s =
    `${c.files} files / ${c.symlinks} symlinks / ${c.dirs} dirs, ${(c.bytes / 1e6).toFixed(0)} MB copied from ` +
    `${info.source} (sorted walk, modes and mtimes kept, files over ${fmtBytes(info.fileCap)} skipped ` +
    `[${c.skippedLarge}], stopped at ${fmtBytes(info.budget)}).`;
  if (mod) {
    s +=
      ` Change between backups: ${mod.files} files (1%, seed 0x${TREE_SEED.toString(16)}): ` +
      `${mod.overwritten} got a 4 KiB region overwritten, ${mod.appended} got 4 KiB appended; mtime set to now.`;
  }
  return s;
}

export function fmtBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}
