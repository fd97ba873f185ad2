// Which fixed chunk size for block images? For the 2 GiB benchmark image and
// its copy with 500 random 4 KiB writes, computes directly (without gorde) how
// a content-addressed datastore with SHA-256 chunk ids and zstd level-1
// compression would grow, at several chunk sizes.
//
//   node bench/chunk-size.ts [--quick]
//
// Writes bench/chunk-size.md (not with --quick).

import { createHash } from "node:crypto";
import { closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { constants, zstdCompressSync } from "node:zlib";
import { BENCH_DIR, dataPaths, describeImage, ensureImage, FULL, fmtBytes, IMAGE_WRITES, QUICK, WRITE_SIZE } from "./data.ts";
import { formatTable } from "./report.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK_SIZES = [64 * KiB, 128 * KiB, 256 * KiB, 1 * MiB, 4 * MiB];
const READ_SIZE = 4 * MiB; // a multiple of every chunk size
const ZSTD = { params: { [constants.ZSTD_c_compressionLevel]: 1 } };

interface Acc {
  size: number;
  /** Chunk ids of the old image (the first backup). */
  seen: Set<string>;
  chunks: number;
  zeroChunks: number;
  uniqueChunks: number;
  uniqueRawBytes: number;
  storedBytes: number;
  compressMs: number;
  /** Second image: chunks not present before. */
  newIds: Set<string>;
  newChunks: number;
  newStoredBytes: number;
}

const log = (msg: string): void => {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`);
};

/** Calls fn for every chunk of every size, reading the file once. */
function scan(file: string, fn: (acc: Acc, chunk: Buffer, isZero: boolean) => void, accs: Acc[]): void {
  const buf = Buffer.allocUnsafe(READ_SIZE);
  const zero = Buffer.alloc(READ_SIZE);
  const fd = openSync(file, "r");
  try {
    for (;;) {
      let n = 0;
      while (n < READ_SIZE) {
        const r = readSync(fd, buf, n, READ_SIZE - n, null);
        if (r === 0) break;
        n += r;
      }
      if (n === 0) break;
      for (const acc of accs) {
        for (let off = 0; off < n; off += acc.size) {
          const end = Math.min(off + acc.size, n);
          const chunk = buf.subarray(off, end);
          fn(acc, chunk, chunk.compare(zero, 0, end - off) === 0);
        }
      }
      if (n < READ_SIZE) break;
    }
  } finally {
    closeSync(fd);
  }
}

function chunkId(chunk: Buffer): string {
  return createHash("sha256").update(chunk).digest("base64");
}

function compressedSize(acc: Acc, chunk: Buffer): number {
  const t0 = performance.now();
  const n = zstdCompressSync(chunk, ZSTD).length;
  acc.compressMs += performance.now() - t0;
  return n;
}

function main(): void {
  const quick = process.argv.includes("--quick");
  const sizes = quick ? QUICK : FULL;
  const info = ensureImage(sizes, log);
  const p = dataPaths(sizes);
  const started = Date.now();

  const accs: Acc[] = CHUNK_SIZES.map((size) => ({
    size,
    seen: new Set(),
    chunks: 0,
    zeroChunks: 0,
    uniqueChunks: 0,
    uniqueRawBytes: 0,
    storedBytes: 0,
    compressMs: 0,
    newIds: new Set(),
    newChunks: 0,
    newStoredBytes: 0,
  }));

  log(`first backup of ${p.image} at ${CHUNK_SIZES.map(fmtBytes).join(", ")} ...`);
  scan(
    p.image,
    (acc, chunk, isZero) => {
      acc.chunks++;
      if (isZero) {
        acc.zeroChunks++;
        return;
      }
      const id = chunkId(chunk);
      if (acc.seen.has(id)) return;
      acc.seen.add(id);
      acc.uniqueChunks++;
      acc.uniqueRawBytes += chunk.length;
      acc.storedBytes += compressedSize(acc, chunk);
    },
    accs,
  );

  log(`second backup of ${p.imageV2} ...`);
  scan(
    p.imageV2,
    (acc, chunk, isZero) => {
      if (isZero) return;
      const id = chunkId(chunk);
      if (acc.seen.has(id) || acc.newIds.has(id)) return;
      acc.newIds.add(id);
      acc.newChunks++;
      acc.newStoredBytes += compressedSize(acc, chunk);
    },
    accs,
  );

  const written = IMAGE_WRITES * WRITE_SIZE;
  const header = [
    "chunk size",
    "chunks / image",
    "zero chunks",
    "unique non-zero",
    "1st backup MB",
    "zstd-1 ratio",
    "index / snapshot KiB",
    "new chunk files",
    "growth MB",
    "growth / bytes written",
    "zstd-1 s",
  ];
  const rows = accs.map((a) => [
    fmtBytes(a.size),
    String(a.chunks),
    String(a.zeroChunks),
    String(a.uniqueChunks),
    (a.storedBytes / 1e6).toFixed(1),
    (a.uniqueRawBytes / a.storedBytes).toFixed(2),
    ((a.chunks * 32) / KiB).toFixed(0),
    String(a.newChunks),
    (a.newStoredBytes / 1e6).toFixed(2),
    `${(a.newStoredBytes / written).toFixed(1)}×`,
    (a.compressMs / 1000).toFixed(1),
  ]);
  const table = formatTable(header, rows, header.map((_, i) => i > 0));

  const out = [
    `# Image chunk size${quick ? " (quick, small image)" : ""}`,
    "",
    `- Date: ${new Date().toISOString()}; ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), ` +
      `${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, node ${process.version}; took ${((Date.now() - started) / 1000).toFixed(0)} s`,
    `- Image: ${describeImage(info)}`,
    `- Method (no gorde involved): split the image into fixed-size chunks, id = SHA-256; a chunk is stored once, ` +
      `compressed with zstd level 1 (node:zlib); all-zero chunks are not stored. "1st backup MB" = sum of the ` +
      `compressed unique non-zero chunks of the original image. "new chunk files" / "growth MB" = chunks of the ` +
      `modified image whose id did not exist before, and their compressed size. "growth / bytes written" relates ` +
      `the growth to the ${(written / 1e6).toFixed(3)} MB of random data written. "index / snapshot" = 32 bytes ` +
      `per chunk position, the minimum a snapshot's chunk list costs. "zstd-1 s" = time spent compressing ` +
      `(both passes, single thread, indicative only).`,
    "",
    table,
    "",
  ].join("\n");
  process.stdout.write(out);
  if (!quick) {
    writeFileSync(join(BENCH_DIR, "chunk-size.md"), out);
    log("wrote bench/chunk-size.md");
  }
}

main();
