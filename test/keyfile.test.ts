// --keyfile when reading, on a datastore directory and through `gorde server`: a key given for
// a plain snapshot is ignored and said once (it used to garble every chunk into a false
// "does not match its digest"); an encrypted snapshot still needs its key.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { describeTree, tempDir } from "./helpers.ts";
import { type ServerProcess, gorde, startServerProcess } from "./server-fixture.ts";
import { userBlocks, writeUserImage, writeUserTree } from "./user-data.ts";

const tmp = tempDir("gorde-keyfile-");
const ADMIN = "admin-pass-1";
const PASSPHRASE = { GORDE_KEY_PASSPHRASE: "correct horse battery" };
const img = path.join(tmp.dir, "disk0.raw");
const src = path.join(tmp.dir, "rootfs");
const key = path.join(tmp.dir, "key.json");
const IGNORED = /is not encrypted; --keyfile ignored/g;

let srv: ServerProcess | undefined;

before(async () => {
  const blocks = userBlocks();
  writeUserImage(img, blocks);
  writeUserTree(src, blocks);
  const made = await gorde(["key", "create", key], PASSPHRASE);
  assert.equal(made.code, 0, made.err);
  srv = await startServerProcess({ stateDir: path.join(tmp.dir, "state"), datastores: { main: path.join(tmp.dir, "served") }, adminPassword: ADMIN });
});

after(async () => {
  await srv?.stop();
  tmp.cleanup();
});

for (const kind of ["local", "remote"] as const) {
  void describe(`--keyfile on a ${kind} repository`, () => {
    let repo = "";
    let env: Record<string, string> = {};
    const out = path.join(tmp.dir, kind);

    before(async () => {
      if (kind === "local") {
        repo = path.join(tmp.dir, "repo");
        assert.equal((await gorde(["init", repo])).code, 0);
      } else {
        repo = srv!.url("main");
        env = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: srv!.fingerprint };
      }
      env = { ...env, ...PASSPHRASE };
      fs.mkdirSync(out);
      const plain = await gorde(["backup", repo, "vm/100", `disk0.img=${img}`, `root.tree=${src}`], env);
      assert.equal(plain.code, 0, plain.err);
      const encrypted = await gorde(["backup", repo, "vm/200", `root.tree=${src}`, "--keyfile", key], env);
      assert.equal(encrypted.code, 0, encrypted.err);
    });

    void it("restores a plain block image with a key given, saying once that the key is ignored", async () => {
      const r = await gorde(["restore", repo, "vm/100/latest", "disk0.img", path.join(out, "disk0.raw"), "--keyfile", key], env);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.err.match(IGNORED)?.length, 1, r.err);
      assert.match(r.err, /snapshot vm\/100\/\S+Z is not encrypted/);
      assert.ok(fs.readFileSync(path.join(out, "disk0.raw")).equals(fs.readFileSync(img)));
    });

    void it("restores and lists a plain file archive with a key given; --json stays one document", async () => {
      const r = await gorde(["restore", repo, "vm/100/latest", "root.tree", path.join(out, "rootfs"), "--keyfile", key, "--json"], env);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.err.match(IGNORED)?.length, 1, r.err);
      assert.equal((JSON.parse(r.out) as { archive: string }).archive, "root.tree");
      assert.deepEqual(describeTree(path.join(out, "rootfs")), describeTree(src));
      const ls = await gorde(["ls", repo, "vm/100/latest", "root.tree", "etc/conf.d", "--keyfile", key, "--json"], env);
      assert.equal(ls.code, 0, ls.err);
      assert.equal(ls.err.match(IGNORED)?.length, 1, ls.err);
      assert.equal((JSON.parse(ls.out) as unknown[]).length, 300);
    });

    void it("still refuses an encrypted snapshot without its key, before writing anything", async () => {
      const target = path.join(out, "nokey");
      const r = await gorde(["restore", repo, "vm/200/latest", "root.tree", target], env);
      assert.equal(r.code, 2);
      assert.match(r.err, /^gorde restore: snapshot vm\/200\/\S+Z is encrypted; give its key with --keyfile\.\n$/);
      assert.ok(!fs.existsSync(target));
      const ok = await gorde(["restore", repo, "vm/200/latest", "root.tree", path.join(out, "withkey"), "--keyfile", key], env);
      assert.equal(ok.code, 0, ok.err);
      assert.equal(ok.err.match(IGNORED), null);
      assert.deepEqual(describeTree(path.join(out, "withkey")), describeTree(src));
    });
  });
}
