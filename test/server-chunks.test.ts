// The chunk upload path with data that looks like users' data, and what one backup user
// can do to another through it: repeated chunks in flight, in one batch, in two sessions
// and beside a garbage collection; a forged encrypted chunk under a plain digest; the
// upload answer and the index as an oracle or a way to read another owner's chunks.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { encodeChunkBatch } from "../src/api/chunk-batch.ts";
import { ServerConnection } from "../src/api/connection.ts";
import { Datastore } from "../src/datastore/datastore.ts";
import { garbageCollect } from "../src/datastore/gc.ts";
import { verifyAll } from "../src/datastore/verify.ts";
import { encodeBlob } from "../src/format/blob.ts";
import { deriveChunkKey } from "../src/format/crypt.ts";
import { encodeFixedIndex } from "../src/format/fixed-index.ts";
import { type Manifest, sha256Hex } from "../src/format/manifest.ts";
import { type GordeServer, startServer } from "../src/server/server.ts";
import { describeTree, tempDir } from "./helpers.ts";
import { gorde } from "./server-fixture.ts";
import { userBlocks, writeUserImage, writeUserTree } from "./user-data.ts";

const ADMIN = "admin-pass-1";
const CHUNK = 256 * 1024;

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function json<T>(r: { code: number; out: string; err: string }, what: string): T {
  assert.equal(r.code, 0, `${what}: ${r.err}`);
  return JSON.parse(r.out) as T;
}

