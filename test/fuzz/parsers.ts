// Seeded, structure-aware fuzzing of the parsers of untrusted input: each starts from valid
// inputs (the real encoders' output) and mutates them as damage and hostility would — bits
// flipped, lengths and counts set to extremes, bytes cut or spliced, JSON members changed,
// removed or added, text edited. A parser may accept an input or refuse it with a
// GordeError; anything else (a TypeError, a RangeError, an allocation beyond the bound, a
// hang) is a finding. `npm run fuzz` runs 10^5 inputs per parser; test/fuzz.test.ts a short
// seeded run in CI.
import { createHash, randomBytes } from "node:crypto";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { z } from "zod";
import { NODE_ROUTES } from "../../src/api/node-routes.ts";
import { ROUTES } from "../../src/api/routes.ts";
import { decodeChunkBatch, encodeChunkBatch } from "../../src/api/chunk-batch.ts";
import { parseGuestConfig } from "../../src/api/guest-config.ts";
import { NbdClient, type NbdWire } from "../../src/node/nbd-client.ts";
import { parseQmpLine } from "../../src/node/qemu.ts";
import { paperKey, parseKeyFile, parsePaperKey } from "../../src/client/key-file.ts";
import { GordeError } from "../../src/errors.ts";
import { decodeBlob, encodeBlob } from "../../src/format/blob.ts";
import { deriveChunkKey } from "../../src/format/crypt.ts";
import { DynamicIndexBuilder, decodeDynamicIndex, encodeDynamicIndex } from "../../src/format/dynamic-index.ts";
import { decodeFixedIndex, encodeFixedIndex } from "../../src/format/fixed-index.ts";
import { MAX_CHUNK_SIZE } from "../../src/format/magic.ts";
import { type Manifest, decodeManifest, encodeManifest, sealManifest } from "../../src/format/manifest.ts";
import { parseArchiveName, parseGroup, parseNamespace, parseSnapshotRef } from "../../src/format/names.ts";
import { decodeEntries } from "../../src/format/tree-entry.ts";
import { parseRate } from "../../src/format/units.ts";
import { parseCalendarEvent } from "../../src/schedule/calendar-event.ts";
import { parsePlan } from "../../src/schedule/plan.ts";
import { parseWindow } from "../../src/schedule/window.ts";
import { entryStream, mulberry32, treeEntry } from "../helpers.ts";

/** The seeded generator, so a finding is replayed by its seed. */
export const rng = mulberry32;

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rand, n: number): number => Math.floor(r() * n);

const EXTREMES = [0, 1, 0x7f, 0x80, 0xff, 0x7fffffff, 0x80000000, 0xffffffff];

/** A byte string damaged one to four ways. */
function mutateBytes(r: Rand, seed: Buffer): Buffer {
  let b = Buffer.from(seed);
  for (let n = 1 + int(r, 4); n > 0; n--) {
    switch (int(r, 8)) {
      case 0: // a bit flipped
        if (b.length) b[int(r, b.length)]! ^= 1 << int(r, 8);
        break;
      case 1: // a byte set to an extreme
        if (b.length) b[int(r, b.length)] = pick(r, [0, 0x7f, 0x80, 0xff]);
        break;
      case 2: // a u32 (a length, a count) set to an extreme
        if (b.length >= 4) b.writeUInt32LE(pick(r, EXTREMES) >>> 0, int(r, b.length - 3));
        break;
      case 3: // a u64 set to an extreme
        if (b.length >= 8) b.writeBigUInt64LE(pick(r, [0n, 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]), int(r, b.length - 7));
        break;
      case 4: // cut
        b = b.subarray(0, int(r, b.length + 1));
        break;
      case 5: // grown with random bytes
        b = Buffer.concat([b, randomBytesFrom(r, 1 + int(r, 64))]);
        break;
      case 6: {
        // a region spliced in twice
        const from = int(r, b.length + 1);
        const to = Math.min(b.length, from + int(r, 128));
        b = Buffer.concat([b.subarray(0, to), b.subarray(from, to), b.subarray(to)]);
        break;
      }
      default: // a region overwritten with random bytes
        if (b.length) {
          const at = int(r, b.length);
          randomBytesFrom(r, Math.min(16, b.length - at)).copy(b, at);
        }
    }
  }
  return b;
}

