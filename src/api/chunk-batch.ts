// Several chunks in one request body: a request per chunk costs both sides more (headers,
// routing, stream setup) than the hashing it carries. Layout, repeated to the end:
//   digest(32) || plain size (u32 LE) || blob length (u32 LE) || blob
import { GordeError } from "../errors.ts";

export const BATCH_RECORD_HEADER = 40;
/** Most chunks and bytes one batch may carry. */
export const MAX_BATCH_CHUNKS = 256;
export const MAX_BATCH_BYTES = 32 * 1024 * 1024;

export interface BatchedChunk {
  hex: string;
  size: number;
  blob: Buffer;
}

export function encodeChunkBatch(chunks: readonly BatchedChunk[]): Buffer {
  let total = 0;
  for (const c of chunks) total += BATCH_RECORD_HEADER + c.blob.length;
  const out = Buffer.allocUnsafeSlow(total);
  let o = 0;
  for (const c of chunks) {
    out.write(c.hex, o, "hex");
    out.writeUInt32LE(c.size, o + 32);
    out.writeUInt32LE(c.blob.length, o + 36);
    c.blob.copy(out, o + BATCH_RECORD_HEADER);
    o += BATCH_RECORD_HEADER + c.blob.length;
  }
  return out;
}

/** The records of a batch; a length that runs past the body or a bound exceeded is refused. */
export function decodeChunkBatch(body: Buffer, maxBlob: number, maxSize: number): BatchedChunk[] {
  const out: BatchedChunk[] = [];
  let o = 0;
  while (o < body.length) {
    if (out.length >= MAX_BATCH_CHUNKS) throw new GordeError("invalid", `a chunk batch holds more than ${MAX_BATCH_CHUNKS} chunks.`);
    if (body.length - o < BATCH_RECORD_HEADER) throw new GordeError("invalid", `chunk batch record ${out.length} is truncated.`);
    const hex = body.toString("hex", o, o + 32);
    const size = body.readUInt32LE(o + 32);
    const len = body.readUInt32LE(o + 36);
    if (size > maxSize) throw new GordeError("invalid", `chunk ${hex} declares ${size} bytes, more than the ${maxSize} a chunk may have.`);
    if (len > maxBlob || o + BATCH_RECORD_HEADER + len > body.length) {
      throw new GordeError("invalid", `chunk ${hex} declares a blob of ${len} bytes that the batch does not hold.`);
    }
    out.push({ hex, size, blob: body.subarray(o + BATCH_RECORD_HEADER, o + BATCH_RECORD_HEADER + len) });
    o += BATCH_RECORD_HEADER + len;
  }
  return out;
}
