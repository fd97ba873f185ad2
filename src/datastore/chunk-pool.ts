// A small pool of worker threads for chunk CPU work (hash + compress, decompress + verify).
import os from "node:os";
import { Worker } from "node:worker_threads";
import { GordeError, type ErrorCode } from "../errors.ts";
import type { PendingChunk } from "./chunk-store.ts";

export type WorkerRequest =
  | { id: number; op: "init"; chunkDir: string | null; level: number; known: ArrayBuffer; master: ArrayBuffer | null }
  | { id: number; op: "encode"; data: ArrayBuffer; offset: number; length: number; force: boolean }
  | { id: number; op: "decode"; blob: ArrayBuffer; hex: string }
  | { id: number; op: "check"; blob: ArrayBuffer; hex: string }
  | { id: number; op: "load"; hex: string }
  | { id: number; op: "commit"; batch: PendingChunk[] }
  | { id: number; op: "readFiles"; paths: Uint8Array[] }
  | { id: number; op: "store"; blob: ArrayBuffer; hex: string; size: number | null; encrypted: boolean | null }
  | { id: number; op: "storeBatch"; body: ArrayBuffer; records: BatchRecord[]; encrypted: boolean | null };

/** A chunk of a batch body: its digest, plain size and where its blob lies in the body. */
export interface BatchRecord {
  hex: string;
  size: number;
  offset: number;
  length: number;
}

export type WorkerReply =
  | { id: number; op: "init" }
  | {
      id: number;
      op: "encode";
      hex: string;
      state: "known" | "exists" | "new";
      stored?: number;
      pending?: PendingChunk;
      data?: ArrayBuffer;
      blob?: ArrayBuffer;
    }
  | ({ id: number; op: "store" } & StoredChunk)
  | { id: number; op: "storeBatch"; results: StoreResult[]; body: ArrayBuffer }
  | { id: number; op: "commit" }
  | { id: number; op: "check"; encrypted: boolean }
  | { id: number; op: "files"; datas: (ArrayBuffer | WorkerError)[] }
  | { id: number; op: "decode"; data: ArrayBuffer }
  | ({ id: number; op: "error" } & WorkerError);

/**
 * A failure as it crosses from a worker thread: gorde's code (a system error is "io"),
 * the sentence, and the code of the failed system call (ENOSPC, ENOENT, …) if one failed.
 * The receiving side branches on the codes, never on the sentence.
 */
export interface WorkerError {
  code: ErrorCode;
  message: string;
  errno?: string;
}

/** The error a worker reported, as a GordeError whose cause carries the system call's code. */
export function fromWorker(e: WorkerError): GordeError {
  return new GordeError(e.code, e.message, e.errno === undefined ? undefined : { cause: Object.assign(new Error(e.message), { code: e.errno }) });
}

export interface Encoded {
  hex: string;
  /** known: in the base snapshot and stored; exists: stored; new: stored by this call */
  state: "known" | "exists" | "new";
  /** new: bytes written to a temp file that `commit` makes durable and names */
  stored?: number;
  pending?: PendingChunk;
  /** the submitted data, returned for chunks that were not written */
  data?: Buffer;
  /** upload mode (no chunk directory): the encoded chunk to send */
  blob?: Buffer;
}

export interface StoredChunk {
  /** new: written to a temp file; exists: stored already; repeat: written by an earlier record of the batch */
  state: "exists" | "new" | "repeat";
  pending?: PendingChunk;
  encrypted: boolean;
  size: number | null;
  /** an encrypted upload under the name of a stored plain chunk: the plain chunk stays */
  shadowed?: true;
}

/** One record of a batch: stored, or the error that refused it. */
export type StoreResult = StoredChunk | { error: WorkerError };

/** `size`: the plain size, when the blob could be decoded (not encrypted). */
export type Stored = StoredChunk;

interface Pending {
  resolve(r: WorkerReply): void;
  reject(e: Error): void;
}

export class ChunkPool {
  private workers: Worker[] = [];
  private busy: number[] = [];
  private pending = new Map<number, Pending & { worker: number }>();
  private nextId = 1;
  private failed: Error | undefined;

  /** One more worker than cores: a worker waiting on the disk leaves the cores busy. */
  constructor(size = Math.min(4, os.availableParallelism() + 1)) {
    for (let i = 0; i < size; i++) {
      // A small young generation: chunk buffers live briefly and are large (external).
      const w = new Worker(new URL("./chunk-worker.ts", import.meta.url), { resourceLimits: { maxYoungGenerationSizeMb: 4 } });
      w.on("message", (r: WorkerReply) => this.settle(r));
      w.on("error", (e: Error) => this.fail(e));
      this.workers.push(w);
      this.busy.push(0);
    }
  }

