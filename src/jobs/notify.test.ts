import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { simpleParser } from "mailparser";
import { smtpServer } from "../../test/mail-fixture.ts";
import { GordeError } from "../errors.ts";
import { createCertificateAuthority, issueCertificate } from "../host/tls.ts";
import { checkTarget, matchTargets, notify, renderMail, severityFor, type JobEvent, type Matcher, type NotifyTarget, type SmtpTarget, type WebhookTarget } from "./notify.ts";

// The host's CA store, as OpenSSL finds it: a company CA installed there is trusted by a
// mail relay's STARTTLS. Set before the first notify reads the store.
const ca = await createCertificateAuthority("mail");
const caDir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-notify-ca-"));
fs.writeFileSync(path.join(caDir, "ca.pem"), ca.cert);
process.env.SSL_CERT_FILE = path.join(caDir, "ca.pem");
process.env.SSL_CERT_DIR = caDir;
after(() => fs.rmSync(caDir, { recursive: true, force: true }));

const T = Date.UTC(2026, 10, 25, 2, 0, 0);
const GiB = 1024 ** 3;

function event(over: Partial<JobEvent> = {}): JobEvent {
  return {
    job: "nightly",
    kind: "backup",
    target: "vm/100",
    node: "node1",
    result: "failed",
    severity: "error",
    start: T,
    end: T + 185_000,
    message: "the datastore went away.",
    bytes: 10 * GiB,
    newBytes: GiB,
    reusedBytes: 9 * GiB,
    log: Array.from({ length: 60 }, (_, i) => `line ${i + 1}`).join("\n") + "\n",
    ...over,
  };
}


function smtp(port: number, over: Partial<SmtpTarget> = {}): SmtpTarget {
  return { type: "smtp", name: "mail", host: "127.0.0.1", port, from: "Gorde <gorde@node1.example>", to: ["ops@example.com", "root@node1"], timeoutMs: 3000, ...over };
}

void describe("notify by mail", () => {
  let plain: Awaited<ReturnType<typeof smtpServer>>;
  let authed: Awaited<ReturnType<typeof smtpServer>>;
  before(async () => {
    plain = await smtpServer();
    authed = await smtpServer({ user: "gorde", pass: "s3cret" });
  });
  after(async () => {
    await plain.close();
    await authed.close();
  });

  void it("delivers a plain-text mail with the rendered subject and body", async () => {
    const results = await notify(event(), [smtp(plain.port)], []);
    assert.deepEqual(results, [{ target: "mail", ok: true }]);
    assert.equal(plain.mails.length, 1);
    const got = plain.mails[0]!;
    assert.equal(got.mailFrom, "gorde@node1.example");
    assert.deepEqual(got.rcptTo, ["ops@example.com", "root@node1"]);
    const mail = await simpleParser(got.raw);
    assert.deepEqual(mail.from?.value, [{ address: "gorde@node1.example", name: "Gorde" }]);
    assert.equal(Array.isArray(mail.to) ? undefined : mail.to?.text, "ops@example.com, root@node1");
    assert.equal(mail.subject, "gorde: backup job nightly on node1 failed: vm/100");
    assert.equal(mail.headers.get("auto-submitted"), "auto-generated");
    assert.equal(mail.html, false, "plain text only");
    assert.equal(mail.text, renderMail(event()).text);
    assert.match(mail.text ?? "", /^Started: {2}2026-11-25T02:00:00\.000Z$/m);
  });

  void it("logs in when the server requires it, and reports a wrong or missing login", async () => {
    const ok = smtp(authed.port, { name: "ok", user: "gorde", password: "s3cret" });
    const wrong = smtp(authed.port, { name: "wrong", user: "gorde", password: "nope" });
    const none = smtp(authed.port, { name: "none" });
    const results = await notify(event(), [ok, wrong, none], []);
    assert.deepEqual(results[0], { target: "ok", ok: true });
    assert.equal(results[1]!.ok, false);
    assert.match(results[1]!.error!, /Invalid login/);
    assert.doesNotMatch(results[1]!.error!, /nope/, "the password stays out of the report");
    assert.equal(results[2]!.ok, false);
    assert.match(results[2]!.error!, /auth/i);
    assert.equal(authed.mails.length, 1);
    assert.equal(authed.mails[0]!.user, "gorde");
  });
});

