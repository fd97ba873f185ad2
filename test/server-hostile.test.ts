// Hostile requests to a running server are refused with a 4xx answer and do no harm:
// nothing is written outside the datastore, no damaged chunk, index or manifest is
// stored, abandoned sessions leave nothing behind, and the server keeps serving normal
// backups and restores afterwards.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import zlib from "node:zlib";
import { after, before, describe, it } from "node:test";
import { encodeChunkBatch } from "../src/api/chunk-batch.ts";
import { ServerConnection } from "../src/api/connection.ts";
import { runBackup } from "../src/client/backup.ts";
import { RemoteRepository } from "../src/client/remote.ts";
import { restoreArchive } from "../src/client/restore.ts";
import { Datastore, MANIFEST_FILE } from "../src/datastore/datastore.ts";
import { verifyAll } from "../src/datastore/verify.ts";
import { encodeBlob } from "../src/format/blob.ts";
import { deriveChunkKey, keyedDigest } from "../src/format/crypt.ts";
import { DynamicIndexBuilder, encodeDynamicIndex } from "../src/format/dynamic-index.ts";
import { encodeFixedIndex } from "../src/format/fixed-index.ts";
import { FORMAT_VERSION, MAX_CHUNK_SIZE } from "../src/format/magic.ts";
import { type Manifest, sha256Hex } from "../src/format/manifest.ts";
import { parseSnapshotRef } from "../src/format/names.ts";
import { type GordeServer, startServer } from "../src/server/server.ts";
import { tempDir } from "./helpers.ts";

const PASSWORD = "admin-pass-1";
const AUTH = "Basic " + Buffer.from(`admin:${PASSWORD}`).toString("base64");
/**
 * The shared server keeps an idle session for a minute: a client pausing a few seconds on
 * a loaded machine must not lose its session in tests about something else. The idle test
 * runs its own server with a short limit.
 */
const IDLE_MS = 60_000;
const SHORT_IDLE_MS = 1500;
const CHUNK = 64 * 1024;
/** A name no request may ever create anywhere. */
const EVIL = `gorde-hostile-${randomBytes(6).toString("hex")}`;

interface Answer {
  status: number;
  body: string;
  /** the stream was reset instead of answered */
  reset?: string;
}

interface Started {
  session: string;
  snapshot: string;
  time: number;
  dir: string;
}

