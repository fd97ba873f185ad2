// gorde's NBD client (the NBD protocol, fixed newstyle negotiation, structured replies):
// what a live backup reads a VM's point-in-time view through, with BLOCK_STATUS for
// holes (base:allocation) and for the chunks a dirty bitmap marks (qemu:dirty-bitmap:…).
import net from "node:net";
import { GordeError } from "../errors.ts";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const OPT_STRUCTURED_REPLY = 8;
const OPT_SET_META_CONTEXT = 10;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_META_CONTEXT = 4;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_DISC = 2;
const CMD_BLOCK_STATUS = 7;
const REPLY_FLAG_DONE = 1;
const REPLY_NONE = 0;
const REPLY_OFFSET_DATA = 1;
const REPLY_OFFSET_HOLE = 2;
const REPLY_BLOCK_STATUS = 5;
/** A request's length field is 32 bits; reads are split below this. */
export const MAX_REQUEST = 32 * 1024 * 1024;

/** Reads exactly as many bytes as asked from a socket, in order. */
class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiting: { n: number; resolve(b: Buffer): void; reject(e: Error): void } | undefined;
  private error: Error | undefined;

  constructor(socket: net.Socket) {
    socket.on("data", (b: Buffer) => {
      this.chunks.push(b);
      this.have += b.length;
      this.pump();
    });
    const fail = (e: Error): void => {
      this.error ??= e;
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(this.error);
    };
    socket.on("error", (e) => fail(new GordeError("io", `the NBD connection failed: ${e.message}.`)));
    socket.on("close", () => fail(new GordeError("io", "the NBD server closed the connection.")));
  }

  private pump(): void {
    const w = this.waiting;
    if (!w || this.have < w.n) return;
    this.waiting = undefined;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.have);
    const out = all.subarray(0, w.n);
    const rest = all.subarray(w.n);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    w.resolve(out);
  }

  read(n: number): Promise<Buffer> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.pump();
    });
  }
}

/** The byte stream an NBD client talks over: a socket, or in the fuzzer a scripted server. */
export interface NbdWire {
  read(n: number): Promise<Buffer>;
  write(b: Buffer): void;
  /** tells the server goodbye: no more requests */
  end(): void;
  destroy(): void;
  readonly destroyed: boolean;
}

function socketWire(socket: net.Socket): NbdWire {
  const reader = new ByteReader(socket);
  return {
    read: (n) => reader.read(n),
    write: (b) => void socket.write(b),
    end: () => void socket.end(),
    destroy: () => void socket.destroy(),
    get destroyed() {
      return socket.destroyed;
    },
  };
}

export interface Extent {
  offset: number;
  length: number;
  /** status flags of the context: base:allocation bit 0 hole, bit 1 zero; a dirty bitmap bit 0 dirty */
  flags: number;
}

export interface NbdOptions {
  /** the unix socket of the export (QEMU exports its point-in-time view on one) */
  socket: string;
  exportName: string;
  /** meta contexts to negotiate, e.g. "base:allocation", "qemu:dirty-bitmap:backup-1" */
  metaContexts?: string[];
}

/**
 * One NBD connection, one request at a time (the backup reads in order; parallelism comes
 * from several connections). Every length the server sends is checked against the request.
 */
export class NbdClient {
  readonly size: number;
  /** negotiated context name → id */
  readonly contexts: Map<string, number>;
  private readonly wire: NbdWire;
  private cookie = 1n;
  private busy: Promise<unknown> = Promise.resolve();

  private constructor(wire: NbdWire, size: number, contexts: Map<string, number>) {
    this.wire = wire;
    this.size = size;
    this.contexts = contexts;
  }

