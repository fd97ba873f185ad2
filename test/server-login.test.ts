// Throttling of failed logins on a real `gorde server` on loopback: per user and address,
// per address, answered 429 before any password check; other users and other addresses
// unaffected; API tokens never throttled. 127.0.0.2 is a second source address (all of
// 127/8 is loopback on Linux).
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { after, describe, it } from "node:test";
import { AuthStore, formatAuthorization } from "../src/host/auth.ts";
import { type GordeServer, startServer } from "../src/server/server.ts";
import type { LoginLimits } from "../src/host/login-limiter.ts";
import { tempDir } from "./helpers.ts";

const tmp = tempDir("gorde-login-test-");
after(() => tmp.cleanup());
let n = 0;

const ADMIN = "Tr0ub4dor&3-admin";
const ALICE = "alice's long passphrase";
const BOB = "bob-at-the-2nd-rack";

/** A server with alice, bob and admin (cheap scrypt), small limits, its log captured. */
async function server(limits: Partial<LoginLimits>): Promise<{ srv: GordeServer; log: string[]; token: string }> {
  const dir = path.join(tmp.dir, `s${n++}`);
  const state = path.join(dir, "state");
  const store = await AuthStore.open(state, { scryptCost: { n: 1024, r: 8, p: 1 } });
  await store.createFirstAdmin("admin", ADMIN);
  await store.addUser("alice", ALICE);
  await store.addUser("bob", BOB);
  await store.setAcl({ path: "/datastore/main", authId: "bob", role: "DatastoreBackup" });
  const { secret } = await store.addToken("bob", "node1");
  await store.setAcl({ path: "/datastore/main", authId: "bob!node1", role: "DatastoreBackup" });
  const log: string[] = [];
  const srv = await startServer({
    stateDir: state,
    host: "127.0.0.1",
    port: 0,
    datastores: { main: path.join(dir, "main") },
    authFailureDelayMs: 0,
    loginLimits: { concurrent: 1, ...limits },
    log: (line) => log.push(line),
  });
  after(() => srv.close());
  return { srv, log, token: secret };
}

interface Answer {
  status: number;
  retryAfter: string | undefined;
  body: string;
}

/** One request on a connection of its own (no check cached), from `from`. */
function login(srv: GordeServer, authId: string, secret: string, from = "127.0.0.1"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${srv.port}`, {
      createConnection: () =>
        tls.connect({ socket: net.connect({ host: "127.0.0.1", port: srv.port, localAddress: from }), rejectUnauthorized: false, ALPNProtocols: ["h2"] }),
    });
    session.on("error", reject);
    const req = session.request({ ":path": "/api/datastores", authorization: formatAuthorization(authId, secret) });
    let status = 0;
    let retryAfter: string | undefined;
    let body = "";
    req.on("response", (h) => {
      status = Number(h[":status"]);
      retryAfter = h["retry-after"] as string | undefined;
    });
    req.on("data", (b: Buffer) => (body += b.toString()));
    req.on("end", () => {
      session.close();
      resolve({ status, retryAfter, body });
    });
    req.on("error", reject);
    req.end();
  });
}

function count(answers: Answer[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const a of answers) out[a.status] = (out[a.status] ?? 0) + 1;
  return out;
}

const lockouts = (log: string[]): string[] => log.filter((l) => l.startsWith("login throttled"));

void describe("gorde server: failed logins", { timeout: 60_000 }, () => {
  void it("after 3 wrong passwords alice gets 429 with Retry-After, even with the right one, until the window passes", async () => {
    const { srv, log } = await server({ userAddress: { burst: 3, refillMs: 1500 } });
    for (const guess of ["alice", "alice123", "Alice2026"]) assert.equal((await login(srv, "alice", guess)).status, 401);
    const refused = await login(srv, "alice", ALICE);
    assert.equal(refused.status, 429, refused.body);
    assert.ok(refused.retryAfter === "1" || refused.retryAfter === "2", `Retry-After: ${refused.retryAfter}`);
    assert.match((JSON.parse(refused.body) as { error: string }).error, /^too many failed logins: try again in [12] s\.$/);
    assert.equal((await login(srv, "alice", "alice!")).status, 429);
    await new Promise((r) => setTimeout(r, Number(refused.retryAfter) * 1000));
    assert.equal((await login(srv, "alice", ALICE)).status, 200);
    // the success reset her count at this address: three more tries before the next lockout
    for (const guess of ["x1xxx", "x2xxx", "x3xxx"]) assert.equal((await login(srv, "alice", guess)).status, 401);
    assert.equal((await login(srv, "alice", ALICE)).status, 429);
    // one line per lockout, however many attempts it refused
    assert.equal(lockouts(log).length, 2, log.join("\n"));
    for (const line of lockouts(log)) assert.match(line, /^login throttled: 3 failed passwords for alice from 127\.0\.0\.1; answered 429 for [12] s\.$/);
  });

  void it("bob logs in from the same address during a burst of wrong passwords for alice, which costs only her first 3 checks", async () => {
    const { srv, log } = await server({ userAddress: { burst: 3, refillMs: 60_000 } });
    const burst = Array.from({ length: 40 }, (_, i) => login(srv, "alice", `guess-${i}`));
    const bob = await login(srv, "bob", BOB);
    assert.equal(bob.status, 200, bob.body);
    assert.deepEqual(count(await Promise.all(burst)), { 401: 3, 429: 37 });
    assert.equal(lockouts(log).length, 1, log.join("\n"));
  });

  void it("another address is not throttled by 127.0.0.1's failures, for the same user or any other", async () => {
    const { srv } = await server({ userAddress: { burst: 2, refillMs: 60_000 }, address: { burst: 4, refillMs: 60_000 } });
    for (const u of ["alice", "alice", "root", "backup"]) assert.equal((await login(srv, u, "password1")).status, 401);
    assert.equal((await login(srv, "alice", ALICE)).status, 429);
    assert.equal((await login(srv, "bob", BOB)).status, 429, "the address as a whole is throttled");
    assert.equal((await login(srv, "alice", ALICE, "127.0.0.2")).status, 200);
    assert.equal((await login(srv, "bob", BOB, "127.0.0.2")).status, 200);
  });

  void it("API tokens are never throttled, and work from a throttled address", async () => {
    const { srv, token } = await server({ userAddress: { burst: 2, refillMs: 60_000 }, address: { burst: 2, refillMs: 60_000 } });
    for (let i = 0; i < 2; i++) assert.equal((await login(srv, "bob", `bob-guess-${i}`)).status, 401);
    assert.equal((await login(srv, "bob", BOB)).status, 429);
    const wrong = await Promise.all(Array.from({ length: 10 }, (_, i) => login(srv, "bob!node1", `not-the-secret-${i}`)));
    assert.deepEqual(count(wrong), { 401: 10 });
    assert.equal((await login(srv, "bob!node1", token)).status, 200);
  });
});
