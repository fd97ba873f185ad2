// Worker thread: hashing, compression and decompression, off the main thread.
// The main thread reads and writes files; two of these keep both cores busy.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parentPort } from "node:worker_threads";
import { decodeBlob, encodeBlob } from "../format/blob.ts";
import { mallocTrim } from "../sys/posix.ts";
import type { WorkerReply, WorkerRequest } from "./chunk-pool.ts";

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

let chunkDir = "";
let level = 1;
let known = new Set<string>();

function chunkExists(hex: string): boolean {
  return fs.existsSync(path.join(chunkDir, hex.slice(0, 4), hex));
}

function handle(msg: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  switch (msg.op) {
    case "init": {
      chunkDir = msg.chunkDir;
      level = msg.level;
      known = new Set();
      const k = Buffer.from(msg.known);
      for (let o = 0; o + 32 <= k.length; o += 32) known.add(k.toString("hex", o, o + 32));
      return { reply: { id: msg.id, op: "init" }, transfer: [] };
    }
    case "encode": {
      const data = Buffer.from(msg.data, msg.offset, msg.length);
      const digest = createHash("sha256").update(data).digest();
      const hex = digest.toString("hex");
      // A chunk the previous snapshot has, or that the store already holds, is not compressed.
      // Known chunks are checked too: one that verify moved aside must be stored again.
      if (!msg.force && chunkExists(hex)) {
        // The data goes back: the caller stores it again if the chunk vanishes before it is touched.
        const state = known.has(hex) ? "known" : "exists";
        return { reply: { id: msg.id, op: "encode", hex, state, data: msg.data }, transfer: [msg.data] };
      }
      const blob = encodeBlob(data, level);
      account(data.length);
      const ab = blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.length) as ArrayBuffer;
      return { reply: { id: msg.id, op: "encode", hex, state: "new", blob: ab }, transfer: [ab] };
    }
    case "decode": {
      const data = decodeBlob(Buffer.from(msg.blob), `chunk ${msg.hex}`);
      account(data.length);
      const got = createHash("sha256").update(data).digest("hex");
      if (got !== msg.hex) {
        return { reply: { id: msg.id, op: "error", code: "corrupt", message: `chunk ${msg.hex} does not match its digest.` }, transfer: [] };
      }
      const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer;
      return { reply: { id: msg.id, op: "decode", data: ab }, transfer: [ab] };
    }
  }
}

parentPort!.on("message", (msg: WorkerRequest) => {
  try {
    const { reply, transfer } = handle(msg);
    parentPort!.postMessage(reply, transfer);
  } catch (err) {
    const e = err as { code?: string; message: string };
    parentPort!.postMessage({ id: msg.id, op: "error", code: e.code ?? "io", message: e.message } satisfies WorkerReply);
  }
});