function randomBytesFrom(r: Rand, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

const HOSTILE_STRINGS = ["", "..", "../../etc/passwd", "/abs", "a/../b", "\u0000", "x".repeat(5000), "💥", "-1", "1e309", "NaN", "true", "null", "*", "%s%n"];
const HOSTILE_VALUES: unknown[] = [null, true, false, 0, -1, 1.5, 2 ** 53, -(2 ** 63), Number.MAX_VALUE, -Number.MAX_VALUE, "", "x".repeat(70_000), [], {}, [[[[[]]]]], { __proto__: { x: 1 } }, { constructor: 1 }];

/** A hostile value, a copy each time: one shared value changed in place could come to hold itself. */
const hostile = (r: Rand): unknown => structuredClone(pick(r, HOSTILE_VALUES));

/** A JSON value with one to three members changed, removed or added. */
function mutateJson(r: Rand, seed: unknown): unknown {
  const v = structuredClone(seed);
  for (let n = 1 + int(r, 3); n > 0; n--) {
    const paths: (string | number)[][] = [];
    const walk = (x: unknown, p: (string | number)[]): void => {
      paths.push(p);
      if (Array.isArray(x)) x.forEach((y, i) => walk(y, [...p, i]));
      else if (x && typeof x === "object") for (const [k, y] of Object.entries(x)) walk(y, [...p, k]);
    };
    walk(v, []);
    const path = pick(r, paths);
    if (path.length === 0) continue;
    const parent = path.slice(0, -1).reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], v) as Record<string | number, unknown>;
    const key = path.at(-1)!;
    const old = parent[key];
    switch (int(r, 5)) {
      case 0:
        if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete parent[key];
        break;
      case 1:
        parent[key] = hostile(r);
        break;
      case 2:
        parent[key] = typeof old === "string" ? pick(r, HOSTILE_STRINGS) : typeof old === "number" ? pick(r, [-old, old * 1e6, old + 1, 0.5, 2 ** 31, -1]) : hostile(r);
        break;
      case 3:
        if (!Array.isArray(parent)) parent[`extra${int(r, 3)}`] = hostile(r);
        else parent.push(hostile(r));
        break;
      default:
        parent[key] = typeof old === "string" ? old + pick(r, HOSTILE_STRINGS) : old;
    }
  }
  return v;
}

/** A text with one to four edits: characters inserted, deleted, duplicated, or a token replaced. */
function mutateText(r: Rand, seed: string, alphabet: string): string {
  let s = seed;
  for (let n = 1 + int(r, 4); n > 0; n--) {
    const at = int(r, s.length + 1);
    switch (int(r, 5)) {
      case 0:
        s = s.slice(0, at) + alphabet[int(r, alphabet.length)] + s.slice(at);
        break;
      case 1:
        s = s.slice(0, at) + s.slice(at + 1 + int(r, 4));
        break;
      case 2:
        s = s.slice(0, at) + s.slice(at, at + int(r, 16)).repeat(2 + int(r, 3)) + s.slice(at);
        break;
      case 3:
        s = s.slice(0, at) + pick(r, ["9999999999", "-1", "0", "..", "/", ":", "*", "\n", "{", "[", "#", "&a", "*a", "!!binary", "~"]) + s.slice(at);
        break;
      default:
        s = s.slice(0, at) + s.slice(at).replace(/\d+/, pick(r, ["99", "0", "4294967296", "60", "24", "31", "1e9"]));
    }
  }
  return s;
}

export interface Target {
  name: string;
  /** one input, made from the seeds by `r` */
  input(r: Rand): unknown;
  parse(input: unknown): unknown;
}

function bytesTarget(name: string, seeds: Buffer[], parse: (b: Buffer) => unknown): Target {
  return { name, input: (r) => mutateBytes(r, pick(r, seeds)), parse: (b) => parse(b as Buffer) };
}

function jsonTarget(name: string, seeds: unknown[], parse: (text: Buffer) => unknown): Target {
  return { name, input: (r) => Buffer.from(JSON.stringify(mutateJson(r, pick(r, seeds))) ?? "null"), parse: (b) => parse(b as Buffer) };
}

function textTarget(name: string, seeds: string[], alphabet: string, parse: (s: string) => unknown): Target {
  return { name, input: (r) => mutateText(r, pick(r, seeds), alphabet), parse: (s) => parse(s as string) };
}


const sha = (b: Buffer): Buffer => createHash("sha256").update(b).digest();

