// Answers read from a real HTTP service on 127.0.0.1: captured when two reads agree,
// unstable when they differ, failed on an error (timeout, oversized body, refused); a live
// answer checked against a capture and the probe's own expectations.
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { GuestConfig } from "../api/guest-config.ts";
import { sha256Hex } from "../format/manifest.ts";
import { AnswerCapture, type HttpProbe, MAX_ANSWER_BYTES, checkAnswer, compareAnswers, readAnswer } from "./capture.ts";

const probe = (p: Partial<HttpProbe> & { path: string }): HttpProbe => ({ type: "http", name: "note", method: "GET", status: 200, expect: "snapshot", timeoutSeconds: 5, ...p });

void describe("answers captured from a guest's service", () => {
  let note = "Dentist on Tuesday 14:30; call the plumber about the kitchen sink.\n";
  let counter = 0;
  let server: http.Server;
  let port = 0;
  const hanging = new Set<http.ServerResponse>();

  before(async () => {
    server = http.createServer((req, res) => {
      switch (req.url) {
        case "/cgi-bin/note":
          return res.end(note);
        case "/cgi-bin/counter":
          return res.end(`${++counter}\n`);
        case "/cgi-bin/broken":
          res.statusCode = 500;
          return res.end("sh: /data/note: I/O error\n");
        case "/slow":
          hanging.add(res); // answers never
          return;
        case "/big":
          // chunked, no length announced: the cap applies while reading
          for (let i = 0; i < 5; i++) res.write(Buffer.alloc(MAX_ANSWER_BYTES / 4, "x"));
          return res.end("tail");
        case "/big-declared":
          res.setHeader("content-length", String(MAX_ANSWER_BYTES + 1));
          return res.end(Buffer.alloc(MAX_ANSWER_BYTES + 1, "y"));
        default:
          res.statusCode = 404;
          return res.end("not found\n");
      }
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    for (const r of hanging) r.destroy();
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  });

  void it("captures equal answers with the body's digest and an excerpt", async () => {
    const p = probe({ path: "/cgi-bin/note" });
    const a = await readAnswer(port, p);
    const b = await readAnswer(port, p);
    const c = compareAnswers(a, b, p, 1764900000);
    assert.deepEqual(c, { probe: "note", path: "/cgi-bin/note", time: 1764900000, state: "captured", status: 200, digest: sha256Hex(Buffer.from(note)), excerpt: note });
    assert.deepEqual(checkAnswer(p, await readAnswer(port, p), c), { ok: true, message: `GET /cgi-bin/note gave the answer captured at backup time (status 200, sha256 ${c.digest!.slice(0, 12)}…).` });
  });

  void it("records an answer that changes between the reads as unstable, and a drill does not compare it", async () => {
    const p = probe({ name: "counter", path: "/cgi-bin/counter" });
    const c = compareAnswers(await readAnswer(port, p), await readAnswer(port, p), p, 1764900000);
    assert.equal(c.state, "unstable");
    assert.equal(c.digest, undefined);
    assert.match(c.message!, /differed: status 200, "\d+\\n"; then status 200, "\d+\\n"/);
    const live = checkAnswer(p, await readAnswer(port, p), c);
    assert.equal(live.ok, true);
    assert.match(live.message, /unstable: not compared/);
  });

  void it("fails a live answer whose body or status differs from the capture, or that misses the probe's own checks", async () => {
    const p = probe({ path: "/cgi-bin/note" });
    const captured = compareAnswers(await readAnswer(port, p), await readAnswer(port, p), p, 1764900000);
    const old = note;
    note = "Dentist moved to Thursday.\n";
    try {
      const r = checkAnswer(p, await readAnswer(port, p), captured);
      assert.equal(r.ok, false);
      assert.match(r.message, /answered "Dentist moved to Thursday\.\\n" \(27 bytes\), not the answer captured at backup time \("Dentist on Tuesday 14:30; call the plumb"…, sha256 [0-9a-f]{12}…\)\.$/);
    } finally {
      note = old;
    }
    // Same body, another status than at backup time.
    const r2 = checkAnswer(probe({ path: "/cgi-bin/note", status: 201 }), { status: 201, body: Buffer.from(note) }, captured);
    assert.deepEqual(r2, { ok: false, message: "GET /cgi-bin/note answered status 201, but status 200 at backup time." });
    const broken = probe({ name: "broken", path: "/cgi-bin/broken" });
    assert.deepEqual(checkAnswer(broken, await readAnswer(port, broken), captured), { ok: false, message: "GET /cgi-bin/broken answered status 500, expected 200." });
    const a = await readAnswer(port, p);
    assert.equal(checkAnswer(probe({ path: "/cgi-bin/note", contains: "plumber" }), a).ok, true);
    assert.match(checkAnswer(probe({ path: "/cgi-bin/note", contains: "electrician" }), a).message, /does not contain "electrician"/);
    assert.equal(checkAnswer(probe({ path: "/cgi-bin/note", matches: "^Dentist on \\w+day" }), a).ok, true);
    assert.match(checkAnswer(probe({ path: "/cgi-bin/note", matches: "^Dentist at" }), a).message, /does not match \/\^Dentist at\//);
    // An answer that fails its probe at backup time is no capture a drill could pass.
    const bad = compareAnswers(await readAnswer(port, broken), await readAnswer(port, broken), broken, 1764900000);
    assert.equal(bad.state, "failed");
    assert.equal(bad.message, "at backup time: GET /cgi-bin/broken answered status 500, expected 200.");
  });

  void it("fails a read that times out, is oversized or is refused, each with its reason", async () => {
    const t0 = Date.now();
    await assert.rejects(readAnswer(port, probe({ path: "/slow", timeoutSeconds: 1 })), { message: `probe note: GET http://127.0.0.1:${port}/slow gave no whole answer within 1 s.` });
    const took = Date.now() - t0;
    assert.ok(took >= 950 && took < 3000, `the timeout held (${took} ms)`);
    await assert.rejects(readAnswer(port, probe({ path: "/big" })), { message: `probe note: GET http://127.0.0.1:${port}/big answered more than 64 KiB.` });
    await assert.rejects(readAnswer(port, probe({ path: "/big-declared" })), { message: `probe note: GET http://127.0.0.1:${port}/big-declared answered more than 64 KiB (${MAX_ANSWER_BYTES + 1} bytes).` });
    const closed = http.createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const freed = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, "close");
    await assert.rejects(readAnswer(freed, probe({ path: "/cgi-bin/note" })), { message: `probe note: GET http://127.0.0.1:${freed}/cgi-bin/note was refused (nothing listens on the port).` });
    // The caller's abort is the caller's error, not the probe's.
    const ac = new AbortController();
    const pending = readAnswer(port, probe({ path: "/slow" }), ac.signal);
    ac.abort(new Error("the backup was cancelled"));
    await assert.rejects(pending, { message: "the backup was cancelled" });
  });

  void it("reads a guest's snapshot probes before and after, one log line each, and never throws for a probe", async () => {
    const config: GuestConfig = {
      kind: "ct",
      id: 101,
      name: "ct101",
      memoryMiB: 64,
      cpus: 1,
      rootfs: "/var/lib/gorde-node/rootfs/101",
      init: "/init",
      httpPort: port,
      healthChecks: {
        boot: { type: "init", timeoutSeconds: 30 },
        probes: [
          { type: "tcp", name: "port", timeoutSeconds: 30 },
          probe({ path: "/cgi-bin/note" }),
          probe({ name: "counter", path: "/cgi-bin/counter" }),
          probe({ name: "index", path: "/index.html", expect: undefined }),
          probe({ name: "missing", path: "/cgi-bin/missing" }),
        ],
      },
    };
    const log: string[] = [];
    const run = new AnswerCapture(config, (l) => log.push(l));
    assert.deepEqual(
      run.probes.map((p) => p.name),
      ["note", "counter", "missing"],
    );
    await run.before();
    const captures = await run.after();
    assert.deepEqual(
      captures?.map((c) => [c.probe, c.state]),
      [
        ["note", "captured"],
        ["counter", "unstable"],
        ["missing", "failed"],
      ],
    );
    assert.equal(log.length, 3);
    assert.match(log[0]!, new RegExp(`^answer of probe note \\(GET /cgi-bin/note\\): captured, status 200, sha256 ${sha256Hex(Buffer.from(note))} \\(read in \\d+ ms and \\d+ ms\\)$`));
    assert.match(log[2]!, /^answer of probe missing \(GET \/cgi-bin\/missing\): failed: at backup time: GET \/cgi-bin\/missing answered status 404, expected 200 \(read in \d+ ms and \d+ ms\)$/);
    // No snapshot probes: nothing read, no captures member.
    const none = new AnswerCapture({ ...config, healthChecks: undefined }, (l) => log.push(l));
    await none.before();
    assert.equal(await none.after(), undefined);
  });

  void it("records a failed second read, and waits for a service that starts again", async () => {
    const config: GuestConfig = { kind: "ct", id: 102, name: "ct102", memoryMiB: 64, cpus: 1, rootfs: "/var/lib/gorde-node/rootfs/102", init: "/init", httpPort: port, healthChecks: { boot: { type: "init", timeoutSeconds: 30 }, probes: [probe({ path: "/cgi-bin/note" })] } };
    const gone = new AnswerCapture({ ...config, httpPort: 1 }, () => undefined);
    await gone.before();
    const [c] = (await gone.after())!;
    assert.equal(c!.state, "failed");
    assert.match(c!.message!, /127\.0\.0\.1:1\/cgi-bin\/note was refused/);

    // Stop mode: the first read before the stop, the second once the service is back.
    const other = http.createServer((_req, res) => res.end(note));
    other.listen(0, "127.0.0.1");
    await once(other, "listening");
    const p2 = (other.address() as AddressInfo).port;
    const run = new AnswerCapture({ ...config, httpPort: p2 }, () => undefined);
    await run.before();
    other.close();
    await once(other, "close");
    const later = setTimeout(() => other.listen(p2, "127.0.0.1"), 700);
    try {
      const [again] = (await run.after({ waitForService: true }))!;
      assert.equal(again!.state, "captured");
    } finally {
      clearTimeout(later);
      other.close();
    }
  });
});
