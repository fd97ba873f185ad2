import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { CdcChunker, cdcParams, gearTable, type CdcParams } from "./cdc-chunker.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
function randomBytes(size: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, size);
}

/** A small deterministic generator for piece sizes. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Chunk end offsets of `data` fed to a fresh chunker in pieces of the given sizes (one
 * piece when omitted); the end of the data closes the last chunk.
 */
function chunkEnds(params: CdcParams, data: Uint8Array, pieceSize?: () => number): number[] {
  const chunker = new CdcChunker(params);
  const ends: number[] = [];
  let off = 0;
  while (off < data.length) {
    const end = pieceSize === undefined ? data.length : Math.min(data.length, off + pieceSize());
    let p = off;
    while (p < end) {
      const cut = chunker.next(data, p, end);
      if (cut < 0) break;
      assert.ok(cut > p && cut <= end, `cut ${cut} outside ${p}..${end}`);
      ends.push(cut);
      p = cut;
    }
    off = end;
  }
  if (ends.at(-1) !== data.length) ends.push(data.length);
  return ends;
}

function lengths(ends: number[]): number[] {
  return ends.map((e, i) => e - (i === 0 ? 0 : ends[i - 1]!));
}

function isUsage(err: unknown): boolean {
  return err instanceof GordeError && err.code === "usage";
}

void describe("cdcParams", () => {
  void it("derives min and max from the average", () => {
    assert.deepEqual(cdcParams(64 * KiB), { avgSize: 64 * KiB, minSize: 16 * KiB, maxSize: 256 * KiB });
    assert.deepEqual(cdcParams(1 * MiB), { avgSize: 1 * MiB, minSize: 256 * KiB, maxSize: 4 * MiB });
    assert.deepEqual(cdcParams(4 * MiB), { avgSize: 4 * MiB, minSize: 1 * MiB, maxSize: 16 * MiB });
    // the maximum is capped at the format's largest chunk, 16 MiB
    assert.deepEqual(cdcParams(8 * MiB), { avgSize: 8 * MiB, minSize: 2 * MiB, maxSize: 16 * MiB });
  });

  void it("accepts only powers of two from 64 KiB to 8 MiB", () => {
    for (const bad of [32 * KiB, 16 * MiB, 100_000, 3 * 64 * KiB, 65536.5, -65536, 0, Number.NaN, Infinity]) {
      assert.throws(() => cdcParams(bad), isUsage, String(bad));
    }
  });

  void it("the chunker checks its parameters", () => {
    const ok = cdcParams(64 * KiB);
    assert.throws(() => new CdcChunker({ ...ok, avgSize: 100_000 }), isUsage);
    assert.throws(() => new CdcChunker({ ...ok, minSize: 64 * KiB }), isUsage);
    assert.throws(() => new CdcChunker({ ...ok, minSize: -1 }), isUsage);
    assert.throws(() => new CdcChunker({ ...ok, maxSize: 64 * KiB }), isUsage);
    assert.throws(() => new CdcChunker({ ...ok, maxSize: 32 * MiB }), isUsage);
    assert.doesNotThrow(() => new CdcChunker({ avgSize: 64 * KiB, minSize: 0, maxSize: 128 * KiB }));
  });
});

