import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { loadNodeConfig, serverSecret } from "./node-config.ts";

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