  private settle(r: WorkerReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    this.busy[p.worker]!--;
    if (r.op === "error") p.reject(fromWorker(r));
    else p.resolve(r);
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private call(req: WorkerRequest, transfer: ArrayBuffer[], worker?: number): Promise<WorkerReply> {
    if (this.failed) return Promise.reject(this.failed);
    let w = worker ?? 0;
    if (worker === undefined) for (let i = 1; i < this.workers.length; i++) if (this.busy[i]! < this.busy[w]!) w = i;
    this.busy[w]!++;
    return new Promise((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject, worker: w });
      this.workers[w]!.postMessage(req, transfer);
    });
  }

  /**
   * Sets, for every worker, the chunk directory (null: chunks are uploaded, not written),
   * the digests of the previous snapshot and the master key of an encrypted backup.
   */
  async init(chunkDir: string | null, level: number, known: Buffer, master?: Uint8Array): Promise<void> {
    await Promise.all(
      this.workers.map((_, i) => {
        const copy = new Uint8Array(known).buffer;
        const key = master ? new Uint8Array(master).buffer : null;
        return this.call({ id: this.nextId++, op: "init", chunkDir, level, known: copy, master: key }, [copy], i);
      }),
    );
  }

  /**
   * Hashes `data` (its buffer is transferred: do not use it afterwards) and, unless
   * stored, compresses it into a temp file that `commit` must name.
   */
  async encode(data: Buffer, force = false): Promise<Encoded> {
    // Transfer, never clone: a view into a larger buffer is copied out first.
    const ab = ownsBuffer(data) ? (data.buffer as ArrayBuffer) : (new Uint8Array(data).buffer as ArrayBuffer);
    const r = await this.call({ id: this.nextId++, op: "encode", data: ab, offset: 0, length: ab.byteLength, force }, [ab]);
    if (r.op !== "encode") throw new Error("unexpected worker reply");
    return {
      hex: r.hex,
      state: r.state,
      stored: r.stored,
      pending: r.pending,
      data: r.data ? Buffer.from(r.data) : undefined,
      blob: r.blob ? Buffer.from(r.blob) : undefined,
    };
  }

  /**
   * Checks an uploaded blob (CRC, crypt mode unless `encrypted` is null; unless encrypted,
   * its digest and `size`) and writes it to a temp file that `commit` names; a chunk stored
   * with the same crypt mode is left as it is (chunk-worker.ts, storeOne).
   */
  async store(blob: Buffer, hex: string, size: number | null, encrypted: boolean | null): Promise<Stored> {
    const ab = ownsBuffer(blob) ? (blob.buffer as ArrayBuffer) : (new Uint8Array(blob).buffer as ArrayBuffer);
    const r = await this.call({ id: this.nextId++, op: "store", blob: ab, hex, size, encrypted }, [ab]);
    if (r.op !== "store") throw new Error("unexpected worker reply");
    return { state: r.state, pending: r.pending, encrypted: r.encrypted, size: r.size, ...(r.shadowed ? { shadowed: true as const } : {}) };
  }

  /** Decodes a blob and checks its digest; the blob's buffer is transferred. */
  async decode(blob: Buffer, hex: string): Promise<Buffer> {
    const ab = ownsBuffer(blob) ? (blob.buffer as ArrayBuffer) : (new Uint8Array(blob).buffer as ArrayBuffer);
    const r = await this.call({ id: this.nextId++, op: "decode", blob: ab, hex }, [ab]);
    if (r.op !== "decode") throw new Error("unexpected worker reply");
    return Buffer.from(r.data);
  }

  /**
   * Checks a stored blob as far as this pool can: CRC always; decoded and against its
   * digest unless it is encrypted with a key the pool does not have (a server's verify).
   */
  async check(blob: Buffer, hex: string): Promise<{ encrypted: boolean }> {
    const ab = ownsBuffer(blob) ? (blob.buffer as ArrayBuffer) : (new Uint8Array(blob).buffer as ArrayBuffer);
    const r = await this.call({ id: this.nextId++, op: "check", blob: ab, hex }, [ab]);
    if (r.op !== "check") throw new Error("unexpected worker reply");
    return { encrypted: r.encrypted };
  }

  /**
   * `store` for several blobs in one body (a batch upload): one message each way, and the
   * body's memory comes back (`body` in the result) for the next batch.
   */
  async storeBatch(body: ArrayBuffer, records: BatchRecord[], encrypted: boolean | null): Promise<{ results: (Stored | GordeError)[]; body: ArrayBuffer }> {
    // `body` is transferred: the caller owns it whole (never a view into a shared pool).
    const r = await this.call({ id: this.nextId++, op: "storeBatch", body, records, encrypted }, [body]);
    if (r.op !== "storeBatch") throw new Error("unexpected worker reply");
    return {
      results: r.results.map((x) => ("error" in x ? fromWorker(x.error) : x)),
      body: r.body,
    };
  }

  /** Makes written chunks durable (one syncfs) and gives them their names. */
  async commit(batch: PendingChunk[]): Promise<void> {
    await this.call({ id: this.nextId++, op: "commit", batch }, []);
  }

  /**
   * Reads whole files (never through a symlink) in a worker: for many small files,
   * blocking reads there cost far less than asynchronous ones on the main thread.
   * Each result is the content, or the error that file gave (`systemCode` tells ENOENT).
   */
  async readFiles(paths: Uint8Array[]): Promise<(Buffer | GordeError)[]> {
    const r = await this.call({ id: this.nextId++, op: "readFiles", paths }, []);
    if (r.op !== "files") throw new Error("unexpected worker reply");
    return r.datas.map((d) => (d instanceof ArrayBuffer ? Buffer.from(d) : fromWorker(d)));
  }

  /** Reads, decodes and checks a stored chunk. */
  async load(hex: string): Promise<Buffer> {
    const r = await this.call({ id: this.nextId++, op: "load", hex }, []);
    if (r.op !== "decode") throw new Error("unexpected worker reply");
    return Buffer.from(r.data);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers = [];
  }
}

/** True when `b` is the only view of its ArrayBuffer (not a slice of Node's shared pool). */
function ownsBuffer(b: Buffer): boolean {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length;
}