void describe("CdcChunker", () => {
  const p64 = cdcParams(64 * KiB);

  void it("keeps the gear table and the cut points of existing datastores", () => {
    const g = gearTable();
    assert.equal(g.length, 256);
    assert.deepEqual(
      [0, 1, 2, 3, 127, 128, 254, 255].map((i) => g[i]),
      [0x8b45a14e, 0x3e1b70d4, 0xc8691059, 0x67cda1e8, 0xc1eb510c, 0x239679bc, 0xab7c4db3, 0xea417488],
    );
    const data = randomBytes(2 * MiB, 0x5eed);
    assert.deepEqual(chunkEnds(p64, data).slice(0, 12), GOLDEN_ENDS_64K);
    assert.deepEqual(chunkEnds(cdcParams(256 * KiB), data), GOLDEN_ENDS_256K);
  });

  void it("finds the same cut points whether fed at once or in random pieces", () => {
    const data = randomBytes(8 * MiB, 1);
    const whole = chunkEnds(p64, data);
    assert.ok(whole.length > 50);
    for (const [seed, maxPiece] of [
      [1, 16],
      [2, 4 * KiB],
      [3, 100 * KiB],
      [4, 1 * MiB],
    ] as const) {
      const r = rng(seed);
      const pieces = chunkEnds(p64, data, () => 1 + r(maxPiece));
      assert.deepEqual(pieces, whole, `pieces up to ${maxPiece} bytes`);
    }
    // also when the pieces are separate buffers
    const chunker = new CdcChunker(p64);
    const r = rng(9);
    const ends: number[] = [];
    for (let off = 0; off < data.length; ) {
      const piece = data.slice(off, Math.min(data.length, off + 1 + r(300 * KiB)));
      let p = 0;
      while (p < piece.length) {
        const cut = chunker.next(piece, p);
        if (cut < 0) break;
        ends.push(off + cut);
        p = cut;
      }
      off += piece.length;
    }
    ends.push(data.length);
    assert.deepEqual(ends, whole);
  });

  void it("keeps every chunk but the last within (min, max]", () => {
    for (const params of [p64, cdcParams(128 * KiB), { avgSize: 64 * KiB, minSize: 1 * KiB, maxSize: 80 * KiB }]) {
      const data = randomBytes(16 * MiB, 2);
      const sizes = lengths(chunkEnds(params, data));
      for (const s of sizes.slice(0, -1)) {
        assert.ok(s > params.minSize && s <= params.maxSize, `chunk of ${s} bytes`);
      }
      assert.ok(sizes.at(-1)! <= params.maxSize);
    }
  });

  void it("averages close to the configured size on random data", () => {
    for (const [avg, mib] of [
      [64 * KiB, 32],
      [256 * KiB, 64],
      [1 * MiB, 128],
    ] as const) {
      const data = randomBytes(mib * MiB, avg);
      const sizes = lengths(chunkEnds(cdcParams(avg), data)).slice(0, -1);
      const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
      assert.ok(Math.abs(mean - avg) <= avg * 0.25, `mean ${mean} for average ${avg}`);
    }
  });

  void it("resynchronises after an insertion, a deletion and an overwrite", () => {
    const base = randomBytes(16 * MiB, 3);
    const before = chunkEnds(p64, base);
    const chunkSet = (ends: number[], data: Uint8Array): Set<string> =>
      new Set(ends.map((e, i) => Buffer.from(data.subarray(i === 0 ? 0 : ends[i - 1]!, e)).toString("base64")));
    const baseChunks = chunkSet(before, base);

    const edits: [string, Uint8Array, number][] = [
      // [name, edited data, chunks allowed to differ]
      ["insert 100 bytes at the start", concat(randomBytes(100, 4), base), 3],
      ["insert 1 byte at the start", concat(new Uint8Array([7]), base), 3],
      ["delete 5000 bytes in the middle", concat(base.subarray(0, 8 * MiB), base.subarray(8 * MiB + 5000)), 4],
      ["overwrite 10 bytes in the middle", concat(base.subarray(0, 8 * MiB), randomBytes(10, 5), base.subarray(8 * MiB + 10)), 4],
    ];
    for (const [name, edited, allowed] of edits) {
      const ends = chunkEnds(p64, edited);
      const chunks = chunkSet(ends, edited);
      let shared = 0;
      for (const c of chunks) if (baseChunks.has(c)) shared++;
      assert.ok(shared >= baseChunks.size - allowed, `${name}: ${shared} of ${baseChunks.size} chunks shared`);
    }
  });

  void it("cuts all-zero data at the maximum size", () => {
    const data = new Uint8Array(3 * p64.maxSize + 1000);
    assert.deepEqual(chunkEnds(p64, data), [p64.maxSize, 2 * p64.maxSize, 3 * p64.maxSize, data.length]);
    const r = rng(6);
    assert.deepEqual(chunkEnds(p64, data, () => 1 + r(50 * KiB)), [p64.maxSize, 2 * p64.maxSize, 3 * p64.maxSize, data.length]);
  });

  void it("reset() starts a new chunk", () => {
    const data = randomBytes(4 * MiB, 7);
    const chunker = new CdcChunker(p64);
    // Consume part of a chunk, then cut by hand at 10000 (as at the end of a file).
    assert.equal(chunker.next(data, 0, 10_000), -1);
    assert.equal(chunker.pending, 10_000);
    chunker.reset();
    assert.equal(chunker.pending, 0);
    const rest = data.subarray(10_000);
    const expected = chunkEnds(p64, rest)[0]!;
    assert.equal(chunker.next(data, 10_000), 10_000 + expected);
  });

  void it("handles empty ranges and rejects ranges outside the buffer", () => {
    const chunker = new CdcChunker(p64);
    const data = new Uint8Array(100);
    assert.equal(chunker.next(data, 100), -1);
    assert.equal(chunker.next(data, 5, 5), -1);
    assert.equal(chunker.pending, 0);
    assert.throws(() => chunker.next(data, 0, 101), isUsage);
    assert.throws(() => chunker.next(data, -1), isUsage);
    assert.throws(() => chunker.next(data, 50, 40), isUsage);
  });
});

// Chunk ends of randomBytes(2 MiB, 0x5eed): the first 12 with a 64 KiB average, all of
// them with 256 KiB. Checked against an independent implementation of the rules in
// cdc-chunker.ts.
const GOLDEN_ENDS_64K = [55488, 132475, 153641, 233896, 305790, 391155, 433945, 501192, 534446, 603902, 654417, 723173];
const GOLDEN_ENDS_256K = [351044, 433945, 501192, 820198, 1083340, 1389522, 1582734, 1682120, 1801599, 1978868, 2097152];
