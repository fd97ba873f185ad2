// gorde server end to end: every command against https://…, encryption, users and tokens
// from the command line, sync between two servers, maintenance modes, metrics, OpenAPI.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ROUTES } from "../src/api/routes.ts";
import { ServerConnection } from "../src/api/connection.ts";
import { isRoot, tempDir } from "./helpers.ts";
import { type ServerProcess, gorde, startServerProcess } from "./server-fixture.ts";

const tmp = tempDir("gorde-server-");
const ADMIN = "admin-pass-1";

function files(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: "utf8" }).map((f) => path.join(dir, f)).filter((f) => fs.statSync(f).isFile());
}

function json<T>(r: { code: number; out: string; err: string }): T {
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as T;
}

void describe("gorde server", () => {
  let srv: ServerProcess;
  let env: Record<string, string>;
  const store = path.join(tmp.dir, "store");
  const src = path.join(tmp.dir, "src");
  const img = path.join(tmp.dir, "disk.img");

  before(async () => {
    srv = await startServerProcess({ stateDir: path.join(tmp.dir, "state"), datastores: { main: store }, adminPassword: ADMIN });
    env = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: srv.fingerprint };
    fs.mkdirSync(path.join(src, "etc"), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, "etc", `f${i}.conf`), `MARKER-PLAINTEXT-7f3a line ${i}\n`.repeat(50));
    const fd = fs.openSync(img, "w");
    fs.writeSync(fd, randomBytes(3 * 1024 * 1024), 0, 3 * 1024 * 1024, 1024 * 1024);
    fs.ftruncateSync(fd, 16 * 1024 * 1024);
    fs.closeSync(fd);
  });
  after(async () => {
    await srv?.stop();
    tmp.cleanup();
  });

  void it("prints the certificate fingerprint in the documented form", () => {
    assert.match(srv.fingerprint, /^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  });

  void it("backs up, lists, browses and restores through the server, full then incremental", async () => {
    const url = srv.url("main");
    const first = json<{ snapshot: string; base: string | null }>(await gorde(["backup", url, "vm/100", `disk.img=${img}`, `root.tree=${src}`, "--json"], env));
    assert.equal(first.base, null);
    fs.appendFileSync(path.join(src, "etc", "f1.conf"), "changed\n");
    const second = json<{ snapshot: string; base: string; stats: { newChunks: number; reusedChunks: number } }>(
      await gorde(["backup", url, "vm/100", `disk.img=${img}`, `root.tree=${src}`, "--json"], env),
    );
    assert.equal(second.base, first.snapshot);
    assert.ok(second.stats.reusedChunks > 0);
    const snaps = json<{ snapshot: string; finished: boolean; owner: string; size: number }[]>(await gorde(["snapshots", url, "--json"], env));
    assert.deepEqual(
      snaps.map((s) => [s.snapshot, s.finished, s.owner]),
      [
        [first.snapshot, true, "admin"],
        [second.snapshot, true, "admin"],
      ],
    );
    const out = path.join(tmp.dir, "restored.img");
    assert.equal((await gorde(["restore", url, first.snapshot, "disk.img", out], env)).code, 0);
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(img)));
    const tree = path.join(tmp.dir, "restored-tree");
    assert.equal((await gorde(["restore", url, "vm/100/latest", "root.tree", tree], env)).code, 0);
    assert.equal(fs.readFileSync(path.join(tree, "etc/f1.conf"), "utf8"), fs.readFileSync(path.join(src, "etc/f1.conf"), "utf8"));
    const ls = json<{ path: string }[]>(await gorde(["ls", url, "vm/100/latest", "root.tree", "etc", "--json"], env));
    assert.equal(ls.length, 40);
    assert.equal((await gorde(["notes", url, first.snapshot, "before the upgrade"], env)).code, 0);
    assert.equal((await gorde(["notes", url, first.snapshot], env)).out, "before the upgrade\n");
    assert.equal((await gorde(["protect", url, first.snapshot], env)).code, 0);
    const forget = await gorde(["forget", url, first.snapshot], env);
    assert.notEqual(forget.code, 0);
    assert.match(forget.err, /protected/);
    const plan = json<{ snapshot: string; action: string }[]>(await gorde(["prune", url, "vm/100", "--keep-last", "1", "--dry-run", "--json"], env));
    assert.deepEqual(
      plan.map((p) => p.action),
      ["keep", "protected"],
    );
    const verify = await gorde(["verify", url], env);
    assert.equal(verify.code, 0, verify.err);
    const gc = json<{ removedChunks: number; dedupFactor: number }>(await gorde(["gc", url, "--json"], env));
    assert.equal(gc.removedChunks, 0);
    const status = json<{ chunks: number; dedupFactor: number; snapshots: number }>(await gorde(["status", url, "--json"], env));
    assert.equal(status.snapshots, 2);
    assert.ok(status.chunks > 0 && status.dedupFactor > 1);
  });

  void it("encrypts on the client: no plaintext on the server, restore only with the key", async () => {
    const url = srv.url("main");
    const key = path.join(tmp.dir, "key.json");
    const kenv = { ...env, GORDE_KEY_PASSPHRASE: "correct horse battery" };
    assert.equal((await gorde(["key", "create", key], kenv)).code, 0);
    // A marker between incompressible bytes: stored plain, it would show in a chunk file as it is.
    const marker = Buffer.from(`MARKER-PLAINTEXT-${randomBytes(6).toString("hex")}`);
    const secretSrc = path.join(tmp.dir, "secret-src");
    fs.cpSync(src, secretSrc, { recursive: true });
    fs.writeFileSync(path.join(secretSrc, "etc/secret.bin"), Buffer.concat([randomBytes(100_000), marker, randomBytes(100_000)]));
    const holding = (): string[] => files(store).filter((f) => fs.readFileSync(f).includes(marker));
    const r = json<{ snapshot: string }>(await gorde(["backup", url, "ct/200", `root.tree=${secretSrc}`, "--keyfile", key, "--json"], kenv));
    assert.ok(files(path.join(store, "ct/200")).length > 0);
    assert.deepEqual(holding(), [], "no file of the datastore holds the plaintext");
    // The same data unencrypted: the check sees it (it can fail).
    assert.equal((await gorde(["backup", url, "ct/201", `root.tree=${secretSrc}`], env)).code, 0);
    assert.ok(holding().some((f) => f.includes(".chunks")), "an unencrypted backup leaves the marker readable in a chunk");
    const snaps = json<{ snapshot: string; encrypted: boolean }[]>(await gorde(["snapshots", url, "ct/200", "--json"], env));
    assert.equal(snaps[0]!.encrypted, true);
    const noKey = await gorde(["restore", url, r.snapshot, "root.tree", path.join(tmp.dir, "nokey")], env);
    assert.equal(noKey.code, 2);
    assert.match(noKey.err, /encrypted; give its key/);
    const other = path.join(tmp.dir, "other-key.json");
    assert.equal((await gorde(["key", "create", other], kenv)).code, 0);
    const wrong = await gorde(["restore", url, r.snapshot, "root.tree", path.join(tmp.dir, "wrongkey"), "--keyfile", other], kenv);
    assert.equal(wrong.code, 2);
    assert.match(wrong.err, /encrypted with key/);
    assert.ok(!fs.existsSync(path.join(tmp.dir, "wrongkey")));
    // The paper key, typed back, opens the backup too.
    const paper = await gorde(["key", "paper", key], kenv);
    assert.equal(paper.code, 0);
    fs.writeFileSync(path.join(tmp.dir, "paper.txt"), paper.out);
    const imported = path.join(tmp.dir, "imported.json");
    assert.equal((await gorde(["key", "import", path.join(tmp.dir, "paper.txt"), imported], kenv)).code, 0);
    const good = await gorde(["restore", url, r.snapshot, "root.tree", path.join(tmp.dir, "withkey"), "--keyfile", imported], kenv);
    assert.equal(good.code, 0, good.err);
    assert.equal(fs.readFileSync(path.join(tmp.dir, "withkey/etc/f3.conf"), "utf8"), fs.readFileSync(path.join(src, "etc/f3.conf"), "utf8"));
    assert.ok(fs.readFileSync(path.join(tmp.dir, "withkey/etc/secret.bin")).includes(marker));
    // A changed passphrase keeps the key.
    assert.equal((await gorde(["key", "passwd", key], { ...kenv, GORDE_NEW_KEY_PASSPHRASE: "new passphrase 2" })).code, 0);
    const again = await gorde(["restore", url, r.snapshot, "root.tree", path.join(tmp.dir, "withkey2"), "--keyfile", key], { ...env, GORDE_KEY_PASSPHRASE: "new passphrase 2" });
    assert.equal(again.code, 0, again.err);
  });

  void it("manages users, tokens, ACLs and owners from the command line", async () => {
    const server = `https://admin@127.0.0.1:${srv.port}`;
    assert.equal((await gorde(["user", "add", server, "node1"], { ...env, GORDE_NEW_PASSWORD: "node1-pass" })).code, 0);
    const users = json<{ name: string }[]>(await gorde(["user", "list", server, "--json"], env));
    assert.deepEqual(users.map((u) => u.name).sort(), ["admin", "node1"]);
    assert.equal((await gorde(["acl", "set", server, "/datastore/main", "node1", "DatastorePowerUser"], env)).code, 0);
    const tok = json<{ tokenId: string; secret: string }>(await gorde(["token", "add", server, "node1", "backup", "--json"], env));
    assert.equal(tok.tokenId, "node1!backup");
    // A token has no permissions of its own until an ACL grants some.
    const tokUrl = srv.url("main", "node1!backup");
    const tenv = { GORDE_PASSWORD: tok.secret, GORDE_FINGERPRINT: srv.fingerprint };
    const denied = await gorde(["backup", tokUrl, "ct/300", `root.tree=${src}`], tenv);
    // A datastore the caller has no privilege on is not even shown to exist.
    assert.equal(denied.code, 3, denied.err);
    assert.match(denied.err, /no datastore main/);
    assert.equal((await gorde(["acl", "set", server, "/datastore/main", "node1!backup", "DatastoreBackup"], env)).code, 0);
    const ok = await gorde(["backup", tokUrl, "ct/300", `root.tree=${src}`], tenv);
    assert.equal(ok.code, 0, ok.err);
    assert.equal((await gorde(["owner", srv.url("main"), "ct/300"], env)).out, "node1!backup\n");
    // The token may not touch the admin's groups.
    const other = await gorde(["restore", tokUrl, "vm/100/latest", "root.tree", path.join(tmp.dir, "stolen")], tenv);
    assert.equal(other.code, 7);
    assert.equal((await gorde(["owner", srv.url("main"), "ct/300", "node1"], env)).code, 0);
    assert.equal((await gorde(["token", "remove", server, "node1", "backup"], env)).code, 0);
    const revoked = await gorde(["snapshots", tokUrl], tenv);
    assert.equal(revoked.code, 7);
    assert.match(revoked.err, /authentication failed/);
    const wrongPw = await gorde(["snapshots", srv.url("main")], { ...env, GORDE_PASSWORD: "wrong" });
    assert.equal(wrongPw.code, 7);
  });

  void it("lists tasks and shows their logs", async () => {
    const server = `https://admin@127.0.0.1:${srv.port}`;
    const tasks = json<{ id: string; type: string; state: string }[]>(await gorde(["task", "list", server, "--json"], env));
    const gc = tasks.find((t) => t.type === "gc");
    assert.equal(gc?.state, "ok");
    const log = await gorde(["task", "log", server, gc.id], env);
    assert.equal(log.code, 0, log.err);
    assert.match(log.out, /TASK OK/);
    assert.equal((await gorde(["task", "log", server, "UPID-../../etc"], env)).code, 2);
  });

  void it("refuses a server whose fingerprint is not the pinned one", async () => {
    const wrong = "00:".repeat(31) + "00";
    const r = await gorde(["snapshots", srv.url("main"), "--fingerprint", wrong], env);
    assert.equal(r.code, 7);
    assert.match(r.err, /presents certificate fingerprint .* not the pinned/);
    const list = path.join(tmp.dir, "fingerprints");
    const none = await gorde(["snapshots", srv.url("main")], { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: "", GORDE_FINGERPRINTS: list });
    assert.equal(none.code, 2);
    assert.match(none.err, /not pinned/);
    // A trusted-fingerprints file, as PBS's client keeps one.
    fs.writeFileSync(list, `# pinned servers\n127.0.0.1:1 ${wrong}\n127.0.0.1:${srv.port} ${srv.fingerprint.toUpperCase()}\n`);
    const trusted = await gorde(["snapshots", srv.url("main")], { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: "", GORDE_FINGERPRINTS: list });
    assert.equal(trusted.code, 0, trusted.err);
  });

  void it("maintenance: read-only stops backups but not restores; offline stops both", async () => {
    const url = srv.url("main");
    assert.equal((await gorde(["maintenance", url, "read-only"], env)).code, 0);
    const b = await gorde(["backup", url, "vm/100", `disk.img=${img}`], env);
    assert.notEqual(b.code, 0);
    assert.match(b.err, /read-only for maintenance/);
    assert.equal((await gorde(["restore", url, "vm/100/latest", "disk.img", path.join(tmp.dir, "ro.img")], env)).code, 0);
    assert.equal((await gorde(["maintenance", url, "offline"], env)).code, 0);
    const r = await gorde(["restore", url, "vm/100/latest", "disk.img", path.join(tmp.dir, "off.img")], env);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /offline for maintenance/);
    assert.equal((await gorde(["maintenance", url, "none"], env)).code, 0);
    assert.equal((await gorde(["backup", url, "vm/100", `disk.img=${img}`], env)).code, 0);
  });

  void it("serves Prometheus metrics and an OpenAPI document of every route", async () => {
    const conn = await ServerConnection.connect({ host: "127.0.0.1", port: srv.port, authId: "admin", secret: ADMIN, fingerprint: srv.fingerprint });
    try {
      const m = await conn.request("GET", "/metrics");
      assert.equal(m.status, 200);
      const text = m.body.toString();
      for (const name of ["gorde_backups_total", "gorde_chunks_received_total", "gorde_datastore_chunks", "gorde_datastore_bytes", "gorde_tasks", "gorde_http_requests_total"]) {
        assert.match(text, new RegExp(`^${name}`, "m"), name);
      }
      const doc = JSON.parse((await conn.request("GET", "/api/openapi.json")).body.toString()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.equal(doc.openapi, "3.1.0");
      for (const r of Object.values(ROUTES)) assert.ok(doc.paths[r.path]?.[r.method.toLowerCase()], `${r.method} ${r.path}`);
      const tasks = JSON.parse((await conn.request("GET", "/api/tasks")).body.toString()) as { type: string; state: string }[];
      assert.ok(tasks.some((t) => t.type === "gc" && t.state === "ok"));
    } finally {
      conn.close();
    }
    const anon = await ServerConnection.connect({ host: "127.0.0.1", port: srv.port, authId: "admin", secret: "wrong", fingerprint: srv.fingerprint });
    try {
      assert.equal((await anon.request("GET", "/metrics", { once: true })).status, 401);
    } finally {
      anon.close();
    }
  });

  void it("a second server pulls a copy: only missing chunks, encryption kept, again pulls nothing", async () => {
    const copyStore = path.join(tmp.dir, "copy-store");
    const copy = await startServerProcess({ stateDir: path.join(tmp.dir, "copy-state"), datastores: { copy: copyStore }, adminPassword: "copy-pass-1" });
    try {
      const cenv = { GORDE_PASSWORD: "copy-pass-1", GORDE_FINGERPRINT: copy.fingerprint };
      const copyServer = `https://admin@127.0.0.1:${copy.port}`;
      // A sync names a remote an administrator added; a URL is refused before the server is asked.
      const byUrl = await gorde(["sync", copy.url("copy"), srv.url("main")], cenv);
      assert.equal(byUrl.code, 2, byUrl.err);
      assert.match(byUrl.err, /is a URL, but a sync names a remote: an administrator adds the server first with gorde remote add /);
      const unknown = await gorde(["sync", copy.url("copy"), "main"], cenv);
      assert.equal(unknown.code, 3, unknown.err);
      assert.match(unknown.err, /no remote main; an administrator adds it with gorde remote add/);
      const noSecret = await gorde(["remote", "add", copyServer, "main", "--url", srv.url("main"), "--remote-fingerprint", srv.fingerprint], cenv);
      assert.equal(noSecret.code, 2);
      assert.match(noSecret.err, /GORDE_REMOTE_PASSWORD/);
      const badName = await gorde(["remote", "add", copyServer, "main.example", "--url", srv.url("main"), "--remote-fingerprint", srv.fingerprint], { ...cenv, GORDE_REMOTE_PASSWORD: ADMIN });
      assert.equal(badName.code, 2);
      assert.match(badName.err, /"main\.example" is not a valid remote name/);
      const added = json<{ name: string; url: string }>(
        await gorde(["remote", "add", copyServer, "main", "--url", srv.url("main"), "--remote-fingerprint", srv.fingerprint, "--json"], { ...cenv, GORDE_REMOTE_PASSWORD: ADMIN }),
      );
      assert.deepEqual(added.url, srv.url("main"));
      const listed = await gorde(["remote", "list", copyServer, "--json"], cenv);
      assert.deepEqual(json<{ name: string; url: string; fingerprint: string }[]>(listed), [{ name: "main", url: srv.url("main"), fingerprint: srv.fingerprint }]);
      assert.ok(!listed.out.includes(ADMIN), "the remote's secret is never listed");
      assert.match((await gorde(["remote", "list", copyServer], cenv)).out, /^main {2}https:\/\/admin@127\.0\.0\.1:\d+\/main {2}[0-9a-f:]{95}\n$/);
      const args = ["sync", copy.url("copy"), "main", "--json"];
      const first = json<{ snapshots: number; chunks: number }>(await gorde([...args, "--group", "vm/100", "--last", "1"], cenv));
      assert.equal(first.snapshots, 1);
      const allRun = await gorde(args, cenv);
      assert.equal(allRun.code, 0, allRun.err);
      const all = json<{ snapshots: number; chunks: number }>(allRun);
      assert.ok(all.snapshots >= 3);
      const again = json<{ snapshots: number; chunks: number }>(await gorde(args, cenv));
      assert.deepEqual([again.snapshots, again.chunks], [0, 0]);
      const src2 = json<{ snapshot: string }[]>(await gorde(["snapshots", srv.url("main"), "--json"], env)).map((s) => s.snapshot);
      const dst = json<{ snapshot: string; encrypted: boolean }[]>(await gorde(["snapshots", copy.url("copy"), "--json"], cenv));
      assert.deepEqual(dst.map((s) => s.snapshot).sort(), src2.sort());
      assert.equal(dst.find((s) => s.snapshot.startsWith("ct/200/"))?.encrypted, true);
      const out = path.join(tmp.dir, "from-copy.img");
      assert.equal((await gorde(["restore", copy.url("copy"), "vm/100/latest", "disk.img", out], cenv)).code, 0);
      assert.ok(fs.readFileSync(out).equals(fs.readFileSync(img)));
      assert.equal((await gorde(["verify", copy.url("copy")], cenv)).code, 0);
      assert.equal((await gorde(["remote", "remove", copyServer, "main"], cenv)).code, 0);
      assert.deepEqual(json<unknown[]>(await gorde(["remote", "list", copyServer, "--json"], cenv)), []);
      assert.equal((await gorde(args, cenv)).code, 3, "a removed remote is gone");
    } finally {
      await copy.stop();
    }
  });

  void it("a full datastore fails the backup cleanly and the status warns", { skip: isRoot ? false : "needs root to mount a small tmpfs" }, async () => {
    const mnt = path.join(tmp.dir, "small");
    fs.mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt]);
    const small = await startServerProcess({ stateDir: path.join(tmp.dir, "small-state"), datastores: { small: path.join(mnt, "store") }, adminPassword: ADMIN });
    try {
      const senv = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: small.fingerprint };
      const big = path.join(tmp.dir, "big.img");
      fs.writeFileSync(big, randomBytes(40 * 1024 * 1024));
      const r = await gorde(["backup", small.url("small"), "vm/900", `disk.img=${big}`], senv);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /datastore is full|out of space/);
      assert.equal(r.err.trim().split("\n").length, 1, r.err);
      const snaps = json<{ finished: boolean }[]>(await gorde(["snapshots", small.url("small"), "--json"], senv));
      assert.equal(snaps.filter((s) => s.finished).length, 0);
      const st = json<{ warning: string | null }>(await gorde(["status", small.url("small"), "--json"], senv));
      assert.match(st.warning ?? "", /free/);
      // What the failed backup committed is garbage; GC frees it and a smaller backup fits.
      assert.equal((await gorde(["gc", small.url("small"), "--cutoff", "0"], senv)).code, 0);
      const ok = await gorde(["backup", small.url("small"), "vm/900", `disk.img=${img}`], senv);
      assert.equal(ok.code, 0, ok.err);
    } finally {
      await small.stop();
      execFileSync("umount", [mnt]);
    }
  });
});