/** Every parser of untrusted input, with its seeds. */
export function targets(): Target[] {
  const key = deriveChunkKey(Buffer.alloc(32, 7));
  const plainData = [Buffer.alloc(0), Buffer.alloc(4096), Buffer.from("hello, world\n".repeat(300)), randomBytes(2048), Buffer.concat([Buffer.alloc(1000), randomBytes(1000)])];
  const blobs = [...plainData.map((d) => encodeBlob(d, 3)), ...plainData.slice(0, 3).map((d) => encodeBlob(d, 3, key))];
  const fixed = [encodeFixedIndex({ ctime: 1_700_000_000, size: 3 * 65536 - 5, chunkSize: 65536, digests: Buffer.concat([sha(Buffer.from("a")), sha(Buffer.from("b")), sha(Buffer.from("c"))]) })];
  const dyn = new DynamicIndexBuilder();
  dyn.add(100, sha(Buffer.from("x")));
  dyn.add(4096, sha(Buffer.from("y")));
  const dynamic = [encodeDynamicIndex(dyn.build(1_700_000_000))];
  const manifest: Manifest = {
    format: 1,
    type: "vm",
    id: "100",
    time: 1_700_000_000,
    archives: [{ name: "disk0.img", kind: "img", size: 1 << 20, indexes: [{ file: "disk0.img.fidx", csum: "ab".repeat(32), size: 160 }] }],
    cryptMode: "none",
    keyFingerprint: null,
    config: { kind: "vm", id: 100, name: "web", memoryMiB: 512, cpus: 1, disks: { disk0: "/var/lib/vm-100.raw" }, httpPort: 20100 },
    captures: [{ probe: "note", path: "/cgi-bin/note", state: "captured", time: 1_700_000_000, status: 200, digest: "cd".repeat(32), excerpt: "hello" }],
    unprotected: { notes: "n", verify: { state: "ok", time: 1_700_000_100 } },
  };
  const manifests = [JSON.parse(encodeManifest(sealManifest(manifest)).toString()) as unknown, JSON.parse(encodeManifest(manifest).toString()) as unknown];
  const entries = [
    entryStream([treeEntry("dir", ""), treeEntry("dir", "etc"), treeEntry("file", "etc/hostname", { size: 4, offset: 0, xattrs: [{ name: Buffer.from("user.x"), value: Buffer.from([1, 2]) }] }), treeEntry("symlink", "l", { link: Buffer.from("etc/hostname") }), treeEntry("hardlink", "h", { link: Buffer.from("etc/hostname") })]),
  ];
  const keyFile = {
    format: 1,
    created: "2026-01-01T00:00:00.000Z",
    fingerprint: Array(32).fill("aa").join(":"),
    kdf: { name: "scrypt", n: 16384, r: 8, p: 1, salt: "00".repeat(16) },
    cipher: "aes-256-gcm",
    iv: "11".repeat(12),
    tag: "22".repeat(16),
    wrappedKey: "33".repeat(32),
  };
  const guestConfigs = [manifest.config, { kind: "ct", id: 101, name: "ct101", memoryMiB: 128, cpus: 1, rootfs: "/var/lib/ct/101", init: "/sbin/init", httpPort: 20101, healthChecks: [{ name: "web", type: "http", path: "/", expect: "snapshot" }] }];
  const batch = [encodeChunkBatch([{ hex: sha(Buffer.from("z")).toString("hex"), size: 1, blob: encodeBlob(Buffer.from("z"), 1) }])];
  const plan = `version: 1\nload: { max-load-per-cpu: 2 }\nguests:\n  "100": { rpo: 26h, drill-every: 7d }\njobs:\n  - { name: nightly, type: backup, schedule: "mon..fri 02:00", window: "01:00-05:00", guests: all, keep: { daily: 7, weekly: 4 }, rate: 20M }\n  - { name: gc, type: gc, schedule: "sat 03:00" }\n  - { name: sync, type: sync, schedule: hourly, remote: offsite, groups: [vm/100] }\n`;
  const bodies: { name: string; schema: z.ZodType }[] = [];
  for (const table of [ROUTES, NODE_ROUTES] as const) {
    for (const [name, route] of Object.entries(table)) {
      const body = (route as { body?: unknown }).body;
      if (body && typeof body === "object") bodies.push({ name, schema: body as z.ZodType });
    }
  }
  return [
    // With the key or without, decided by the input itself so that a seed replays it exactly.
    bytesTarget("blob", blobs, (b) => decodeBlob(b, "blob", MAX_CHUNK_SIZE, b.length % 2 ? key : undefined)),
    bytesTarget("fixed index", fixed, (b) => decodeFixedIndex(b)),
    bytesTarget("dynamic index", dynamic, (b) => decodeDynamicIndex(b)),
    bytesTarget("entry stream", entries, (b) => decodeEntries(b, 4)),
    bytesTarget("chunk batch", batch, (b) => decodeChunkBatch(b, MAX_CHUNK_SIZE + 1024, MAX_CHUNK_SIZE)),
    jsonTarget("manifest", manifests, (b) => decodeManifest(b)),
    jsonTarget("key file", [keyFile], (b) => parseKeyFile(b)),
    jsonTarget("guest config", guestConfigs, (b) => parseGuestConfig(JSON.parse(b.toString()))),
    {
      name: "API request bodies",
      input: (r) => {
        const { name } = pick(r, bodies);
        return { name, body: mutateJson(r, { ns: "a", group: "vm/100", snapshot: "vm/100/2026-01-01T00:00:00Z", notes: "x", keep: { keepLast: 3 }, mode: "snapshot", id: 200, protected: true, digests: ["ab".repeat(32)], text: plan, username: "admin", password: "p" }) };
      },
      parse: (i) => {
        const { name, body } = i as { name: string; body: unknown };
        // safeParse never throws: a request the schema refuses is a 400, as the host answers it.
        const r = bodies.find((b) => b.name === name)!.schema.safeParse(body);
        if (!r.success) throw new GordeError("invalid", `${name}: refused`);
        return r.data;
      },
    },
    textTarget("calendar event", ["mon..fri 21:00", "*-*-* 02:00:00", "daily", "*:*:0/10", "2026-12-01 12:00", "sat,sun 03:30", "mon,wed..fri *-*-1..7 4:00:00", "hourly", "*-02-29 00:00"], "0123456789*-:/,. .monthuwedfrisatsun", parseCalendarEvent),
    {
      // Half as text (YAML's own grammar), half as a structure changed and written back as YAML (the schema's).
      name: "plan file",
      input: (r) => (r() < 0.5 ? mutateText(r, plan, 'abcdefghijklmnopqrstuvwxyz0123456789:-{}[]," \n') : stringifyYaml(mutateJson(r, parseYaml(plan)))),
      parse: (s) => parsePlan(s as string),
    },
    textTarget("low-load window", ["01:00-05:00", "22:30-04:00", "00:00-24:00"], "0123456789:-", parseWindow),
    textTarget("rate", ["500K", "20M", "1G", "1048576"], "0123456789KMGTkmgB.", (s) => parseRate(s)),
    textTarget("snapshot, group, namespace and archive names", ["vm/100/2026-01-01T00:00:00Z", "ct/101/latest", "host/web", "a/b/c", "disk0.img", "root.tree"], "abcvmthost0123456789/:-TZ._", (s) => {
      let refused = 0;
      for (const f of [parseSnapshotRef, parseGroup, parseNamespace, parseArchiveName] as ((x: string) => unknown)[]) {
        try {
          f(s);
        } catch (err) {
          if (!(err instanceof GordeError)) throw err;
          refused++;
        }
      }
      if (refused === 4) throw new GordeError("invalid", "no name parser takes it");
    }),
    textTarget("paper key", [paperKey(Buffer.from(JSON.stringify(keyFile)))], "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567 :\n0189", parsePaperKey),
    jsonTarget("QMP monitor line", QMP_LINES, (b) => parseQmpLine(b.toString())),
    bytesTarget("NBD server replies (handshake, read, block status)", [nbdConversation()], nbdSession),
  ];
}