  static async connect(opts: NbdOptions): Promise<NbdClient> {
    const socket = net.createConnection(opts.socket);
    const wire = socketWire(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", (e) => reject(new GordeError("io", `cannot connect to the NBD export ${opts.socket}: ${e.message}.`)));
    });
    return NbdClient.negotiate(wire, opts);
  }

  /** The handshake over `wire`: fixed newstyle, structured replies, meta contexts, the export's size. */
  static async negotiate(wire: NbdWire, opts: Omit<NbdOptions, "socket">): Promise<NbdClient> {
    try {
      const hello = await wire.read(18);
      if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new GordeError("invalid", "the NBD server does not speak the newstyle protocol.");
      const serverFlags = hello.readUInt16BE(16);
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new GordeError("unsupported", "the NBD server lacks fixed newstyle negotiation.");
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
      wire.write(flags);
      const option = (opt: number, data: Buffer): void => {
        const h = Buffer.alloc(16);
        h.writeBigUInt64BE(IHAVEOPT, 0);
        h.writeUInt32BE(opt, 8);
        h.writeUInt32BE(data.length, 12);
        wire.write(Buffer.concat([h, data]));
      };
      const reply = async (opt: number): Promise<{ type: number; data: Buffer }> => {
        const h = await wire.read(20);
        if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC || h.readUInt32BE(8) !== opt) throw new GordeError("invalid", "the NBD server answered an option out of order.");
        const type = h.readUInt32BE(12);
        const len = h.readUInt32BE(16);
        if (len > 64 * 1024) throw new GordeError("invalid", `the NBD server's option reply claims ${len} bytes.`);
        const data = await wire.read(len);
        if (type & 0x80000000) throw new GordeError("unsupported", `the NBD server refused option ${opt}: ${data.toString("utf8") || `error ${type & 0x7fffffff}`}.`);
        return { type, data };
      };
      const name = Buffer.from(opts.exportName);
      option(OPT_STRUCTURED_REPLY, Buffer.alloc(0));
      if ((await reply(OPT_STRUCTURED_REPLY)).type !== REP_ACK) throw new GordeError("unsupported", "the NBD server does not offer structured replies.");
      const contexts = new Map<string, number>();
      const queries = opts.metaContexts ?? [];
      if (queries.length) {
        const parts = [u32(name.length), name, u32(queries.length)];
        for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
        option(OPT_SET_META_CONTEXT, Buffer.concat(parts));
        for (;;) {
          const r = await reply(OPT_SET_META_CONTEXT);
          if (r.type === REP_ACK) break;
          if (r.type === REP_META_CONTEXT) {
            if (r.data.length < 5) throw new GordeError("invalid", "the NBD server sent a meta context reply without a name.");
            contexts.set(r.data.toString("utf8", 4), r.data.readUInt32BE(0));
          }
        }
        for (const q of queries) if (!contexts.has(q)) throw new GordeError("not-found", `the NBD export ${opts.exportName} has no meta context ${q}.`);
      }
      const info = Buffer.alloc(2);
      info.writeUInt16BE(INFO_EXPORT);
      option(OPT_GO, Buffer.concat([u32(name.length), name, u16(1), info]));
      let size = -1;
      for (;;) {
        const r = await reply(OPT_GO);
        if (r.type === REP_ACK) break;
        if (r.type === REP_INFO && r.data.length >= 12 && r.data.readUInt16BE(0) === INFO_EXPORT) {
          const claimed = r.data.readBigUInt64BE(2);
          if (claimed > BigInt(Number.MAX_SAFE_INTEGER)) throw new GordeError("invalid", `the NBD server claims an export of ${claimed} bytes.`);
          size = Number(claimed);
        }
      }
      if (size < 0) throw new GordeError("invalid", `the NBD server did not tell the size of ${opts.exportName}.`);
      return new NbdClient(wire, size, contexts);
    } catch (err) {
      wire.destroy();
      throw err;
    }
  }

  private request(type: number, offset: number, length: number, flags = 0): bigint {
    const h = Buffer.alloc(28);
    const cookie = this.cookie++;
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.wire.write(h);
    return cookie;
  }

  /** Structured reply chunks of one request, until the DONE flag. */
  private async replies(cookie: bigint, onChunk: (type: number, payload: Buffer) => void): Promise<void> {
    for (;;) {
      const magic = (await this.wire.read(4)).readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const rest = await this.wire.read(12);
        const error = rest.readUInt32BE(0);
        if (error) throw new GordeError("io", `the NBD server reports error ${error}.`);
        throw new GordeError("invalid", "the NBD server sent a simple reply after agreeing to structured replies.");
      }
      if (magic !== STRUCTURED_REPLY_MAGIC) throw new GordeError("invalid", "the NBD server sent a reply with a bad magic.");
      const h = await this.wire.read(16);
      const flags = h.readUInt16BE(0);
      const type = h.readUInt16BE(2);
      if (h.readBigUInt64BE(4) !== cookie) throw new GordeError("invalid", "the NBD server answered another request.");
      const len = h.readUInt32BE(12);
      if (len > MAX_REQUEST + 64) throw new GordeError("invalid", `the NBD server's reply claims ${len} bytes.`);
      const payload = await this.wire.read(len);
      if (type & 0x8000) {
        const msgLen = payload.length >= 6 ? payload.readUInt16BE(4) : 0;
        const code = payload.length >= 4 ? `code ${payload.readUInt32BE(0)}` : "no code";
        throw new GordeError("io", `the NBD server reports an error: ${payload.toString("utf8", 6, 6 + msgLen) || code}.`);
      }
      onChunk(type, payload);
      if (flags & REPLY_FLAG_DONE) return;
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.busy.then(fn, fn);
    this.busy = p.catch(() => undefined);
    return p;
  }

  /** Reads `length` bytes at `offset` into `into` (holes come back as zeros). */
  read(offset: number, length: number, into: Buffer = Buffer.alloc(length)): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size || length > MAX_REQUEST) {
      return Promise.reject(new GordeError("usage", `NBD read of ${length} bytes at ${offset} is outside the export (${this.size} bytes).`));
    }
    return this.serial(async () => {
      const cookie = this.request(CMD_READ, offset, length);
      let got = 0;
      await this.replies(cookie, (type, p) => {
        if (type === REPLY_NONE) return;
        if (type !== REPLY_OFFSET_DATA && type !== REPLY_OFFSET_HOLE) throw new GordeError("invalid", `the NBD server answered a read with reply type ${type}.`);
        if (p.length < 8 || (type === REPLY_OFFSET_HOLE && p.length !== 12)) throw new GordeError("invalid", `the NBD server sent a read reply of ${p.length} bytes.`);
        const at = Number(p.readBigUInt64BE(0)) - offset;
        const n = type === REPLY_OFFSET_DATA ? p.length - 8 : p.readUInt32BE(8);
        if (at < 0 || at + n > length) throw new GordeError("invalid", "the NBD server sent data outside the range asked for.");
        if (type === REPLY_OFFSET_DATA) p.copy(into, at, 8);
        else into.fill(0, at, at + n);
        got += n;
      });
      if (got !== length) throw new GordeError("invalid", `the NBD server sent ${got} of ${length} bytes.`);
      return into;
    });
  }

  /** Extents of one meta context over [offset, offset + length), merged in order. */
  blockStatus(context: string, offset: number, length: number): Promise<Extent[]> {
    const id = this.contexts.get(context);
    if (id === undefined) return Promise.reject(new GordeError("usage", `meta context ${context} was not negotiated.`));
    return this.serial(async () => {
      const out: Extent[] = [];
      let pos = offset;
      const end = offset + length;
      while (pos < end) {
        const n = Math.min(end - pos, 0x80000000 - 4096);
        const cookie = this.request(CMD_BLOCK_STATUS, pos, n);
        let covered = 0;
        await this.replies(cookie, (type, p) => {
          if (type === REPLY_NONE) return;
          if (type !== REPLY_BLOCK_STATUS) throw new GordeError("invalid", `the NBD server answered block status with reply type ${type}.`);
          if (p.length < 4) throw new GordeError("invalid", `the NBD server sent a block status reply of ${p.length} bytes.`);
          if (p.readUInt32BE(0) !== id) return;
          for (let o = 4; o + 8 <= p.length; o += 8) {
            const len = p.readUInt32BE(o);
            if (len === 0) throw new GordeError("invalid", "the NBD server sent an empty extent.");
            const at = pos + covered;
            const take = Math.min(len, end - at);
            if (take <= 0) break;
            out.push({ offset: at, length: take, flags: p.readUInt32BE(o + 4) });
            covered += take;
          }
        });
        if (covered === 0) throw new GordeError("invalid", "the NBD server's block status covered nothing.");
        pos += covered;
      }
      return out;
    });
  }

  /** Tells the server goodbye and closes. */
  async close(): Promise<void> {
    await this.busy;
    if (!this.wire.destroyed) {
      this.request(CMD_DISC, 0, 0);
      this.wire.end();
    }
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