void describe("chunks through the server", () => {
  const tmp = tempDir("gorde-chunks-");
  const store = path.join(tmp.dir, "store");
  let server: GordeServer;
  let admin: ServerConnection;
  const users: Record<string, ServerConnection> = {};
  const log: string[] = [];

  async function user(name: string): Promise<ServerConnection> {
    const password = `${name}-password-1`;
    const add = await admin.request("POST", "/api/access/users", { json: { name, password }, once: true });
    assert.equal(add.status, 200, add.body.toString());
    const acl = await admin.request("PUT", "/api/access/acl", { json: { path: "/datastore/main", authId: name, role: "DatastoreBackup" }, once: true });
    assert.equal(acl.status, 200, acl.body.toString());
    const c = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: name, secret: password, fingerprint: server.fingerprint });
    users[name] = c;
    return c;
  }

  async function call(c: ServerConnection, method: string, p: string, opts: { json?: unknown; binary?: Buffer } = {}): Promise<{ status: number; body: string }> {
    const r = await c.request(method, p, { ...opts, once: true });
    return { status: r.status, body: r.body.toString("utf8") };
  }

  async function startBackup(c: ServerConnection, group: string, keyFingerprint: string | null = null): Promise<{ session: string; snapshot: string; time: number }> {
    const r = await call(c, "POST", "/api/datastores/main/backup", { json: { group, keyFingerprint } });
    assert.equal(r.status, 200, `start a backup of ${group}: ${r.body}`);
    return JSON.parse(r.body) as { session: string; snapshot: string; time: number };
  }

  /** Uploads one image of `chunks` (each CHUNK bytes of plain data, blobs given) and finishes it. */
  async function backupImage(
    c: ServerConnection,
    group: string,
    chunks: { hex: string; blob: Buffer }[],
    key: { fingerprint: string } | null = null,
  ): Promise<string> {
    const s = await startBackup(c, group, key?.fingerprint ?? null);
    const up = await call(c, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch(chunks.map((x) => ({ ...x, size: CHUNK }))) });
    assert.equal(up.status, 200, up.body);
    const [type, id] = group.split("/") as ["host", string];
    const bytes = encodeFixedIndex({ ctime: s.time, size: CHUNK * chunks.length, chunkSize: CHUNK, digests: Buffer.concat(chunks.map((x) => Buffer.from(x.hex, "hex"))) });
    const file = "disk.img.fidx";
    const idx = await call(c, "PUT", `/api/backup/${s.session}/index/${file}`, { binary: bytes });
    assert.equal(idx.status, 200, idx.body);
    const manifest: Manifest = {
      format: 1,
      type,
      id,
      time: s.time,
      archives: [{ name: "disk.img", kind: "img", size: CHUNK * chunks.length, indexes: [{ file, csum: sha256Hex(bytes), size: bytes.length }] }],
      cryptMode: key ? "encrypt" : "none",
      keyFingerprint: key?.fingerprint ?? null,
      unprotected: {},
    };
    const fin = await call(c, "POST", `/api/backup/${s.session}/finish`, { json: manifest });
    assert.equal(fin.status, 200, fin.body);
    return s.snapshot;
  }

  /** The chunks of `snapshot` read back through a reader session of `c`: each digest's status. */
  async function readBack(c: ServerConnection, snapshot: string, digests: string[]): Promise<number[]> {
    const r = await call(c, "POST", "/api/datastores/main/reader", { json: { snapshot } });
    assert.equal(r.status, 200, r.body);
    const sid = (JSON.parse(r.body) as { session: string }).session;
    assert.equal((await call(c, "GET", `/api/reader/${sid}/file/disk.img.fidx`)).status, 200);
    const out: number[] = [];
    for (const hex of digests) out.push((await call(c, "GET", `/api/reader/${sid}/chunk/${hex}`)).status);
    await call(c, "DELETE", `/api/reader/${sid}`);
    return out;
  }

  function chunkFile(hex: string): string {
    return path.join(store, ".chunks", hex.slice(0, 2), hex);
  }

  function temps(): string[] {
    return fs
      .readdirSync(path.join(store, ".chunks"), { recursive: true, encoding: "utf8" })
      .filter((f) => f.includes(".tmp-"));
  }

  before(async () => {
    server = await startServer({
      stateDir: path.join(tmp.dir, "state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { main: store },
      adminPassword: ADMIN,
      authFailureDelayMs: 0,
      log: (l) => log.push(l),
    });
    admin = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: "admin", secret: ADMIN, fingerprint: server.fingerprint });
  });

  after(async () => {
    for (const c of Object.values(users)) c.close();
    admin?.close();
    await server?.close();
    tmp.cleanup();
  });

  void it("backs up and restores repeated blocks, identical files and zeros, locally and through the server, bit-exact", async () => {
    const blocks = userBlocks(11);
    const src = path.join(tmp.dir, "src");
    fs.mkdirSync(path.join(src, "tree"), { recursive: true });
    fs.mkdirSync(path.join(src, "tree2"), { recursive: true });
    const img0 = path.join(src, "disk0.img");
    const img1 = path.join(src, "disk1.img");
    writeUserImage(img0, blocks);
    writeUserImage(img1, blocks, { variant: 1 }); // the same blocks again: one block in two archives
    writeUserTree(path.join(src, "tree"), blocks);
    writeUserTree(path.join(src, "tree2"), blocks, { seed: 5 });
    const local = path.join(tmp.dir, "local");
    assert.equal((await gorde(["init", local])).code, 0);
    const env = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: server.fingerprint };
    for (const repo of [local, `https://admin@127.0.0.1:${server.port}/main`]) {
      const archives = [`disk0.img=${img0}`, `disk1.img=${img1}`, `root.tree=${path.join(src, "tree")}`, `data.tree=${path.join(src, "tree2")}`];
      const snaps: string[] = [];
      for (let round = 0; round < 2; round++) {
        if (round === 1) {
          // an incremental that adds more of the same: another copy of the docs, the block again
          fs.writeFileSync(path.join(src, "tree", "usr/share/doc/a/README.2"), blocks.doc);
          fs.appendFileSync(img1, Buffer.concat([blocks.a, blocks.a]));
        }
        const r = json<{ snapshot: string; stats: { newChunks: number; reusedChunks: number } }>(await gorde(["backup", repo, "vm/100", ...archives, "--json"], env), `backup ${round} to ${repo}`);
        snaps.push(r.snapshot);
        if (round === 1) assert.ok(r.stats.reusedChunks > 0, "the incremental reuses chunks");
        const out = path.join(tmp.dir, `restored-${snaps.length}-${repo.startsWith("https") ? "remote" : "local"}`);
        for (const [name, file] of [
          ["disk0.img", img0],
          ["disk1.img", img1],
        ] as const) {
          assert.equal((await gorde(["restore", repo, r.snapshot, name, `${out}-${name}`], env)).code, 0);
          assert.ok(fs.readFileSync(`${out}-${name}`).equals(fs.readFileSync(file)), `${name} of ${r.snapshot} from ${repo} is bit-exact`);
        }
        for (const [name, dir] of [
          ["root.tree", "tree"],
          ["data.tree", "tree2"],
        ] as const) {
          const res = await gorde(["restore", repo, r.snapshot, name, `${out}-${name}`], env);
          assert.equal(res.code, 0, res.err);
          assert.deepEqual(describeTree(`${out}-${name}`), describeTree(path.join(src, dir)), `${name} of ${r.snapshot} from ${repo}`);
        }
      }
      const v = json<{ ok: boolean }>(await gorde(["verify", repo, "--json"], env), `verify ${repo}`);
      assert.equal(v.ok, true);
      fs.rmSync(path.join(src, "tree", "usr/share/doc/a/README.2"));
      writeUserImage(img1, blocks, { variant: 1 });
    }
    assert.deepEqual(temps(), [], "no temp chunk file is left");
  });

  void it("stores a plain chunk again in a local datastore where an encrypted blob sits under its digest", async () => {
    const local = path.join(tmp.dir, "local-forged");
    assert.equal((await gorde(["init", local])).code, 0);
    const victim = randomBytes(CHUNK);
    const hex = sha256(victim);
    const file = path.join(local, ".chunks", hex.slice(0, 2), hex);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, encodeBlob(randomBytes(CHUNK), 1, deriveChunkKey(randomBytes(32))));
    const img = path.join(tmp.dir, "forged.img");
    fs.writeFileSync(img, Buffer.concat([victim, Buffer.alloc(CHUNK), victim]));
    const r = json<{ snapshot: string }>(await gorde(["backup", local, "host/forged", `disk.img=${img}`, "--json"]), "backup");
    const out = path.join(tmp.dir, "forged-restored.img");
    const res = await gorde(["restore", local, r.snapshot, "disk.img", out]);
    assert.equal(res.code, 0, res.err);
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(img)));
  });

  void it("stores a digest repeated in one batch and in two batches in flight once", async () => {
    const c = await user("repeat");
    const data = randomBytes(CHUNK);
    const hex = sha256(data);
    const rec = { hex, size: CHUNK, blob: encodeBlob(data) };
    const other = randomBytes(CHUNK);
    const rec2 = { hex: sha256(other), size: CHUNK, blob: encodeBlob(other, 0) };
    const s = await startBackup(c, "host/repeat");
    const answers = await Promise.all([rec, rec2].map(() => call(c, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([rec, rec2, rec, rec]) })));
    for (const a of answers) assert.deepEqual([a.status, JSON.parse(a.body)], [200, { stored: 4 }], a.body);
    // a repeated record is still checked: one that lies is refused
    const lie = await call(c, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([rec, { ...rec, blob: encodeBlob(other) }]) });
    assert.equal(lie.status, 400, lie.body);
    await call(c, "DELETE", `/api/backup/${s.session}`);
    assert.ok(!fs.existsSync(chunkFile(hex)), "an aborted backup names none of its chunks");
    assert.deepEqual(temps(), []);
    await backupImage(c, "host/repeat", [rec, rec, rec2, rec]);
    assert.ok(fs.readFileSync(chunkFile(hex)).equals(rec.blob));
    assert.deepEqual(temps(), []);
  });

  void it("lets no owner's encrypted upload change what another owner's plain chunk holds", async () => {
    const mallory = await user("mallory");
    const alice = await user("alice");
    const victim = randomBytes(CHUNK);
    const hex = sha256(victim);
    const key = deriveChunkKey(randomBytes(32));
    const forged = encodeBlob(randomBytes(CHUNK), 1, key);
    // Mallory stores an encrypted blob under the plain digest of data Alice will back up.
    const evil = await backupImage(mallory, "host/mallory", [{ hex, blob: forged }], key);
    assert.ok(fs.readFileSync(chunkFile(hex)).equals(forged), "the forged chunk was stored (nothing else was under that name)");
    // Alice's plain backup of that data proves its digest: her chunk replaces the forged one.
    const good = encodeBlob(victim);
    const snap = await backupImage(alice, "host/alice", [{ hex, blob: good }]);
    assert.ok(fs.readFileSync(chunkFile(hex)).equals(good), "the checked plain chunk replaced the forged one");
    assert.deepEqual(await readBack(alice, snap, [hex]), [200]);
    // Mallory's encrypted snapshot now names a plain chunk: not its data, not served, and verify says so.
    assert.deepEqual(await readBack(mallory, evil, [hex]), [404]);
    const ds = await Datastore.open(store);
    try {
      const report = await verifyAll(ds);
      const states = Object.fromEntries(report.snapshots.map((s) => [s.snapshot, s.state]));
      assert.equal(states[snap], "ok");
      assert.equal(states[evil], "failed");
      assert.match(report.snapshots.find((s) => s.snapshot === evil)!.errors.join(" "), /not encrypted but snapshot/);
      assert.ok(fs.existsSync(chunkFile(hex)), "verify leaves a valid plain chunk in place");
    } finally {
      ds.close();
    }
    // Once Alice's chunk is stored, a later encrypted upload under its name leaves it as it is.
    await backupImage(mallory, "host/mallory", [{ hex, blob: encodeBlob(randomBytes(CHUNK), 1, key) }], key);
    assert.ok(fs.readFileSync(chunkFile(hex)).equals(good));
    assert.ok(log.some((l) => /encrypted uploads under the names of stored unencrypted chunks were dropped/.test(l)), "the server logs the dropped upload");
    assert.deepEqual(temps(), []);
  });

  void it("answers an upload alike whether or not another owner stored the chunk, and refuses an index naming a chunk never uploaded", async () => {
    const bob = await user("bob");
    const eve = await user("eve");
    const secret = randomBytes(CHUNK);
    const hex = sha256(secret);
    const bobSnap = await backupImage(bob, "host/bob", [{ hex, blob: encodeBlob(secret) }]);

    // Eve names Bob's chunk in her index without uploading it: refused, so she cannot read it back.
    const own = randomBytes(CHUNK);
    const s = await startBackup(eve, "host/eve");
    assert.equal((await call(eve, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([{ hex: sha256(own), size: CHUNK, blob: encodeBlob(own) }]) })).status, 200);
    const bytes = encodeFixedIndex({ ctime: s.time, size: 2 * CHUNK, chunkSize: CHUNK, digests: Buffer.from(sha256(own) + hex, "hex") });
    const idx = await call(eve, "PUT", `/api/backup/${s.session}/index/disk.img.fidx`, { binary: bytes });
    assert.equal(idx.status, 400, idx.body);
    assert.match(idx.body, /neither uploaded in this backup nor is in its base snapshot/);
    // A stored chunk uploaded with the wrong data is refused as before (the digest is checked).
    const wrong = await call(eve, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([{ hex, size: CHUNK, blob: encodeBlob(randomBytes(CHUNK)) }]) });
    assert.equal(wrong.status, 400, wrong.body);
    // Uploading Bob's data answers exactly as uploading data nobody stored.
    const fresh = randomBytes(CHUNK);
    const a1 = await call(eve, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([{ hex, size: CHUNK, blob: encodeBlob(secret) }]) });
    const a2 = await call(eve, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([{ hex: sha256(fresh), size: CHUNK, blob: encodeBlob(fresh) }]) });
    assert.deepEqual([a1.status, a1.body], [a2.status, a2.body]);
    const single1 = await call(eve, "PUT", `/api/backup/${s.session}/chunk/${hex}?size=${CHUNK}`, { binary: encodeBlob(secret) });
    const single2 = await call(eve, "PUT", `/api/backup/${s.session}/chunk/${sha256(fresh)}?size=${CHUNK}`, { binary: encodeBlob(fresh) });
    assert.deepEqual([single1.status, single1.body], [single2.status, single2.body]);
    await call(eve, "DELETE", `/api/backup/${s.session}`);

    // The base rule: an incremental may name its own base's chunks without uploading them.
    const second = await startBackup(bob, "host/bob");
    const again = encodeFixedIndex({ ctime: second.time, size: CHUNK, chunkSize: CHUNK, digests: Buffer.from(hex, "hex") });
    assert.equal((await call(bob, "PUT", `/api/backup/${second.session}/index/disk.img.fidx`, { binary: again })).status, 200);
    await call(bob, "DELETE", `/api/backup/${second.session}`);
    assert.deepEqual(await readBack(bob, bobSnap, [hex]), [200]);
  });

  void it("keeps every chunk a backup names when a garbage collection sweeps beside its uploads", async () => {
    const c = await user("gcrace");
    // Chunks stored long ago and referenced by nothing: exactly what a sweep removes.
    const datas = Array.from({ length: 24 }, () => randomBytes(64 * 1024));
    const recs = datas.map((d) => ({ hex: sha256(d), size: d.length, blob: encodeBlob(d) }));
    const ds = await Datastore.open(store);
    try {
      for (let round = 0; round < 6; round++) {
        const old = new Date(Date.now() - 3 * 86400_000);
        for (const r of recs) {
          fs.mkdirSync(path.dirname(chunkFile(r.hex)), { recursive: true });
          fs.writeFileSync(chunkFile(r.hex), r.blob);
          fs.utimesSync(chunkFile(r.hex), old, old);
        }
        const s = await startBackup(c, "host/gcrace");
        // Sweeps (a cutoff of 0 removes every unmarked chunk older than the oldest running backup) beside the uploads.
        const sweeps = (async () => {
          for (let i = 0; i < 3; i++) await garbageCollect(ds, { cutoffMs: 0 });
        })();
        const uploads = recs.map((r) => call(c, "PUT", `/api/backup/${s.session}/chunks`, { binary: encodeChunkBatch([r]) }));
        for (const a of await Promise.all(uploads)) assert.equal(a.status, 200, a.body);
        await sweeps;
        const bytes = encodeFixedIndex({ ctime: s.time, size: 64 * 1024 * recs.length, chunkSize: 64 * 1024, digests: Buffer.concat(recs.map((r) => Buffer.from(r.hex, "hex"))) });
        assert.equal((await call(c, "PUT", `/api/backup/${s.session}/index/disk.img.fidx`, { binary: bytes })).status, 200);
        const manifest: Manifest = {
          format: 1,
          type: "host",
          id: "gcrace",
          time: s.time,
          archives: [{ name: "disk.img", kind: "img", size: 64 * 1024 * recs.length, indexes: [{ file: "disk.img.fidx", csum: sha256Hex(bytes), size: bytes.length }] }],
          cryptMode: "none",
          keyFingerprint: null,
          unprotected: {},
        };
        assert.equal((await call(c, "POST", `/api/backup/${s.session}/finish`, { json: manifest })).status, 200);
        await garbageCollect(ds, { cutoffMs: 0 });
        const missing = recs.filter((r) => !fs.existsSync(chunkFile(r.hex)));
        assert.deepEqual(missing.map((r) => r.hex), [], `round ${round}: every chunk the snapshot names is stored`);
        // forget it again, so the next round starts from unreferenced chunks
        assert.equal((await call(admin, "DELETE", `/api/datastores/main/snapshots?snapshot=${encodeURIComponent(s.snapshot)}`)).status, 200);
      }
    } finally {
      ds.close();
    }
  });
});