/** Lines as QEMU's monitor sends them: its greeting, answers, an error, an event. */
const QMP_LINES: unknown[] = [
  { QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: "Debian 1:7.2" }, capabilities: ["oob"] } },
  { return: {} },
  { return: { status: "running", running: true } },
  { return: [{ "node-name": "disk0", "dirty-bitmaps": [{ name: "gorde-1", recording: true, count: 65536, granularity: 65536 }] }] },
  { error: { class: "GenericError", desc: "Bitmap 'gorde-1' not found" } },
  { timestamp: { seconds: 1700000000, microseconds: 5 }, event: "JOB_STATUS_CHANGE", data: { status: "concluded", id: "backup-1" } },
];

const NBD = { magic: 0x4e42444d41474943n, ihaveopt: 0x49484156454f5054n, optReply: 0x3e889045565a9n, structured: 0x668e33ef };

/**
 * What an NBD server sends to a client that negotiates structured replies and the
 * base:allocation context, then reads 8 KiB at 0 (data, then a hole) and asks the block
 * status of the whole 64 KiB export: as qemu-nbd answers, byte for byte in the protocol's layout.
 */
function nbdConversation(): Buffer {
  const parts: Buffer[] = [];
  const u16 = (n: number): void => void parts.push(Buffer.from([n >> 8, n & 255]));
  const u32 = (n: number): void => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    parts.push(b);
  };
  const u64 = (n: bigint): void => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    parts.push(b);
  };
  const optReply = (opt: number, type: number, data: Buffer): void => {
    u64(NBD.optReply);
    u32(opt);
    u32(type);
    u32(data.length);
    parts.push(data);
  };
  const chunk = (flags: number, type: number, cookie: bigint, payload: Buffer): void => {
    u32(NBD.structured);
    u16(flags);
    u16(type);
    u64(cookie);
    u32(payload.length);
    parts.push(payload);
  };
  u64(NBD.magic);
  u64(NBD.ihaveopt);
  u16(3); // fixed newstyle, no zeroes
  optReply(8, 1, Buffer.alloc(0)); // structured replies: ack
  optReply(10, 4, Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from("base:allocation")]));
  optReply(10, 1, Buffer.alloc(0));
  const info = Buffer.alloc(12);
  info.writeBigUInt64BE(65536n, 2);
  info.writeUInt16BE(1, 10);
  optReply(7, 3, info);
  optReply(7, 1, Buffer.alloc(0));
  const data = Buffer.alloc(8 + 4096, 0x5a);
  data.writeBigUInt64BE(0n, 0);
  chunk(0, 1, 1n, data);
  const hole = Buffer.alloc(12);
  hole.writeBigUInt64BE(4096n, 0);
  hole.writeUInt32BE(4096, 8);
  chunk(1, 2, 1n, hole);
  const status = Buffer.alloc(4 + 16);
  status.writeUInt32BE(1, 0);
  status.writeUInt32BE(8192, 4);
  status.writeUInt32BE(0, 8);
  status.writeUInt32BE(57344, 12);
  status.writeUInt32BE(3, 16);
  chunk(1, 5, 2n, status);
  return Buffer.concat(parts);
}

