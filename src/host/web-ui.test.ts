import assert from "node:assert/strict";
import fs from "node:fs";
import http2 from "node:http2";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { listenHttps, type HttpsListener } from "./api-host.ts";
import { ensureCertificate } from "./tls.ts";
import { withWebUi } from "./web-ui.ts";

void describe("the web interface's files", () => {
  const tmp = tempDir();
  const dist = path.join(tmp.dir, "dist");
  let listener: HttpsListener;
  let bare: HttpsListener;
  const apiCalls: string[] = [];

  before(async () => {
    fs.mkdirSync(path.join(dist, "assets"), { recursive: true });
    fs.writeFileSync(path.join(dist, "index.html"), "<!doctype html><title>gorde</title>");
    fs.writeFileSync(path.join(dist, "assets", "app-1a2b.js"), "console.log(1)");
    fs.writeFileSync(path.join(tmp.dir, "secret.txt"), "not for the web");
    const cert = await ensureCertificate(path.join(tmp.dir, "state"));
    const api = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> => {
      apiCalls.push(String(headers[":path"]));
      stream.respond({ ":status": 200 });
      stream.end("api");
      return Promise.resolve();
    };
    listener = await listenHttps({ host: "127.0.0.1", port: 0, cert, dispatch: withWebUi(api, { dist, apiPaths: ["/metrics"] }) });
    bare = await listenHttps({ host: "127.0.0.1", port: 0, cert, dispatch: withWebUi(api, { dist: path.join(tmp.dir, "none") }) });
  });
  after(async () => {
    for (const l of [listener, bare]) {
      l.destroyConnections();
      await l.closed();
    }
    tmp.cleanup();
  });

  const get = (port: number, p: string, method = "GET"): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> =>
    new Promise((resolve, reject) => {
      const c = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
      c.on("error", reject);
      const req = c.request({ ":path": p, ":method": method });
      let body = "";
      let headers: http2.IncomingHttpHeaders = {};
      req.on("response", (h) => (headers = h));
      req.setEncoding("utf8");
      req.on("data", (d: string) => (body += d));
      req.on("end", () => {
        c.close();
        resolve({ status: Number(headers[":status"]), headers, body });
      });
      req.end();
    });

  void it("serves the build's files with a strict policy, index.html for the page's own routes, and nothing else", async () => {
    const index = await get(listener.port, "/");
    assert.equal(index.status, 200);
    assert.match(index.body, /<title>gorde<\/title>/);
    assert.match(String(index.headers["content-security-policy"]), /default-src 'self'.*frame-ancestors 'none'/);
    assert.equal(index.headers["x-frame-options"], "DENY");
    const asset = await get(listener.port, "/assets/app-1a2b.js");
    assert.equal(asset.body, "console.log(1)");
    assert.match(String(asset.headers["content-type"]), /^text\/javascript/);
    assert.match(String(asset.headers["cache-control"]), /immutable/);
    for (const p of ["/guest/100", "/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt", "/index.html/../../secret.txt"]) {
      const r = await get(listener.port, p);
      assert.equal(r.status, 200, p);
      assert.doesNotMatch(r.body, /not for the web/, p);
    }
    assert.equal((await get(listener.port, "/", "POST")).status, 405);
  });

  void it("hands /api/ and the API's other paths to the API; says so when the interface is not built", async () => {
    assert.equal((await get(listener.port, "/api/guests")).body, "api");
    assert.equal((await get(listener.port, "/metrics")).body, "api");
    assert.deepEqual(apiCalls, ["/api/guests", "/metrics"]);
    const none = await get(bare.port, "/");
    assert.equal(none.status, 503);
    assert.match(none.body, /not built on this host: run npm run build/);
  });
});
