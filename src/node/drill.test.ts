// The HTTP probe's judgement of an answer (the whole drill is tested in test/drill.test.ts).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import type { Probe } from "../api/guest-config.ts";
import type { Capture } from "../format/manifest.ts";
import { checkAnswer } from "./drill.ts";

type HttpProbe = Extract<Probe, { type: "http" }>;
const probe = (extra: Partial<HttpProbe> = {}): HttpProbe => ({ type: "http", name: "note", method: "GET", path: "/cgi-bin/note", status: 200, timeoutSeconds: 30, ...extra });
const note = Buffer.from("the note of the nightly backup\n");
const captured = (body: Buffer, state: Capture["state"] = "captured"): Capture => ({
  probe: "note",
  path: "/cgi-bin/note",
  state,
  time: 1_796_000_000,
  status: 200,
  digest: createHash("sha256").update(body).digest("hex"),
  excerpt: body.toString().slice(0, 64),
});

void describe("an HTTP probe's answer", () => {
  void it("wants the status, then the substring and the regular expression", () => {
    assert.equal(checkAnswer(probe(), { status: 200, body: note }), undefined);
    assert.equal(checkAnswer(probe(), { status: 503, body: note }), "GET /cgi-bin/note answered 503, not 200");
    assert.equal(checkAnswer(probe({ contains: "nightly" }), { status: 200, body: note }), undefined);
    assert.equal(checkAnswer(probe({ contains: "weekly" }), { status: 200, body: note }), 'the answer to GET /cgi-bin/note does not contain "weekly"');
    assert.equal(checkAnswer(probe({ matches: "^the note of the \\w+ backup$" }), { status: 200, body: Buffer.from("the note of the nightly backup") }), undefined);
    assert.match(checkAnswer(probe({ matches: "^\\d+$" }), { status: 200, body: note })!, /does not match \/\^\\d\+\$\//);
  });

  void it("with expect: snapshot, wants the answer captured at backup time: the data, not just the port", () => {
    const p = probe({ expect: "snapshot" });
    assert.equal(checkAnswer(p, { status: 200, body: note }, captured(note)), undefined);
    const changed = checkAnswer(p, { status: 200, body: Buffer.from("a note written after the backup\n") }, captured(note));
    assert.match(changed!, /^the answer to GET \/cgi-bin\/note is not the one captured at backup time \("a note written after the backup\\n", sha256 [0-9a-f]{12}…, not "the note of the nightly backup\\n", sha256 [0-9a-f]{12}…\)$/);
    // An unstable or failed capture is not used, and without one only the status counts.
    assert.equal(checkAnswer(p, { status: 200, body: Buffer.from("anything") }, captured(note, "unstable")), undefined);
    assert.equal(checkAnswer(p, { status: 200, body: Buffer.from("anything") }, { ...captured(note, "failed"), digest: undefined }), undefined);
    assert.equal(checkAnswer(p, { status: 200, body: Buffer.from("anything") }), undefined);
    // A probe without expect: snapshot ignores a capture of its name.
    assert.equal(checkAnswer(probe(), { status: 200, body: Buffer.from("anything") }, captured(note)), undefined);
  });
});