void describe("notify by mail over STARTTLS", () => {
  let relay: Awaited<ReturnType<typeof smtpServer>>;
  let stranger: Awaited<ReturnType<typeof smtpServer>>;
  let plain: Awaited<ReturnType<typeof smtpServer>>;
  before(async () => {
    // A relay whose certificate the CA installed in the system store signed, and one whose CA
    // is installed nowhere.
    relay = await smtpServer({ user: "gorde", pass: "s3cret" }, await issueCertificate(ca, "relay", []));
    stranger = await smtpServer(undefined, await issueCertificate(await createCertificateAuthority("other"), "relay", []));
    plain = await smtpServer();
  });
  after(async () => {
    for (const s of [relay, stranger, plain]) await s.close();
  });

  void it("upgrades to TLS before it logs in, required or offered, and refuses a certificate it cannot trust", async () => {
    const login = { user: "gorde", password: "s3cret" };
    const results = await notify(
      event(),
      [
        smtp(relay.port, { name: "required", host: "localhost", starttls: true, ...login }),
        smtp(relay.port, { name: "offered", host: "localhost", ...login }),
        smtp(stranger.port, { name: "stranger", host: "localhost", starttls: true }),
        smtp(plain.port, { name: "not-offered", starttls: true }),
      ],
      [],
    );
    assert.deepEqual(results.slice(0, 2), [
      { target: "required", ok: true },
      { target: "offered", ok: true },
    ]);
    assert.deepEqual(
      relay.mails.map((m) => [m.secure, m.user]),
      [
        [true, "gorde"],
        [true, "gorde"],
      ],
    );
    assert.equal(results[2]!.ok, false);
    assert.equal(results[2]!.error, "unable to verify the first certificate (is its CA installed in /etc/ssl/certs?)");
    assert.equal(stranger.mails.length, 0);
    assert.equal(results[3]!.ok, false);
    assert.match(results[3]!.error!, /STARTTLS/);
    assert.equal(plain.mails.length, 0, "with STARTTLS required, nothing goes out in plain text");
  });
});

interface Hook {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

void describe("notify by webhook", () => {
  const hooks: Hook[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      hooks.push({ path: req.url ?? "", headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      if (req.url === "/ok") res.writeHead(204).end();
      else if (req.url === "/fail") res.writeHead(500).end("boom\nmore detail");
      // "/silent": never answers
    });
  });
  let base = "";
  const hook = (name: string, path: string, over: Partial<WebhookTarget> = {}): WebhookTarget => ({ type: "webhook", name, url: `${base}${path}`, timeoutMs: 3000, ...over });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  void it("posts the event as JSON with version 1 and the configured headers", async () => {
    hooks.length = 0;
    const e = event({ result: "ok", severity: "info" });
    const results = await notify(e, [hook("hook", "/ok", { headers: { Authorization: "Bearer t0ken", "Content-Type": "application/json; charset=utf-8" } })], []);
    assert.deepEqual(results, [{ target: "hook", ok: true }]);
    assert.equal(hooks.length, 1);
    assert.deepEqual(hooks[0]!.body, { version: 1, ...e });
    assert.equal(hooks[0]!.headers.authorization, "Bearer t0ken");
    assert.equal(hooks[0]!.headers["content-type"], "application/json; charset=utf-8", "a configured header replaces the default");
  });

  void it("reports a 500 and a receiver that never answers as failures, and still delivers to the rest", async () => {
    hooks.length = 0;
    const targets = [hook("fail", "/fail"), hook("silent", "/silent", { timeoutMs: 300 }), hook("ok", "/ok")];
    const results = await notify(event(), targets, []);
    assert.deepEqual(results, [
      { target: "fail", ok: false, error: "the webhook answered 500 Internal Server Error: boom" },
      { target: "silent", ok: false, error: "no answer within 300 ms" },
      { target: "ok", ok: true },
    ]);
    assert.deepEqual(hooks.map((h) => h.path).sort(), ["/fail", "/ok", "/silent"]);
  });

  void it("reports a cancelled send, an unknown target and a malformed one without throwing", async () => {
    const cancelled = await notify(event(), [hook("hook", "/ok")], [], { signal: AbortSignal.abort() });
    assert.deepEqual(cancelled, [{ target: "hook", ok: false, error: "cancelled" }]);
    const results = await notify(event(), [hook("ftp", "", { url: "ftp://127.0.0.1/x" })], [{ target: "ftp" }, { target: "nobody" }]);
    assert.deepEqual(results, [
      { target: "ftp", ok: false, error: 'notification target "ftp": the webhook URL must use http or https, not ftp.' },
      { target: "nobody", ok: false, error: 'no notification target is named "nobody".' },
    ]);
  });

  void it("names the cause when nothing listens", async () => {
    // a port that was free a moment ago: nothing listens there now
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const [r] = await notify(event(), [{ type: "webhook", name: "gone", url: `http://127.0.0.1:${port}/` }], []);
    assert.equal(r!.ok, false);
    assert.match(r!.error!, /^fetch failed: connect ECONNREFUSED/);
  });
});

