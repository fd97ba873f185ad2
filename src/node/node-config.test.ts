import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { checkedScript, loadNodeConfig, serverSecret } from "./node-config.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-node-config-"));
const write = (name: string, text: string): string => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const good = { name: "node1", dataDir: "/var/lib/gorde-node", server: { url: "https://cluster@127.0.0.1:8007/store", fingerprint: "aa:bb" } };

void describe("node config", () => {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  void it("reads a good config", () => {
    const c = loadNodeConfig(write("good.json", JSON.stringify(good)));
    assert.equal(c.name, "node1");
    assert.equal(c.listen, undefined);
  });

  void it("refuses malformed files with one sentence naming the problem", () => {
    assert.throws(() => loadNodeConfig(path.join(dir, "missing.json")), /node config .*missing.json cannot be read as JSON: ENOENT/);
    assert.throws(() => loadNodeConfig(write("bad.json", "{ name: node1")), /cannot be read as JSON/);
    assert.throws(() => loadNodeConfig(write("key.json", JSON.stringify({ ...good, nmae: "x" }))), /has an unknown key "nmae"/);
    assert.throws(() => loadNodeConfig(write("nested.json", JSON.stringify({ ...good, server: { ...good.server, token: "x" } }))), /unknown key "server.token"/);
    assert.throws(() => loadNodeConfig(write("rel.json", JSON.stringify({ ...good, dataDir: "data" }))), /dataDir is invalid: an absolute path/);
    assert.throws(() => loadNodeConfig(write("http.json", JSON.stringify({ ...good, server: { ...good.server, url: "http://x/store" } }))), /server.url is invalid/);
    assert.throws(() => loadNodeConfig(write("noserver.json", JSON.stringify({ name: "n", dataDir: "/x" }))), /server is invalid/);
  });

  void it("takes the server secret from its file, or says where to put it", () => {
    const secretFile = write("secret", "s3cret\n");
    assert.equal(serverSecret({ ...good, server: { ...good.server, secretFile } }), "s3cret");
    assert.throws(() => serverSecret({ ...good, server: { ...good.server, secretFile: path.join(dir, "nope") } }), /cannot read the backup server secret/);
    const saved = process.env.GORDE_SERVER_SECRET;
    delete process.env.GORDE_SERVER_SECRET;
    try {
      assert.throws(() => serverSecret(good), /set server.secretFile in its config or GORDE_SERVER_SECRET/);
    } finally {
      if (saved !== undefined) process.env.GORDE_SERVER_SECRET = saved;
    }
  });
});

void describe("health check scripts", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-scripts-"));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const script = (name: string, mode: number, inDir = root): string => {
    const f = path.join(inDir, name);
    fs.writeFileSync(f, "#!/bin/sh\nexit 0\n");
    fs.chmodSync(f, mode);
    return f;
  };
  let n = 0;
  const configFile = (c: object): string => {
    const f = path.join(root, `config-${++n}.json`);
    fs.writeFileSync(f, JSON.stringify({ ...good, ...c }));
    return f;
  };
  const config = (scripts: Record<string, string>) => loadNodeConfig(configFile({ scripts }));

  void it("gives a root-owned script writable by no one else, and refuses any other with one sentence", { skip: process.getuid?.() !== 0 && "needs root (file ownership)" }, () => {
    const open = fs.mkdtempSync(path.join(root, "open-"));
    fs.chmodSync(open, 0o777);
    const foreign = script("foreign", 0o755);
    fs.chownSync(foreign, 65534, 65534);
    const c = config({ good: script("good", 0o755), writable: script("writable", 0o757), plain: script("plain", 0o644), foreign, opendir: script("x", 0o755, open), dir: root });
    assert.equal(checkedScript(c, "good"), path.join(root, "good"));
    assert.throws(() => checkedScript(c, "nope"), /script "nope" is not defined in the node's configuration/);
    assert.throws(() => checkedScript(c, "writable"), /is writable by others than its owner/);
    assert.throws(() => checkedScript(c, "plain"), /is not executable/);
    assert.throws(() => checkedScript(c, "foreign"), /is not owned by root/);
    assert.throws(() => checkedScript(c, "opendir"), /which others than root may change/);
    assert.throws(() => checkedScript(c, "dir"), /is not a regular file/);
  });

  void it("refuses a script table with a bad name or a relative path, and a bad drill id range", () => {
    assert.throws(() => config({ "../x": "/bin/true" }), /scripts.*invalid|invalid name/);
    assert.throws(() => config({ ok: "bin/true" }), /an absolute path/);
    assert.throws(() => loadNodeConfig(configFile({ drill: { ids: { first: 9999, last: 9900 } } })), /a range first\.\.last/);
  });
});
