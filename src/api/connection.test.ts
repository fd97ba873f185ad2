// The client connection against a real HTTP/2 TLS server: pinning, retries of transient
// failures (and none for requests that must not repeat), the bandwidth limit.
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { ensureCertificate } from "../host/tls.ts";
import { tempDir } from "../../test/helpers.ts";
import { ServerConnection, normalizeFingerprint, parseServerUrl } from "./connection.ts";

void describe("ServerConnection", () => {
  const tmp = tempDir("gorde-conn-");
  let server: http2.Http2SecureServer;
  let port = 0;
  let fingerprint = "";
  const hits = new Map<string, number>();
  const bodies: number[] = [];

  before(async () => {
    const cert = await ensureCertificate(tmp.dir);
    fingerprint = cert.fingerprint;
    server = http2.createSecureServer({ key: cert.key, cert: cert.cert });
    server.on("stream", (stream, headers) => {
      const p = String(headers[":path"]);
      stream.on("error", () => undefined);
      const n = (hits.get(p) ?? 0) + 1;
      hits.set(p, n);
      let size = 0;
      stream.on("data", (b: Buffer) => (size += b.length));
      stream.on("end", () => {
        bodies.push(size);
        if (p === "/busy" && n <= 2) {
          stream.respond({ ":status": 503 });
          return stream.end('{"error":"busy"}');
        }
        if (p.startsWith("/reset") && n === 1) return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        stream.respond({ ":status": 200, "content-type": "application/json" });
        stream.end(JSON.stringify({ path: p, attempt: n, size }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    tmp.cleanup();
  });

  const connect = (extra: { rate?: number; fingerprint?: string } = {}) =>
    ServerConnection.connect({ host: "127.0.0.1", port, authId: "u", secret: "s", fingerprint: extra.fingerprint ?? fingerprint, rate: extra.rate });

  void it("refuses a certificate that is not the pinned one", async () => {
    await assert.rejects(connect({ fingerprint: "ab".repeat(32) }), /presents certificate fingerprint .* not the pinned/);
  });

  void it("retries 503 and reset streams, and sends a once-only request once", async () => {
    const c = await connect();
    try {
      assert.deepEqual(await c.json("GET", "/busy"), { path: "/busy", attempt: 3, size: 0 });
      const r = await c.json<{ attempt: number }>("PUT", "/reset-a", { binary: Buffer.alloc(1000) });
      assert.equal(r.attempt, 2);
      await assert.rejects(c.request("POST", "/reset-b", { json: {}, once: true }), /failed/);
      assert.equal(hits.get("/reset-b"), 1);
    } finally {
      c.close();
    }
  });

  void it("limits bandwidth with --rate", async () => {
    const c = await connect({ rate: 256 * 1024 });
    try {
      const started = Date.now();
      for (let i = 0; i < 4; i++) await c.json("PUT", `/rate-${i}`, { binary: Buffer.alloc(128 * 1024) });
      // 512 KiB at 256 KiB/s with a 64 KiB burst: at least ~1.7 s; asserted loosely.
      assert.ok(Date.now() - started >= 1200, `took ${Date.now() - started} ms`);
    } finally {
      c.close();
    }
  });

  void it("gives up on a server that accepts but never answers, and on a connection whose pings go unanswered", { timeout: 30_000 }, async () => {
    const sockets: net.Socket[] = [];
    let frozen = false;
    // A relay to the real server that can go silent: a server cut off by a firewall, as its client sees it.
    const relay = net.createServer((client) => {
      sockets.push(client);
      if (frozen) return; // accepted, never answered
      const up = net.connect(port, "127.0.0.1");
      sockets.push(up);
      for (const s of [client, up]) s.on("error", () => undefined);
      client.on("data", (b: Buffer) => void (frozen || up.write(b)));
      up.on("data", (b: Buffer) => void (frozen || client.write(b)));
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const relayPort = (relay.address() as { port: number }).port;
    try {
      const c = await ServerConnection.connect({ host: "127.0.0.1", port: relayPort, authId: "u", secret: "s", fingerprint, attempts: 1, keepAlive: { everyMs: 200, timeoutMs: 300 } });
      try {
        assert.equal((await c.json<{ path: string }>("GET", "/through-the-relay")).path, "/through-the-relay");
        frozen = true;
        await assert.rejects(c.request("GET", "/frozen"), /did not answer a ping within 0.3 s/);
      } finally {
        c.close();
      }
      const started = Date.now();
      await assert.rejects(ServerConnection.connect({ host: "127.0.0.1", port: relayPort, authId: "u", secret: "s", fingerprint }), /cannot connect to 127\.0\.0\.1:\d+: no answer within 10 s/);
      assert.ok(Date.now() - started >= 9000, "it waited for its deadline");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });

  void it("parses repository URLs and fingerprints", () => {
    assert.deepEqual(parseServerUrl("https://node1!backup@backup.example:8008/main"), { host: "backup.example", port: 8008, authId: "node1!backup", store: "main" });
    assert.deepEqual(parseServerUrl("https://[::1]/s"), { host: "::1", port: 8007, authId: undefined, store: "s" });
    assert.throws(() => parseServerUrl("http://h/s"), /https/);
    assert.throws(() => parseServerUrl("https://u:pw@h/s"), /GORDE_PASSWORD/);
    assert.throws(() => parseServerUrl("https://h/a/b"), /datastore/);
    assert.equal(normalizeFingerprint("AB".repeat(32)), Array(32).fill("ab").join(":"));
    assert.throws(() => normalizeFingerprint("ab:cd"), /not a SHA-256 fingerprint/);
  });
});