void describe("matchTargets", () => {
  const all = ["a", "b", "c"];

  void it("sends to every target when there are no matchers", () => {
    assert.deepEqual(matchTargets(event({ result: "ok", severity: "info" }), [], all), all);
  });

  void it("filters by minimum severity", () => {
    const m: Matcher[] = [{ target: "a" }, { target: "b", minSeverity: "warning" }, { target: "c", minSeverity: "error" }];
    assert.deepEqual(matchTargets(event({ result: "ok", severity: "info" }), m, all), ["a"]);
    assert.deepEqual(matchTargets(event({ result: "skipped", severity: "warning" }), m, all), ["a", "b"]);
    assert.deepEqual(matchTargets(event({ result: "failed", severity: "error" }), m, all), ["a", "b", "c"]);
  });

  void it("filters by job name and by result; an empty filter list does not filter", () => {
    const m: Matcher[] = [
      { target: "a", jobs: ["nightly", "weekly"] },
      { target: "b", results: ["failed", "skipped"] },
      { target: "c", jobs: [], results: [] },
    ];
    assert.deepEqual(matchTargets(event({ job: "weekly", result: "ok", severity: "info" }), m, all), ["a", "c"]);
    assert.deepEqual(matchTargets(event({ job: "gc", result: "skipped", severity: "warning" }), m, all), ["b", "c"]);
  });

  void it("names a target once, in matcher order, when several matchers pick it", () => {
    const m: Matcher[] = [{ target: "b" }, { target: "a", results: ["failed"] }, { target: "b", minSeverity: "error" }];
    assert.deepEqual(matchTargets(event(), m, all), ["b", "a"]);
  });

  void it("maps results to severities", () => {
    assert.deepEqual((["ok", "skipped", "failed"] as const).map(severityFor), ["info", "warning", "error"]);
  });
});

void describe("renderMail", () => {
  void it("renders the job, times, bytes, message and the end of the log", () => {
    const { subject, text } = renderMail(event());
    assert.equal(subject, "gorde: backup job nightly on node1 failed: vm/100");
    const head = text.split("\n").slice(0, 10).join("\n");
    assert.equal(
      head,
      [
        "Job:      nightly",
        "Kind:     backup",
        "Target:   vm/100",
        "Node:     node1",
        "Result:   failed (error)",
        "Started:  2026-11-25T02:00:00.000Z",
        "Finished: 2026-11-25T02:03:05.000Z (took 3m 5s)",
        "Data:     total 10.0 GiB, new 1.00 GiB, reused 9.00 GiB",
        "Message:  the datastore went away.",
        "",
      ].join("\n"),
    );
    assert.match(text, /^Log \(last 50 of 60 lines\):\nline 11\n/m);
    assert.ok(text.endsWith("line 60\n"));
    assert.doesNotMatch(text, /^line 10$/m);
  });

  void it("leaves out what the event lacks and keeps the subject on one line", () => {
    const { subject, text } = renderMail({ job: "gc\r\nBcc: x@y", kind: "gc", result: "skipped", severity: "warning", start: T, end: Number.NaN, message: "window closed." });
    assert.equal(subject, "gorde: gc job gc Bcc: x@y was skipped");
    assert.doesNotMatch(text, /Target:|Node:|Data:|Log/);
    assert.match(text, /^Finished: unknown$/m);
  });
});

void describe("checkTarget", () => {
  const mail: SmtpTarget = { type: "smtp", name: "m", host: "mail.example", port: 587, starttls: true, user: "u", password: "p", from: "gorde@example.com", to: ["ops@example.com"] };
  const web: WebhookTarget = { type: "webhook", name: "w", url: "https://hooks.example/x", headers: { Authorization: "Bearer x" } };

  void it("accepts well-formed targets", () => {
    checkTarget(mail);
    checkTarget({ ...mail, starttls: undefined, secure: true, port: 465, user: undefined, password: undefined, from: "Gorde <gorde@node1>" });
    checkTarget(web);
    checkTarget({ ...web, url: "http://127.0.0.1:8080/hook" });
  });

  void it("refuses malformed ones with a usage error naming the problem", () => {
    const cases: [NotifyTarget, RegExp][] = [
      [{ ...web, url: "ftp://hooks.example/x" }, /must use http or https, not ftp\.$/],
      [{ ...web, url: "file:///etc/passwd" }, /must use http or https, not file\.$/],
      [{ ...web, url: "hooks.example/x" }, /is not a valid URL\.$/],
      [{ ...web, url: "https://user:pw@hooks.example/x" }, /credentials in a header/],
      [{ ...web, headers: { "bad header": "x" } }, /invalid name or value/],
      [{ ...web, timeoutMs: 0 }, /timeoutMs must be a positive/],
      [{ ...web, name: " " }, /has no name/],
      [{ ...mail, to: [] }, /recipient list \(to\) is empty/],
      [{ ...mail, to: ["ops@example.com", "not an address"] }, /recipient "not an address" is not one e-mail address/],
      [{ ...mail, to: ["a@example.com, b@example.com"] }, /is not one e-mail address/],
      [{ ...mail, from: "" }, /sender \(from\) is missing/],
      [{ ...mail, from: "gorde@" }, /sender "gorde@" is not one e-mail address/],
      [{ ...mail, port: 0 }, /port 0 is not between 1 and 65535/],
      [{ ...mail, port: 70000 }, /port 70000 is not between/],
      [{ ...mail, host: "" }, /host is missing/],
      [{ ...mail, secure: true }, /exclude each other/],
      [{ ...mail, password: undefined }, /user and password go together/],
      [{ ...mail, type: "pager" } as unknown as NotifyTarget, /unknown target type "pager"/],
    ];
    for (const [t, why] of cases) {
      assert.throws(
        () => checkTarget(t),
        (err: unknown) => err instanceof GordeError && err.code === "usage" && why.test(err.message) && err.message.startsWith(`notification target "`) === (t.name.trim() !== ""),
        why.source,
      );
    }
  });
});
