// A byte stream cut into content-defined chunks, its (size, digest) list kept in order.
// Chunks reused from a previous snapshot can be spliced in without their bytes.
import { CdcChunker, cdcParams } from "../format/cdc-chunker.ts";
import { type DynamicIndex, DynamicIndexBuilder } from "../format/dynamic-index.ts";
import type { ChunkWriter } from "./chunk-writer.ts";

interface Slot {
  size: number;
  hex: string;
}

export class ChunkedStream {
  /** bytes in the stream so far */
  pos = 0;
  private readonly chunker: CdcChunker;
  private readonly writer: ChunkWriter;
  private readonly maxSize: number;
  private cur: Buffer;
  private curLen = 0;
  private slots: Slot[] = [];

  constructor(writer: ChunkWriter, avgSize: number) {
    const params = cdcParams(avgSize);
    this.chunker = new CdcChunker(params);
    this.writer = writer;
    this.maxSize = params.maxSize;
    this.cur = Buffer.allocUnsafeSlow(this.maxSize);
  }

  async write(data: Uint8Array): Promise<void> {
    let start = 0;
    while (start < data.length) {
      const cut = this.chunker.next(data, start);
      const end = cut < 0 ? data.length : cut;
      this.cur.set(data.subarray(start, end), this.curLen);
      this.curLen += end - start;
      this.pos += end - start;
      start = end;
      if (cut >= 0) await this.emit();
    }
  }

  /** Ends the current chunk here (before spliced chunks, and at the end of the stream). */
  async cut(): Promise<void> {
    if (this.curLen > 0) await this.emit();
    this.chunker.reset();
  }

  /** Appends a stored chunk by digest; the caller knows it exists. */
  async splice(hex: string, size: number): Promise<void> {
    await this.cut();
    this.slots.push({ size, hex });
    this.writer.reuse(size);
    this.pos += size;
  }

  private async emit(): Promise<void> {
    // The chunk moves to a worker in a buffer of its own size; `cur` is reused.
    const chunk = Buffer.from(new Uint8Array(this.cur.subarray(0, this.curLen)).buffer);
    this.curLen = 0;
    const slot: Slot = { size: chunk.length, hex: "" };
    this.slots.push(slot);
    await this.writer.add(chunk, (hex) => {
      slot.hex = hex;
    });
  }

  /** After the writer drained: the index of the whole stream. */
  build(ctime: number): DynamicIndex {
    const b = new DynamicIndexBuilder();
    for (const s of this.slots) b.add(s.size, Buffer.from(s.hex, "hex"));
    return b.build(ctime);
  }
}
