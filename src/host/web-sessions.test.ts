import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WebSessions, sessionCookie, sessionIdOf } from "./web-sessions.ts";

void describe("web sessions", () => {
  void it("last until they expire or end, with a CSRF token of their own", () => {
    let now = 1_000_000;
    const s = new WebSessions({ ttlMs: 60_000, now: () => now });
    const a = s.create("alice");
    const b = s.create("bob");
    assert.notEqual(a.id, b.id);
    assert.notEqual(a.csrf, b.csrf);
    assert.equal(s.get(a.id)?.authId, "alice");
    assert.equal(WebSessions.csrfMatches(s.get(a.id)!, a.csrf), true);
    assert.equal(WebSessions.csrfMatches(s.get(a.id)!, b.csrf), false, "another session's token");
    assert.equal(WebSessions.csrfMatches(s.get(a.id)!, undefined), false);
    assert.equal(WebSessions.csrfMatches(s.get(a.id)!, [a.csrf]), false, "a token given twice");
    assert.equal(s.get("made-up"), undefined);
    assert.equal(s.get(undefined), undefined);
    now += 59_999;
    assert.ok(s.get(a.id));
    now += 1;
    assert.equal(s.get(a.id), undefined, "expired");
    const c = s.create("alice");
    s.remove(c.id);
    assert.equal(s.get(c.id), undefined, "logged out");
    const d = s.create("bob");
    s.removeUser("bob");
    assert.equal(s.get(d.id), undefined, "its user removed");
  });

  void it("set the cookie HttpOnly, Secure and SameSite=Strict, and read it among others", () => {
    assert.equal(sessionCookie("abc", 7200), "GordeSession=abc; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=7200");
    assert.match(sessionCookie("", 0), /Max-Age=0$/);
    assert.equal(sessionIdOf("a=1; GordeSession=xyz; b=2"), "xyz");
    assert.equal(sessionIdOf(["a=1", "GordeSession=xyz"]), "xyz", "HTTP/2 sends cookies as separate fields");
    assert.equal(sessionIdOf("GordeSessionX=1"), undefined);
    assert.equal(sessionIdOf(undefined), undefined);
    assert.equal(sessionIdOf("GordeSession="), undefined);
  });
});
