import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { RemoteStore, parseRemote } from "./remotes.ts";

const FP = "3f:1c:0a:9b:77:12:de:ad:be:ef:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:01:23:45:67:89:9a";
const dirs: string[] = [];
function stateDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-remotes-"));
  dirs.push(d);
  return d;
}
const isCode = (code: string) => (err: unknown) => err instanceof GordeError && err.code === code;

void describe("remotes", () => {
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  void it("keeps each remote's secret apart, mode 0600, and lists none", async () => {
    const dir = stateDir();
    const store = await RemoteStore.open(dir);
    assert.deepEqual(store.list(), []);
    const added = await store.add({ name: "offsite", url: "https://sync!node1@backup2.example/copy", fingerprint: FP.toUpperCase(), secret: "s3cret-token-value" });
    assert.deepEqual(added, { name: "offsite", url: "https://sync!node1@backup2.example:8007/copy", fingerprint: FP });
    await store.add({ name: "dr-site", url: "https://admin@[::1]:8207/main", fingerprint: FP.replaceAll(":", ""), secret: "another-secret" });
    assert.deepEqual(
      store.list().map((r) => r.name),
      ["dr-site", "offsite"],
    );
    assert.doesNotMatch(JSON.stringify(store.list()), /secret/);
    for (const f of ["remotes.json", "remote-secrets.json"]) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
    assert.doesNotMatch(fs.readFileSync(path.join(dir, "remotes.json"), "utf8"), /s3cret/);
    assert.deepEqual(fs.readdirSync(dir).sort(), ["remote-secrets.json", "remotes.json"], "no temp file left");

    // what a sync gets, again after a restart
    const again = await RemoteStore.open(dir);
    const r = again.get("dr-site");
    assert.deepEqual(
      r && { host: r.host, port: r.port, authId: r.authId, store: r.store, secret: r.secret },
      { host: "::1", port: 8207, authId: "admin", store: "main", secret: "another-secret" },
    );
    assert.equal(again.get("nowhere"), undefined);
    await again.remove("offsite");
    assert.equal(again.get("offsite"), undefined);
    assert.doesNotMatch(fs.readFileSync(path.join(dir, "remote-secrets.json"), "utf8"), /s3cret/, "its secret goes with it");
    await assert.rejects(again.remove("offsite"), isCode("not-found"));
    await assert.rejects(again.add({ name: "dr-site", url: "https://a@h/s", fingerprint: FP, secret: "x" }), isCode("exists"));
  });

  void it("refuses bad names, URLs, fingerprints and secrets", async () => {
    const store = await RemoteStore.open(stateDir());
    const ok = { name: "offsite", url: "https://sync@backup2.example/copy", fingerprint: FP, secret: "s" };
    for (const name of ["", "off.site", "1site", "_site", "off site", "off/site", "https://h/s", "x".repeat(33), "__proto__"]) {
      await assert.rejects(store.add({ ...ok, name }), isCode("usage"), JSON.stringify(name));
    }
    for (const url of ["http://sync@h/copy", "https://h/copy", "https://sync@h", "https://sync@h/", "https://sync:pw@h/copy", "https://sync@h/a/b", "https://bad user@h/c", "https://sync@h/c#x", `https://sync@h/${"c".repeat(2000)}`]) {
      await assert.rejects(store.add({ ...ok, url }), isCode("usage"), url);
    }
    await assert.rejects(store.add({ ...ok, fingerprint: "3f:1c" }), isCode("usage"));
    await assert.rejects(store.add({ ...ok, secret: "" }), isCode("usage"));
    assert.deepEqual(store.list(), []);
    assert.equal(parseRemote("https://sync@backup2.example:8007/copy", FP).url, "https://sync@backup2.example:8007/copy");
  });

  void it("refuses a state file it cannot trust", async () => {
    const dir = stateDir();
    const store = await RemoteStore.open(dir);
    await store.add({ name: "offsite", url: "https://sync@backup2.example/copy", fingerprint: FP, secret: "s" });
    fs.writeFileSync(path.join(dir, "remote-secrets.json"), JSON.stringify({ version: 1, secrets: {} }));
    await assert.rejects(RemoteStore.open(dir), /remote offsite in .* has no secret/);
    fs.writeFileSync(path.join(dir, "remotes.json"), JSON.stringify({ version: 1, remotes: [{ name: "offsite", url: "http://x/y", fingerprint: FP }] }));
    await assert.rejects(RemoteStore.open(dir), isCode("invalid"));
    fs.writeFileSync(path.join(dir, "remotes.json"), "{");
    await assert.rejects(RemoteStore.open(dir), isCode("invalid"));
  });
});
