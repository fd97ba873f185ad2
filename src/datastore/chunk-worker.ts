// Worker thread: the CPU and the blocking file work of chunks, off the main thread.
// encode: hash, skip if stored, compress (and encrypt), write the chunk's temp file or,
//   when uploading, hand the encoded chunk back.
// store: check an uploaded chunk (CRC, crypt mode, digest unless encrypted) and write its
//   temp file unless a chunk of the same crypt mode is stored under its name.
// commit: one syncfs for a batch of temp files, then rename them to their names.
// load: read a chunk file, check its CRC, decompress, check its digest.
// The main thread only reads the source and hands out work; with one more worker
// than cores, one waiting in fdatasync leaves the cores to the others.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parentPort } from "node:worker_threads";
import { checkBlob, decodeBlob, encodeBlob } from "../format/blob.ts";
import { type ChunkKey, deriveChunkKey, chunkDigestHex } from "../format/crypt.ts";
import { SHARD_HEX } from "../format/magic.ts";
import { mallocTrim } from "../sys/posix.ts";
import { type ErrorCode, GordeError, systemCode } from "../errors.ts";
import type { StoreResult, StoredChunk, WorkerError, WorkerReply, WorkerRequest } from "./chunk-pool.ts";
import { commitChunks, readChunkFile, storedKindAt, writeChunkTemp } from "./chunk-store.ts";

let chunkDir: string | null = null;
let level = 1;
let key: ChunkKey | undefined;
let known = new Set<string>();
const shards = new Set<string>();

// Chunk buffers move between threads, so this thread's malloc arena keeps memory
// that other threads freed: give it back every 32 MiB of work.
const TRIM_EVERY = 32 * 1024 * 1024;
let sinceTrim = 0;

function account(bytes: number): void {
  sinceTrim += bytes;
  if (sinceTrim >= TRIM_EVERY) {
    sinceTrim = 0;
    mallocTrim();
  }
}

function chunkFile(dir: string, hex: string): string {
  return path.join(dir, hex.slice(0, SHARD_HEX), hex);
}

/**
 * Stored already: in the chunk directory as a blob of this backup's crypt mode, or
 * (uploading) in the previous snapshot. A plain chunk's name stored as an encrypted blob
 * was not written by whoever computed the digest (a hostile upload): stored again.
 */
function chunkExists(hex: string): boolean {
  if (chunkDir === null) return known.has(hex);
  if (known.has(hex)) return fs.existsSync(chunkFile(chunkDir, hex));
  const kind = storedKindAt(chunkFile(chunkDir, hex));
  return kind === "plain" || (key !== undefined && kind === "encrypted");
}

function digestHex(data: Uint8Array): string {
  return chunkDigestHex(data, key);
}

function needDir(): string {
  if (chunkDir === null) throw new Error("no chunk directory: this pool uploads chunks");
  return chunkDir;
}

function decodeChecked(blob: Buffer, hex: string): Buffer {
  const data = decodeBlob(blob, `chunk ${hex}`, undefined, key);
  if (digestHex(data) !== hex) {
    throw new GordeError("corrupt", `chunk ${hex} does not match its digest.`);
  }
  account(data.length);
  return data;
}

