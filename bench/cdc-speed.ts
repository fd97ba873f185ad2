// Throughput of the content-defined chunker on random data.
//   node bench/cdc-speed.ts [MiB=256] [avgKiB=1024]
import { randomFillSync } from "node:crypto";
import { CdcChunker, cdcParams } from "../src/format/cdc-chunker.ts";

const mib = Number(process.argv[2] ?? 256);
const avgKiB = Number(process.argv[3] ?? 1024);
const size = mib * 1024 * 1024;
const data = new Uint8Array(size);
for (let o = 0; o < size; o += 64 * 1024 * 1024) {
  randomFillSync(data, o, Math.min(64 * 1024 * 1024, size - o));
}

const chunker = new CdcChunker(cdcParams(avgKiB * 1024));
const feed = 4 * 1024 * 1024; // bytes per call, as a reader would hand them over

function run(): { chunks: number; seconds: number } {
  chunker.reset();
  let chunks = 0;
  const t0 = process.hrtime.bigint();
  for (let off = 0; off < size; off += feed) {
    const end = Math.min(off + feed, size);
    let p = off;
    while (p < end) {
      const cut = chunker.next(data, p, end);
      if (cut < 0) break;
      chunks++;
      p = cut;
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { chunks: chunks + 1, seconds };
}

for (let round = 1; round <= 5; round++) {
  const { chunks, seconds } = run();
  const mbs = size / 1e6 / seconds;
  console.log(
    `round ${round}: ${mib} MiB, avg ${avgKiB} KiB: ${chunks} chunks (mean ${(size / chunks / 1024).toFixed(0)} KiB), ` +
      `${seconds.toFixed(3)} s, ${mbs.toFixed(0)} MB/s`,
  );
}