/** The client's whole session against `bytes` as the server's side; the connection closes where they end. */
async function nbdSession(bytes: Buffer): Promise<void> {
  let at = 0;
  let destroyed = false;
  const wire: NbdWire = {
    read(n) {
      if (at + n > bytes.length) return Promise.reject(new GordeError("io", "the NBD server closed the connection."));
      const b = bytes.subarray(at, at + n);
      at += n;
      return Promise.resolve(b);
    },
    write: () => undefined,
    end: () => void (destroyed = true),
    destroy: () => void (destroyed = true),
    get destroyed() {
      return destroyed;
    },
  };
  const c = await NbdClient.negotiate(wire, { exportName: "disk0", metaContexts: ["base:allocation"] });
  await c.read(0, 8192);
  await c.blockStatus("base:allocation", 0, c.size);
  await c.close();
}

class Hang extends Error {}

function settlesWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise((_, reject) => (timer = setTimeout(() => reject(new Hang(`did not settle within ${ms} ms`)), ms)));
  return Promise.race([p, hang]).finally(() => clearTimeout(timer));
}

export interface FuzzResult {
  name: string;
  inputs: number;
  accepted: number;
  refused: number;
  /** inputs that threw something else than a GordeError, or took too long: seed and what happened */
  findings: string[];
  slowestMs: number;
}

/** Runs `count` inputs of a target from `seed`; a parse slower than `slowMs` is a finding (a hang). */
export async function fuzz(t: Target, seed: number, count: number, slowMs = 5000): Promise<FuzzResult> {
  const res: FuzzResult = { name: t.name, inputs: 0, accepted: 0, refused: 0, findings: [], slowestMs: 0 };
  for (let i = 0; i < count; i++) {
    const r = rng(seed * 1_000_003 + i);
    const input = t.input(r);
    const started = performance.now();
    try {
      const out = t.parse(input);
      // A parse over a stream (the NBD client) is a promise: one that never settles is a hang.
      if (out instanceof Promise) await settlesWithin(out, slowMs * 4);
      res.accepted++;
    } catch (err) {
      if (err instanceof GordeError) res.refused++;
      else if (res.findings.length < 20) res.findings.push(`seed ${seed} input ${i}: ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
    }
    const ms = performance.now() - started;
    res.slowestMs = Math.max(res.slowestMs, ms);
    if (ms > slowMs && res.findings.length < 20) res.findings.push(`seed ${seed} input ${i}: took ${ms.toFixed(0)} ms`);
    res.inputs++;
  }
  return res;
}