/** A whole file, opened without following a symlink. */
function readWhole(file: Buffer): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const size = fs.fstatSync(fd).size;
    const parts: Buffer[] = [];
    let total = 0;
    let want = size + 1; // +1 notices a file that grew
    while (true) {
      const buf = Buffer.allocUnsafeSlow(want);
      const n = fs.readSync(fd, buf, 0, want, total);
      if (n === 0) break;
      parts.push(buf.subarray(0, n));
      total += n;
      if (n < want) break;
      want = 64 * 1024;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A thrown error as it crosses to the main thread: gorde's own codes pass through; a
 * failed system call (ENOSPC, EIO, …) is an I/O failure that keeps its errno.
 */
function toWorkerError(err: unknown): WorkerError {
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === "string" ? e.message : String(err);
  const code: ErrorCode = PASSED.has(e?.code as ErrorCode) ? (e.code as ErrorCode) : "io";
  const errno = code === "io" && !(err instanceof GordeError) ? systemCode(err) : undefined;
  return errno === undefined ? { code, message } : { code, message, errno };
}

const PASSED = new Set<ErrorCode>(["corrupt", "unsupported", "invalid"]);

function transferable(b: Buffer): ArrayBuffer {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length
    ? (b.buffer as ArrayBuffer)
    : (b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer);
}

/**
 * Checks an uploaded blob (CRC, crypt mode; unless encrypted, digest and size) and writes
 * its temp file unless the chunk is stored. What is stored decides (docs/server.md):
 * - nothing: written; a plain chunk may replace, an encrypted one never does;
 * - a blob of the same crypt mode: kept, the upload is dropped;
 * - an encrypted blob under the name of a plain chunk whose digest this upload proved:
 *   not that chunk's data (a hostile upload), so the checked plain chunk replaces it;
 * - a plain blob under the name an encrypted upload gives: kept (a keyed digest never
 *   equals the plain digest of stored data); the upload is dropped and `shadowed` set.
 * `written` holds the digests of this batch already written: a repeat is checked, not written.
 */
function storeOne(blob: Buffer, hex: string, declared: number | null, expectEncrypted: boolean | null, written: Set<string>): StoredChunk {
  const what = `chunk ${hex}`;
  const { encrypted } = checkBlob(blob, what);
  if (expectEncrypted !== null && encrypted !== expectEncrypted) {
    throw new GordeError("invalid", `${what} is ${encrypted ? "encrypted" : "not encrypted"} but the backup was opened ${expectEncrypted ? "with" : "without"} a key.`);
  }
  let size: number | null = null;
  if (!encrypted) {
    // The server has no key: it checks what it can, the digest of plain chunks.
    const data = decodeBlob(blob, what);
    if (createHash("sha256").update(data).digest("hex") !== hex) {
      throw new GordeError("invalid", `${what} does not match its digest.`);
    }
    if (declared !== null && data.length !== declared) {
      throw new GordeError("invalid", `${what} has ${data.length} bytes, not the ${declared} it was declared with.`);
    }
    size = data.length;
    account(data.length);
  }
  if (written.has(hex)) return { state: "repeat", encrypted, size };
  const dir = needDir();
  const stored = storedKindAt(chunkFile(dir, hex));
  if (stored === "plain" || (stored !== "absent" && encrypted)) {
    return stored === "plain" && encrypted ? { state: "exists", encrypted, size, shadowed: true } : { state: "exists", encrypted, size };
  }
  const pending = writeChunkTemp(dir, hex, blob, shards, { sync: false, replace: !encrypted });
  written.add(hex);
  return { state: "new", pending, encrypted, size };
}

function handle(msg: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  switch (msg.op) {
    case "init": {
      chunkDir = msg.chunkDir;
      level = msg.level;
      key = msg.master ? deriveChunkKey(new Uint8Array(msg.master)) : undefined;
      known = new Set();
      const k = Buffer.from(msg.known);
      for (let o = 0; o + 32 <= k.length; o += 32) known.add(k.toString("hex", o, o + 32));
      return { reply: { id: msg.id, op: "init" }, transfer: [] };
    }
    case "encode": {
      const data = Buffer.from(msg.data, msg.offset, msg.length);
      const hex = digestHex(data);
      // Chunks already stored (known from the base snapshot or not) are not compressed.
      // The data goes back: the caller stores it again if the chunk vanishes before it is touched.
      if (!msg.force && chunkExists(hex)) {
        const state = known.has(hex) ? "known" : "exists";
        return { reply: { id: msg.id, op: "encode", hex, state, data: msg.data }, transfer: [msg.data] };
      }
      const blob = encodeBlob(data, level, key);
      account(data.length);
      if (chunkDir === null) {
        const b = transferable(blob);
        return {
          reply: { id: msg.id, op: "encode", hex, state: "new", stored: blob.length, blob: b, data: msg.data },
          transfer: [msg.data, b],
        };
      }
      const pending = writeChunkTemp(chunkDir, hex, blob, shards, { sync: false, replace: key === undefined });
      // The data goes back too, for the caller to reuse its memory.
      return {
        reply: { id: msg.id, op: "encode", hex, state: "new", stored: blob.length, pending, data: msg.data },
        transfer: [msg.data],
      };
    }
    case "store": {
      const r = storeOne(Buffer.from(msg.blob), msg.hex, msg.size, msg.encrypted, new Set());
      return { reply: { id: msg.id, op: "store", ...r }, transfer: [] };
    }
    case "storeBatch": {
      // The batch body comes back for the caller to reuse: allocating one per request
      // kept the garbage collector busy.
      const body = Buffer.from(msg.body);
      const written = new Set<string>();
      const results: StoreResult[] = msg.records.map((rec) => {
        try {
          return storeOne(body.subarray(rec.offset, rec.offset + rec.length), rec.hex, rec.size, msg.encrypted, written);
        } catch (err) {
          return { error: toWorkerError(err) };
        }
      });
      return { reply: { id: msg.id, op: "storeBatch", results, body: msg.body }, transfer: [msg.body] };
    }
    case "commit": {
      commitChunks(needDir(), msg.batch);
      return { reply: { id: msg.id, op: "commit" }, transfer: [] };
    }
    case "readFiles": {
      const datas: (ArrayBuffer | WorkerError)[] = [];
      const transfer: ArrayBuffer[] = [];
      for (const p of msg.paths) {
        try {
          const ab = transferable(readWhole(Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
          account(ab.byteLength);
          datas.push(ab);
          transfer.push(ab);
        } catch (err) {
          datas.push(toWorkerError(err));
        }
      }
      return { reply: { id: msg.id, op: "files", datas }, transfer };
    }
    case "check": {
      const blob = Buffer.from(msg.blob);
      if (!key && checkBlob(blob, `chunk ${msg.hex}`).encrypted) return { reply: { id: msg.id, op: "check", encrypted: true }, transfer: [] };
      decodeChecked(blob, msg.hex);
      return { reply: { id: msg.id, op: "check", encrypted: false }, transfer: [] };
    }
    case "decode": {
      const data = decodeChecked(Buffer.from(msg.blob), msg.hex);
      const ab = transferable(data);
      return { reply: { id: msg.id, op: "decode", data: ab }, transfer: [ab] };
    }
    case "load": {
      const data = decodeChecked(readChunkFile(needDir(), msg.hex), msg.hex);
      const ab = transferable(data);
      return { reply: { id: msg.id, op: "decode", data: ab }, transfer: [ab] };
    }
  }
}

parentPort!.on("message", (msg: WorkerRequest) => {
  try {
    const { reply, transfer } = handle(msg);
    parentPort!.postMessage(reply, transfer);
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, op: "error", ...toWorkerError(err) } satisfies WorkerReply);
  }
});