/** Every path below `root` with its kind (and size for files), sorted. */
function tree(root: string, skip: (rel: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (abs: string, rel: string): void => {
    for (const name of fs.readdirSync(abs).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip(r)) continue;
      const st = fs.lstatSync(path.join(abs, name));
      if (st.isDirectory()) {
        out.push(`${r}/`);
        walk(path.join(abs, name), r);
      } else {
        out.push(`${r} ${st.size}`);
      }
    }
  };
  walk(root, "");
  return out;
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function is4xx(a: Answer, what: string): void {
  assert.ok(a.status >= 400 && a.status < 500, `${what}: expected a 4xx answer, got ${a.status} ${a.reset ?? ""} ${a.body}`);
}

/** Refused with a 4xx answer, or reset by the HTTP/2 layer before any handler ran (a request that breaks the protocol). */
function refused(a: Answer, what: string): void {
  if (a.reset !== undefined && a.status === 0) {
    assert.match(a.reset, /PROTOCOL_ERROR|error code 2\b/, `${what}: reset for another reason`);
    return;
  }
  is4xx(a, what);
}

void describe("hostile requests to the server", () => {
  let root: { dir: string; cleanup(): void };
  let dir: string;
  let server: GordeServer;
  let conn: ServerConnection;
  const serverLog: string[] = [];

  /** A request through node:http2 directly: any path, headers and body the client class would not send. */
  function raw(
    method: string,
    p: string,
    opts: { headers?: http2.OutgoingHttpHeaders; body?: Buffer; end?: boolean; auth?: boolean } = {},
  ): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const client = http2.connect(`https://127.0.0.1:${server.port}`, { rejectUnauthorized: false });
      client.on("error", () => undefined);
      const headers: http2.OutgoingHttpHeaders = { ":method": method, ":path": p, ...opts.headers };
      if (opts.auth !== false) headers.authorization = AUTH;
      const end = opts.end ?? true;
      const req = client.request(headers, { endStream: end && opts.body === undefined });
      let status = 0;
      const parts: Buffer[] = [];
      const timer = setTimeout(() => {
        client.destroy();
        reject(new Error(`${method} ${p}: no answer within 10 s`));
      }, 10_000);
      const done = (a: Answer): void => {
        clearTimeout(timer);
        client.destroy();
        resolve(a);
      };
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("data", (b: Buffer) => parts.push(b));
      req.on("end", () => done({ status, body: Buffer.concat(parts).toString("utf8") }));
      req.on("error", (e: Error) => done({ status, body: Buffer.concat(parts).toString("utf8"), reset: e.message }));
      if (opts.body !== undefined) {
        if (end) req.end(opts.body);
        else req.write(opts.body);
      }
    });
  }

  async function call(method: string, p: string, opts: { json?: unknown; binary?: Buffer; query?: Record<string, string | number> } = {}): Promise<Answer> {
    const r = await conn.request(method, p, { ...opts, once: true });
    return { status: r.status, body: r.body.toString("utf8") };
  }

  async function startBackup(group: string, keyFingerprint: string | null = null, c = conn): Promise<Started> {
    const r = await c.request("POST", "/api/datastores/main/backup", { json: { group, keyFingerprint }, once: true });
    assert.equal(r.status, 200, `start a backup of ${group}: ${r.body.toString("utf8")}`);
    const j = JSON.parse(r.body.toString("utf8")) as { session: string; snapshot: string; time: number };
    const ref = parseSnapshotRef(j.snapshot);
    return { ...j, dir: path.join(dir, ref.type, ref.id, j.snapshot.split("/")[2]!) };
  }

  async function abort(s: Started): Promise<void> {
    const r = await call("DELETE", `/api/backup/${s.session}`);
    assert.equal(r.status, 200, r.body);
    assert.ok(!fs.existsSync(s.dir), "an aborted session leaves no snapshot directory");
  }

  function putChunk(s: Started, hex: string, blob: Buffer, size: number | string): Promise<Answer> {
    return call("PUT", `/api/backup/${s.session}/chunk/${hex}`, { binary: blob, query: { size } });
  }

  function chunkFile(hex: string): string {
    return path.join(dir, ".chunks", hex.slice(0, 2), hex);
  }

  /** Temp files of chunks under the chunk directory (uploads that never got their name). */
  function chunkTemps(): string[] {
    return tree(path.join(dir, ".chunks")).filter((p) => p.includes(".tmp-"));
  }

  /** The datastore's tree and its parent's, apart from the server's state directory. */
  function everything(): string[] {
    return tree(root.dir, (rel) => rel === "state" || rel.startsWith("state/"));
  }

  function assertNoEvil(): void {
    for (const d of [root.dir, dir, os.tmpdir(), "/", path.dirname(root.dir)]) {
      assert.ok(!fs.existsSync(path.join(d, EVIL)), `${EVIL} was created in ${d}`);
    }
    assert.deepEqual(
      tree(root.dir).filter((p) => p.includes(EVIL) || p.includes("\0")),
      [],
      "no hostile name appears anywhere under the test directory",
    );
  }

  before(async () => {
    root = tempDir("gorde-hostile-");
    dir = path.join(root.dir, "store");
    server = await startServer({
      stateDir: path.join(root.dir, "state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { main: dir },
      adminPassword: PASSWORD,
      authFailureDelayMs: 0,
      sessionIdleMs: IDLE_MS,
      log: (line) => serverLog.push(line),
    });
    conn = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: "admin", secret: PASSWORD, fingerprint: server.fingerprint });
  });

  after(async () => {
    conn?.close();
    await server?.close();
    root?.cleanup();
  });

  void it("refuses path traversal in the store name", async () => {
    const parentBefore = fs.readdirSync(path.dirname(root.dir)).filter((n) => n.includes(EVIL));
    const before = everything();
    const paths = [
      `/api/datastores/..%2F..%2F${EVIL}/status`,
      `/api/datastores/%2e%2e%2f%2e%2e%2f${EVIL}/status`,
      `/api/datastores/%2e%2e/status`,
      `/api/datastores/../../${EVIL}/status`,
      `/api/datastores/%2Ftmp%2F${EVIL}/status`,
      `/api/datastores/main%00${EVIL}/status`,
      `/api/datastores/${"a".repeat(300)}/status`,
      `/api/datastores/%ZZ/status`,
    ];
    for (const p of paths) is4xx(await raw("GET", p), `GET ${p}`);
    // a raw NUL byte in the path never reaches a handler
    refused(await raw("GET", `/api/datastores/main\0/../../${EVIL}/status`), "raw NUL in the path");
    const body = Buffer.from(JSON.stringify({ group: "host/a", keyFingerprint: null }));
    for (const store of [`..%2F..%2F${EVIL}`, `%2e%2e%2f${EVIL}`, `%2F${EVIL}`, `x%00${EVIL}`, "b".repeat(200)]) {
      const a = await raw("POST", `/api/datastores/${store}/backup`, { body, headers: { "content-type": "application/json" } });
      is4xx(a, `backup into store ${store}`);
    }
    assert.deepEqual(everything(), before, "the datastore and its parent gained nothing");
    assert.deepEqual(fs.readdirSync(path.dirname(root.dir)).filter((n) => n.includes(EVIL)), parentBefore);
    assertNoEvil();
  });

  void it("refuses path traversal in group, namespace and snapshot names", async () => {
    const before = everything();
    const groups = [
      `host/../../${EVIL}`,
      "host/..",
      "host/.",
      `../host/${EVIL}`,
      `/tmp/${EVIL}`,
      `host//${EVIL}`,
      `host/%2e%2e%2f${EVIL}`,
      `host/a\0${EVIL}`,
      `host/${"x".repeat(300)}`,
      `host/${EVIL}/..`,
      `evil/${EVIL}`,
      "",
    ];
    for (const group of groups) {
      is4xx(await call("POST", "/api/datastores/main/backup", { json: { group, keyFingerprint: null } }), `group ${JSON.stringify(group)}`);
      is4xx(await call("GET", "/api/datastores/main/snapshots", { query: { group } }), `list group ${JSON.stringify(group)}`);
    }
    const namespaces = [`../${EVIL}`, `a/../../${EVIL}`, `/${EVIL}`, "..", ".", `%2e%2e/${EVIL}`, `a\0${EVIL}`, "n".repeat(600), "a/b/c/d/e/f/g/h/i", `a//${EVIL}`];
    for (const ns of namespaces) {
      is4xx(await call("POST", "/api/datastores/main/backup", { json: { ns, group: "host/a", keyFingerprint: null } }), `ns ${JSON.stringify(ns)}`);
      is4xx(await call("GET", "/api/datastores/main/groups", { query: { ns } }), `list ns ${JSON.stringify(ns)}`);
    }
    const snapshots = [
      `host/a/../../../${EVIL}`,
      `host/../2024-01-01T00:00:00Z`,
      `host/a/..`,
      `/etc/passwd`,
      `host/a/2024-01-01T00:00:00Z/../../${EVIL}`,
      `host/a/2024-01-01T00:00:00Z\0`,
      `host/a/${"9".repeat(300)}`,
    ];
    for (const snapshot of snapshots) {
      is4xx(await call("POST", "/api/datastores/main/reader", { json: { snapshot } }), `read ${JSON.stringify(snapshot)}`);
      is4xx(await call("DELETE", "/api/datastores/main/snapshots", { query: { snapshot } }), `forget ${JSON.stringify(snapshot)}`);
      is4xx(await call("PUT", "/api/datastores/main/notes", { json: { snapshot, notes: EVIL } }), `notes of ${JSON.stringify(snapshot)}`);
      is4xx(await call("PUT", "/api/datastores/main/protected", { json: { snapshot, protected: true } }), `protect ${JSON.stringify(snapshot)}`);
    }
    is4xx(await call("PUT", "/api/datastores/main/owner", { json: { group: `host/../${EVIL}`, owner: "admin" } }), "set owner");
    is4xx(await call("POST", "/api/datastores/main/prune", { json: { group: `host/../${EVIL}`, keep: { keepLast: 1 } } }), "prune");
    assert.deepEqual(everything(), before, "the datastore and its parent gained nothing");
    assertNoEvil();
  });

  void it("refuses path traversal in index file names and chunk digests", async () => {
    const s = await startBackup("host/traversal");
    const before = everything();
    const data = randomBytes(1000);
    const blob = encodeBlob(data, 0);
    const hex = sha256(data);
    const fidx = encodeFixedIndex({ ctime: 0, size: 0, chunkSize: CHUNK, digests: Buffer.alloc(0) });
    const files = [
      `..%2F..%2F..%2F${EVIL}.fidx`,
      `%2e%2e%2f%2e%2e%2f${EVIL}.fidx`,
      `%2e%2e`,
      `%2Ftmp%2F${EVIL}.fidx`,
      `${EVIL}%00.fidx`,
      `${"f".repeat(300)}.fidx`,
      `.${EVIL}.fidx`,
      `${MANIFEST_FILE}`,
    ];
    for (const f of files) {
      is4xx(await raw("PUT", `/api/backup/${s.session}/index/${f}`, { body: fidx }), `index ${f}`);
      is4xx(await raw("GET", `/api/backup/${s.session}/base/${f}`), `base file ${f}`);
    }
    // An unescaped `..` is resolved before routing: it never reaches a handler as a name.
    is4xx(await raw("PUT", `/api/backup/${s.session}/index/../../../${EVIL}.fidx`, { body: fidx }), "index with raw ..");
    const digests = [`..%2F..%2F${hex}`, `%2e%2e%2f${hex}`, `%2F${hex}`, `${hex}%00`, hex.toUpperCase(), hex.slice(0, 63), `${hex}0`, `../${hex}`, "0".repeat(300)];
    for (const d of digests) {
      is4xx(await raw("PUT", `/api/backup/${s.session}/chunk/${d}?size=${data.length}`, { body: blob }), `chunk ${d}`);
      is4xx(await raw("GET", `/api/backup/${s.session}/base-chunk/${d}`), `base chunk ${d}`);
    }
    for (const sid of [`..%2F..%2F${EVIL}`, "%2e%2e", `${s.session}%00`, "s".repeat(300)]) {
      is4xx(await raw("PUT", `/api/backup/${sid}/index/x.fidx`, { body: fidx }), `session ${sid}`);
      is4xx(await raw("GET", `/api/reader/${sid}/file/x.fidx`), `reader ${sid}`);
    }
    assert.deepEqual(everything(), before, "the datastore and its parent gained nothing");
    assert.ok(!fs.existsSync(chunkFile(hex)));
    assertNoEvil();
    await abort(s);
  });

  void it("refuses a chunk whose digest does not match its data", async () => {
    const s = await startBackup("host/digest");
    const data = randomBytes(4096);
    const other = sha256(randomBytes(32));
    for (const level of [0, 3]) {
      const a = await putChunk(s, other, encodeBlob(data, level), data.length);
      assert.equal(a.status, 400, a.body);
      assert.match(a.body, /digest/);
    }
    // zero-filled data compresses: the digest of the plain data is checked, not of the blob
    const zeros = Buffer.alloc(CHUNK);
    const a = await putChunk(s, sha256(encodeBlob(zeros)), encodeBlob(zeros), CHUNK);
    assert.equal(a.status, 400, a.body);
    assert.ok(!fs.existsSync(chunkFile(other)), "no chunk stored under the wrong digest");
    assert.ok(!fs.existsSync(chunkFile(sha256(data))));
    assert.deepEqual(chunkTemps(), []);
    await abort(s);
  });

  void it("refuses malformed chunk batches and stores nothing of a refused record", async () => {
    let s = await startBackup("host/batch");
    const put = (body: Buffer) => call("PUT", `/api/backup/${s.session}/chunks`, { binary: body });
    const good = randomBytes(4096);
    const bad = randomBytes(4096);
    const ok = { hex: sha256(good), size: good.length, blob: encodeBlob(good, 0) };
    const wrongDigest = { hex: sha256(randomBytes(8)), size: bad.length, blob: encodeBlob(bad, 0) };
    const body = encodeChunkBatch([ok, wrongDigest]);
    const r1 = await put(body);
    assert.equal(r1.status, 400, r1.body);
    assert.match(r1.body, /digest/);
    assert.ok(!fs.existsSync(chunkFile(wrongDigest.hex)));
    // The good record of that batch was taken (as by a single upload); the abort removes it.
    await abort(s);
    assert.deepEqual(chunkTemps(), []);
    s = await startBackup("host/batch");
    // truncated record, a blob length running past the body, a size that lies
    is4xx(await put(body.subarray(0, 30)), "truncated header");
    const lying = Buffer.from(encodeChunkBatch([ok]));
    lying.writeUInt32LE(1 << 30, 36);
    is4xx(await put(lying), "blob length past the body");
    is4xx(await put(encodeChunkBatch([{ ...ok, size: ok.size + 1 }])), "size lies");
    assert.deepEqual(chunkTemps(), []);
    // a digest repeated in one batch is taken (an older client, a retry): stored once
    const dup = await put(encodeChunkBatch([ok, ok]));
    assert.equal(dup.status, 200, dup.body);
    assert.deepEqual(JSON.parse(dup.body), { stored: 2 });
    assert.equal(chunkTemps().length, 1, "one temp file for the repeated chunk");
    const r2 = await put(encodeChunkBatch([ok]));
    assert.equal(r2.status, 200, r2.body);
    await abort(s);
  });

  void it("refuses a chunk whose declared size lies", async () => {
    const s = await startBackup("host/size");
    const data = randomBytes(4096);
    const hex = sha256(data);
    const blob = encodeBlob(data, 0);
    for (const size of [data.length + 1, data.length - 1, 0, -1, "x", "", MAX_CHUNK_SIZE + 1, "1.5"]) {
      const a = await putChunk(s, hex, blob, size);
      assert.equal(a.status, 400, `size ${size}: ${a.body}`);
    }
    is4xx(await call("PUT", `/api/backup/${s.session}/chunk/${hex}`, { binary: blob }), "no size");
    assert.ok(!fs.existsSync(chunkFile(hex)));
    assert.deepEqual(chunkTemps(), []);
    await abort(s);
  });

  void it("refuses blobs with a bad CRC, truncated blobs and unknown magics", async () => {
    const s = await startBackup("host/blob");
    const data = randomBytes(4096);
    const hex = sha256(data);
    const good = encodeBlob(data, 0);
    const badCrc = Buffer.from(good);
    badCrc[100]! ^= 0xff;
    const badHeaderCrc = Buffer.from(good);
    badHeaderCrc[9]! ^= 0x01;
    const unknownKind = Buffer.from(good);
    unknownKind.write("QQ", 4, "latin1");
    const newerVersion = Buffer.from(good);
    newerVersion.writeUInt16BE(99, 6);
    const notGorde = Buffer.from(good);
    notGorde.write("ABCD", 0, "latin1");
    const cases: [string, Buffer][] = [
      ["bad CRC", badCrc],
      ["bad CRC field", badHeaderCrc],
      ["truncated payload", good.subarray(0, good.length - 100)],
      ["truncated header", good.subarray(0, 10)],
      ["magic only", good.subarray(0, 8)],
      ["empty", Buffer.alloc(0)],
      ["unknown kind", unknownKind],
      ["newer version", newerVersion],
      ["no gorde magic", notGorde],
      ["garbage", randomBytes(4108)],
      ["an index as a chunk", encodeFixedIndex({ ctime: 0, size: CHUNK, chunkSize: CHUNK, digests: Buffer.alloc(32) })],
    ];
    for (const [what, blob] of cases) {
      const a = await putChunk(s, hex, blob, data.length);
      assert.equal(a.status, 400, `${what}: ${a.body}`);
    }
    // zstd that does not decompress, with a correct CRC
    const zblob = encodeBlob(Buffer.alloc(CHUNK, 7), 3);
    const zbad = Buffer.from(zblob);
    zbad.fill(0x55, 16, zbad.length);
    zbad.writeUInt32LE(zlib.crc32(zbad.subarray(12)), 8);
    const z = await putChunk(s, sha256(Buffer.alloc(CHUNK, 7)), zbad, CHUNK);
    assert.equal(z.status, 400, `broken zstd: ${z.body}`);
    assert.ok(!fs.existsSync(chunkFile(hex)));
    assert.deepEqual(chunkTemps(), []);
    // the session still works: the good blob is stored
    const ok = await putChunk(s, hex, good, data.length);
    assert.equal(ok.status, 200, ok.body);
    await abort(s);
  });

  void it("refuses an encrypted blob in a session opened without a key, and a plain one in a session with a key", async () => {
    const key = deriveChunkKey(randomBytes(32));
    const data = randomBytes(8192);
    const plain = await startBackup("host/crypt-plain");
    const hex = keyedDigest(key, data).toString("hex");
    for (const level of [0, 3]) {
      const a = await putChunk(plain, hex, encodeBlob(data, level, key), data.length);
      assert.equal(a.status, 400, a.body);
      assert.match(a.body, /encrypted/);
    }
    assert.ok(!fs.existsSync(chunkFile(hex)));
    assert.deepEqual(chunkTemps(), [], "no temp file of the refused chunk stays");
    await abort(plain);

    const enc = await startBackup("host/crypt-enc", key.fingerprint);
    const phex = sha256(data);
    const a = await putChunk(enc, phex, encodeBlob(data, 0), data.length);
    assert.equal(a.status, 400, a.body);
    assert.ok(!fs.existsSync(chunkFile(phex)));
    assert.deepEqual(chunkTemps(), []);
    await abort(enc);
  });

  void it("refuses a declared content-length above the limit without reading the body", async () => {
    const s = await startBackup("host/oversized");
    const hex = sha256(Buffer.from("x"));
    const started = Date.now();
    // Nothing of the body is sent: the answer must come from the header alone.
    const chunk = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=1`, {
      headers: { "content-length": String(64 * 1024 * 1024), "content-type": "application/octet-stream" },
      end: false,
    });
    assert.equal(chunk.status, 413, chunk.body);
    const index = await raw("PUT", `/api/backup/${s.session}/index/x.fidx`, { headers: { "content-length": String(2 ** 40) }, end: false });
    assert.equal(index.status, 413, index.body);
    const json = await raw("POST", "/api/datastores/main/backup", { headers: { "content-length": String(16 * 1024 * 1024) }, end: false });
    assert.equal(json.status, 413, json.body);
    assert.ok(Date.now() - started < 5000, "answered at once");
    for (const bad of ["-1", "1e3", "abc", "99999999999999999999", "0x10"]) {
      const a = await raw("PUT", `/api/backup/${s.session}/index/x.fidx`, { headers: { "content-length": bad }, body: Buffer.alloc(3) });
      refused(a, `content-length ${bad}`);
    }
    assert.ok(!fs.existsSync(path.join(s.dir, "x.fidx")));
    await abort(s);
  });

  void it("refuses a body larger than declared, and one above the limit without a declared length", async () => {
    const s = await startBackup("host/lying-length");
    const data = randomBytes(1000);
    const hex = sha256(data);
    const blob = encodeBlob(data, 0);
    // more bytes than declared: answered 400 or the stream is reset; either way nothing is stored
    const more = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=${data.length}`, { headers: { "content-length": "100" }, body: blob });
    refused(more, "more bytes than declared");
    const fewer = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=${data.length}`, { headers: { "content-length": String(blob.length + 100) }, body: blob });
    refused(fewer, "fewer bytes than declared");
    assert.ok(!fs.existsSync(chunkFile(hex)));
    // no content-length: the stream is cut off at the limit
    const big = await raw("POST", "/api/datastores/main/backup", { body: Buffer.alloc(2 * 1024 * 1024, 0x20) });
    assert.equal(big.status, 413, big.body);
    const bigChunk = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=${data.length}`, { body: Buffer.alloc(MAX_CHUNK_SIZE + 64 * 1024) });
    assert.equal(bigChunk.status, 413, bigChunk.body);
    assert.ok(!fs.existsSync(chunkFile(hex)));
    assert.deepEqual(chunkTemps(), []);
    // the session is still usable
    const ok = await putChunk(s, hex, blob, data.length);
    assert.equal(ok.status, 200, ok.body);
    await abort(s);
  });

  void it("refuses a malformed JSON body", async () => {
    const before = everything();
    for (const text of ["{", '{"group": "host/a",', "[1,2", "nul", "\0", '{"group": "host/a"} trailing', "\uFEFF{}", "'x'"]) {
      const a = await raw("POST", "/api/datastores/main/backup", { body: Buffer.from(text), headers: { "content-type": "application/json" } });
      assert.equal(a.status, 400, `${JSON.stringify(text)}: ${a.body}`);
    }
    for (const text of ["null", "[]", '"x"', "42", "", "true"]) {
      const a = await raw("POST", "/api/datastores/main/backup", { body: Buffer.from(text), headers: { "content-type": "application/json" } });
      assert.equal(a.status, 400, `${JSON.stringify(text)}: ${a.body}`);
    }
    assert.deepEqual(everything(), before);
  });

  void it("refuses a JSON body with unknown keys", async () => {
    const before = everything();
    const cases: [string, string, unknown][] = [
      ["POST", "/api/datastores/main/backup", { group: "host/a", keyFingerprint: null, evil: 1 }],
      ["POST", "/api/datastores/main/backup", JSON.parse('{"group":"host/a","keyFingerprint":null,"__proto__":{"polluted":true}}')],
      ["POST", "/api/datastores/main/backup", { group: "host/a" }],
      ["POST", "/api/datastores/main/backup", { group: "host/a", keyFingerprint: "not-a-fingerprint" }],
      ["POST", "/api/datastores/main/backup", { group: "host/a", keyFingerprint: null, time: -1 }],
      ["POST", "/api/datastores/main/backup", { group: "host/a", keyFingerprint: null, time: 1.5 }],
      ["POST", "/api/access/users", { name: "mallory", password: "long-enough-1", role: "Admin" }],
      ["PUT", "/api/access/acl", { path: "/", authId: "mallory", role: "Admin", evil: true }],
      ["PUT", "/api/datastores/main/maintenance", { mode: "none", extra: 1 }],
      ["POST", "/api/datastores/main/gc", { cutoffSeconds: 0, dryRun: true }],
      ["POST", "/api/datastores/main/prune", { group: "host/a", keep: { keepLast: 1, keepForever: 1 } }],
    ];
    for (const [method, p, json] of cases) {
      const a = await call(method, p, { json });
      assert.equal(a.status, 400, `${method} ${p} ${JSON.stringify(json)}: ${a.body}`);
    }
    assert.equal((({}) as Record<string, unknown>).polluted, undefined, "no prototype pollution");
    const users = JSON.parse((await call("GET", "/api/access/users")).body) as { name: string }[];
    assert.ok(!users.some((u) => u.name === "mallory"), "no user was created");
    assert.deepEqual(everything(), before);
  });

  void it("refuses malformed index uploads and leaves no index file", async () => {
    const s = await startBackup("host/index");
    const missing = sha256(randomBytes(16));
    const fixedMissing = encodeFixedIndex({ ctime: 0, size: CHUNK, chunkSize: CHUNK, digests: Buffer.from(missing, "hex") });
    const dyn = new DynamicIndexBuilder();
    dyn.add(1000, Buffer.from(missing, "hex"));
    const dynMissing = encodeDynamicIndex(dyn.build(0));
    const fixedBadSum = Buffer.from(fixedMissing);
    fixedBadSum[40]! ^= 1;
    const fixedBadChunkSize = Buffer.from(fixedMissing);
    fixedBadChunkSize.writeBigUInt64LE(12345n, 24);
    const fixedHuge = Buffer.from(fixedMissing);
    fixedHuge.writeBigUInt64LE(2n ** 63n, 16);
    const cases: [string, Buffer][] = [
      ["garbage.fidx", randomBytes(4096)],
      ["garbage.didx", randomBytes(4096)],
      ["short.fidx", randomBytes(10)],
      ["empty.didx", Buffer.alloc(0)],
      ["dynamic-as-fixed.fidx", dynMissing],
      ["fixed-as-dynamic.didx", fixedMissing],
      ["bad-sum.fidx", fixedBadSum],
      ["bad-chunk-size.fidx", fixedBadChunkSize],
      ["huge.fidx", fixedHuge],
      ["truncated.fidx", fixedMissing.subarray(0, fixedMissing.length - 1)],
      ["missing.fidx", fixedMissing],
      ["missing.didx", dynMissing],
      ["not-an-index.json", fixedMissing],
      ["no-suffix", fixedMissing],
    ];
    for (const [file, bytes] of cases) {
      const a = await call("PUT", `/api/backup/${s.session}/index/${file}`, { binary: bytes });
      assert.equal(a.status, 400, `${file}: ${a.body}`);
    }
    assert.deepEqual(fs.readdirSync(s.dir), [], "no index file is left");
    await abort(s);
  });

  void it("refuses a manifest that does not match the session, and the snapshot stays invisible", async () => {
    const s = await startBackup("host/manifest");
    const data = randomBytes(CHUNK);
    const hex = sha256(data);
    assert.equal((await putChunk(s, hex, encodeBlob(data), CHUNK)).status, 200);
    const bytes = encodeFixedIndex({ ctime: s.time, size: CHUNK, chunkSize: CHUNK, digests: Buffer.from(hex, "hex") });
    const file = "disk.img.fidx";
    assert.equal((await call("PUT", `/api/backup/${s.session}/index/${file}`, { binary: bytes })).status, 200);
    const good: Manifest = {
      format: 1,
      type: "host",
      id: "manifest",
      time: s.time,
      archives: [{ name: "disk.img", kind: "img", size: CHUNK, indexes: [{ file, csum: sha256Hex(bytes), size: bytes.length }] }],
      cryptMode: "none",
      keyFingerprint: null,
      unprotected: {},
    };
    const fp = deriveChunkKey(randomBytes(32)).fingerprint;
    const arch = good.archives[0]!;
    const idx = arch.indexes[0]!;
    const cases: [string, unknown][] = [
      ["an index not uploaded", { ...good, archives: [{ ...arch, indexes: [{ ...idx, file: "other.img.fidx" }] }] }],
      ["a second archive with an index not uploaded", { ...good, archives: [arch, { ...arch, name: "b.img", indexes: [{ ...idx, file: "b.img.fidx" }] }] }],
      ["a wrong checksum", { ...good, archives: [{ ...arch, indexes: [{ ...idx, csum: sha256(Buffer.from("x")) }] }] }],
      ["a wrong size", { ...good, archives: [{ ...arch, indexes: [{ ...idx, size: idx.size + 1 }] }] }],
      ["no archives (the uploaded index unnamed)", { ...good, archives: [] }],
      ["another time", { ...good, time: s.time + 1 }],
      ["another id", { ...good, id: "other" }],
      ["another type", { ...good, type: "vm" }],
      ["a traversal id", { ...good, id: `../${EVIL}` }],
      ["encryption the session did not declare", { ...good, cryptMode: "encrypt", keyFingerprint: fp }],
      ["a key fingerprint without encryption", { ...good, keyFingerprint: fp }],
      ["encryption without a key fingerprint", { ...good, cryptMode: "encrypt" }],
      ["a verify state", { ...good, unprotected: { verify: { state: "ok", time: 1 } } }],
      ["a newer format", { ...good, format: FORMAT_VERSION + 1 }],
      ["members of a newer format than it says", { ...good, captures: [] }],
      ["an unknown key", { ...good, evil: true }],
      ["a traversal index name", { ...good, archives: [{ ...arch, indexes: [{ ...idx, file: `../${EVIL}.fidx` }] }] }],
      ["no manifest at all", {}],
    ];
    for (const [what, manifest] of cases) {
      const a = await call("POST", `/api/backup/${s.session}/finish`, { json: manifest });
      assert.equal(a.status, 400, `${what}: ${a.body}`);
      assert.ok(!fs.existsSync(path.join(s.dir, MANIFEST_FILE)), `${what}: no manifest written`);
    }
    const list = JSON.parse((await call("GET", "/api/datastores/main/snapshots", { query: { group: "host/manifest" } })).body) as { finished: boolean }[];
    assert.ok(list.every((x) => !x.finished), "the snapshot is not visible as finished");
    is4xx(await call("POST", "/api/datastores/main/reader", { json: { snapshot: s.snapshot } }), "reading the unfinished snapshot");
    assertNoEvil();
    // the session survived every refusal: the right manifest finishes it
    const fin = await call("POST", `/api/backup/${s.session}/finish`, { json: good });
    assert.equal(fin.status, 200, fin.body);
    assert.ok(fs.existsSync(path.join(s.dir, MANIFEST_FILE)));
  });

  void it("aborts a backup session that stays idle, removes its snapshot, and frees the group", async () => {
    const idleRoot = path.join(root.dir, "idle");
    const idleStore = path.join(idleRoot, "store");
    const idle = await startServer({
      stateDir: path.join(idleRoot, "state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { main: idleStore },
      adminPassword: PASSWORD,
      authFailureDelayMs: 0,
      sessionIdleMs: SHORT_IDLE_MS,
      log: () => undefined,
    });
    const c = await ServerConnection.connect({ host: "127.0.0.1", port: idle.port, authId: "admin", secret: PASSWORD, fingerprint: idle.fingerprint });
    try {
      const start = async (): Promise<{ session: string; snapshot: string }> => {
        const r = await c.request("POST", "/api/datastores/main/backup", { json: { group: "host/idle", keyFingerprint: null }, once: true });
        assert.equal(r.status, 200, r.body.toString("utf8"));
        return JSON.parse(r.body.toString("utf8")) as { session: string; snapshot: string };
      };
      const s = await start();
      const snapDir = path.join(idleStore, "host", "idle", s.snapshot.split("/")[2]!);
      const data = randomBytes(5000);
      const put = await c.request("PUT", `/api/backup/${s.session}/chunk/${sha256(data)}`, { binary: encodeBlob(data, 0), query: { size: data.length }, once: true });
      assert.equal(put.status, 200);
      const deadline = Date.now() + SHORT_IDLE_MS + 5000;
      // The abort removes the snapshot's directory, then the group it created: wait for the last step.
      const groupDir = path.join(idleStore, "host", "idle");
      while (fs.existsSync(groupDir) && Date.now() < deadline) await sleep(100);
      assert.ok(!fs.existsSync(snapDir), "the idle session's snapshot directory was removed");
      assert.ok(!fs.existsSync(groupDir), "the group the session created is gone too");
      assert.equal((await c.request("PUT", `/api/backup/${s.session}/index/x.fidx`, { binary: Buffer.alloc(64), once: true })).status, 404);
      assert.deepEqual(tree(path.join(idleStore, ".chunks")).filter((p) => p.includes(".tmp-")), [], "no temp chunk of the abandoned session stays");
      const again = await start();
      assert.equal((await c.request("DELETE", `/api/backup/${again.session}`, { once: true })).status, 200);
    } finally {
      c.close();
      await idle.close();
    }
  });

  void it("aborts a backup session whose connection closes before finish, and frees the group", async () => {
    const other = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: "admin", secret: PASSWORD, fingerprint: server.fingerprint });
    const s = await startBackup("host/dropped", null, other);
    const data = randomBytes(5000);
    const r = await other.request("PUT", `/api/backup/${s.session}/chunk/${sha256(data)}`, { binary: encodeBlob(data, 0), query: { size: data.length }, once: true });
    assert.equal(r.status, 200);
    const closed = Date.now();
    other.close();
    // well before the idle timeout: it is the closed connection that ends the session
    while (fs.existsSync(s.dir) && Date.now() - closed < IDLE_MS - 300) await sleep(20);
    assert.ok(!fs.existsSync(s.dir), "the snapshot directory was removed when the connection closed");
    assert.deepEqual(chunkTemps(), [], "no temp chunk of the abandoned session stays");
    const again = await startBackup("host/dropped");
    assert.equal((await call("POST", `/api/backup/${s.session}/finish`, { json: {} })).status, 404, "the old session is gone");
    await abort(again);
  });

  void it("refuses a second concurrent backup of one group with 409", async () => {
    // repeated: a refused starter once removed the group the winner had just created
    for (let i = 0; i < 10; i++) {
      const group = `host/concurrent-${i}`;
      const body = { json: { group, keyFingerprint: null } };
      const both = await Promise.all([call("POST", "/api/datastores/main/backup", body), call("POST", "/api/datastores/main/backup", body)]);
      const statuses = both.map((a) => a.status).sort();
      assert.deepEqual(statuses, [200, 409], `two backups of ${group}: ${both.map((a) => `${a.status} ${a.body}`).join("; ")}`);
      const first = JSON.parse(both.find((a) => a.status === 200)!.body) as { session: string; snapshot: string; time: number };
      const s: Started = { ...first, dir: path.join(dir, "host", `concurrent-${i}`, first.snapshot.split("/")[2]!) };
      assert.ok(fs.existsSync(s.dir), "the first session's snapshot directory exists");
      assert.equal((await call("POST", "/api/datastores/main/backup", body)).status, 409, "a third while the first runs");
      await abort(s);
      const next = await startBackup(group);
      await abort(next);
    }
  });

  void it("answers an unknown route with 404 and a wrong method with 405", async () => {
    for (const p of ["/api", "/api/nope", "/api/datastores/main/nope", "/api/backup", "/api/versionx", "/api/version/"]) {
      assert.equal((await raw("GET", p)).status, 404, p);
    }
    // outside /api/ is the web interface: its page (503 where it is not built), never a file it did not build
    for (const p of ["/", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"]) {
      const a = await raw("GET", p);
      assert.ok(a.status === 200 || a.status === 503, `${p}: ${a.status}`);
      assert.doesNotMatch(a.body, /root:/, p);
    }
    const wrong: [string, string][] = [
      ["DELETE", "/api/version"],
      ["POST", "/api/version"],
      ["PATCH", "/api/datastores"],
      ["HEAD", "/api/datastores/main/status"],
      ["GET", `/api/backup/${"a".repeat(24)}/chunk/${"0".repeat(64)}`],
      ["PUT", "/api/tasks"],
      ["OPTIONS", "/api/datastores/main/backup"],
    ];
    for (const [method, p] of wrong) {
      const a = await raw(method, p);
      assert.equal(a.status, 405, `${method} ${p}: ${a.body}`);
    }
    // without credentials: no route's handler runs
    assert.equal((await raw("GET", "/api/datastores", { auth: false })).status, 401);
    assert.equal((await raw("GET", "/api/datastores", { auth: false, headers: { authorization: "Basic " + Buffer.from("admin:wrong").toString("base64") } })).status, 401);
  });

  void it("refuses duplicate and unknown query parameters", async () => {
    const s = await startBackup("host/query");
    const data = randomBytes(1000);
    const hex = sha256(data);
    const dup = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=${data.length}&size=${data.length}`, { body: encodeBlob(data, 0) });
    assert.equal(dup.status, 400, dup.body);
    assert.ok(!fs.existsSync(chunkFile(hex)));
    for (const p of ["/api/tasks?limit=1&limit=2", "/api/datastores/main/snapshots?ns=a&ns=b", "/api/datastores/main/groups?ns=&ns=", "/api/version?x=1", "/api/datastores/main/snapshots?evil=1"]) {
      assert.equal((await raw("GET", p)).status, 400, p);
    }
    const extra = await raw("PUT", `/api/backup/${s.session}/chunk/${hex}?size=${data.length}&evil=1`, { body: encodeBlob(data, 0) });
    assert.equal(extra.status, 400, extra.body);
    await abort(s);
  });

  void it("is still healthy: serves the API, backs up and restores, and the datastore verifies", async () => {
    const v = await call("GET", "/api/version");
    assert.equal(v.status, 200);
    assert.equal((JSON.parse(v.body) as { api: number }).api, 1);

    const src = path.join(root.dir, "src");
    fs.mkdirSync(path.join(src, "sub"), { recursive: true });
    const content = randomBytes(300 * 1024);
    fs.writeFileSync(path.join(src, "a.bin"), content);
    fs.writeFileSync(path.join(src, "sub", "b.txt"), "hello\n");
    const url = `https://admin@127.0.0.1:${server.port}/main`;
    const remote = await RemoteRepository.connect(url, { secret: PASSWORD, fingerprint: server.fingerprint });
    try {
      const result = await runBackup({ group: { type: "host", id: "healthy" }, sources: [{ archive: "files.tree", source: src }] }, (req) => remote.openBackup(req));
      const target = path.join(root.dir, "restored");
      const ref = parseSnapshotRef(result.snapshot);
      const reader = await remote.openReader([], result.snapshot);
      try {
        await restoreArchive(reader, { snapshot: ref, archive: "files.tree", target });
      } finally {
        await reader.close();
      }
      assert.ok(fs.readFileSync(path.join(target, "a.bin")).equals(content));
      assert.equal(fs.readFileSync(path.join(target, "sub", "b.txt"), "utf8"), "hello\n");
    } finally {
      remote.close();
    }
    assert.deepEqual(chunkTemps(), [], "no temp chunk files are left");
    assertNoEvil();

    const store = await Datastore.open(dir);
    try {
      const report = await verifyAll(store);
      assert.ok(report.ok, `verify: ${JSON.stringify(report.snapshots.filter((x) => x.state !== "ok"))}`);
      assert.ok(report.snapshots.length >= 2, "the finished snapshots were verified");
    } finally {
      store.close();
    }
    const failures = serverLog.filter((l) => /^[A-Z]+ \//.test(l));
    assert.deepEqual(failures, [], "no request failed with a server error");
  });
});
