// Errors cross from the worker threads as codes: gorde's own code, and the failed system
// call's errno, so the main thread never reads a message to decide.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, it } from "node:test";
import { GordeError, systemCode } from "../errors.ts";
import { encodeBlob } from "../format/blob.ts";
import { ChunkPool } from "./chunk-pool.ts";

const pool = new ChunkPool(2);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-pool-"));
after(async () => {
  await pool.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

void it("reads files in a worker; a missing one comes back as an error whose system code is ENOENT", async () => {
  const hosts = path.join(dir, "hosts");
  fs.writeFileSync(hosts, "127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
  const [found, missing] = await pool.readFiles([Buffer.from(hosts), Buffer.from(path.join(dir, "resolv.conf"))]);
  assert.ok(Buffer.isBuffer(found));
  assert.equal(found.toString(), fs.readFileSync(hosts, "utf8"));
  assert.ok(missing instanceof GordeError, String(missing));
  assert.equal(missing.code, "io");
  assert.equal(systemCode(missing), "ENOENT");
  assert.match(missing.message, /resolv\.conf/);
});

void it("a chunk that does not match its digest is corrupt, with no system code", async () => {
  const data = Buffer.from("#!/bin/sh\nexec /usr/sbin/nginx -g 'daemon off;'\n".repeat(40));
  const other = createHash("sha256").update("another chunk").digest("hex");
  await assert.rejects(pool.decode(encodeBlob(data), other), (e: unknown) => {
    assert.ok(e instanceof GordeError, String(e));
    assert.equal(e.code, "corrupt");
    assert.equal(systemCode(e), undefined);
    return true;
  });
  const hex = createHash("sha256").update(data).digest("hex");
  assert.deepEqual(await pool.decode(encodeBlob(data), hex), data);
});

void it("an upload batch reports each refused record with its code", async () => {
  const data = Buffer.from("[Unit]\nDescription=gorde backup of vm/100\n");
  const blob = encodeBlob(data);
  const body = new Uint8Array(blob).buffer;
  const wrong = createHash("sha256").update("not this").digest("hex");
  await pool.init(null, 1, Buffer.alloc(0));
  const r = await pool.storeBatch(body, [{ hex: wrong, size: data.length, offset: 0, length: blob.length }], false);
  const [res] = r.results;
  assert.ok(res instanceof GordeError, JSON.stringify(res));
  assert.equal(res.code, "invalid");
  assert.match(res.message, /does not match its digest/);
});
