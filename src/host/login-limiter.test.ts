import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FairGate, LoginLimiter, addressKey } from "./login-limiter.ts";

const LIMITS = {
  userAddress: { burst: 3, refillMs: 10_000 },
  address: { burst: 5, refillMs: 4_000 },
  user: { burst: 8, refillMs: 2_000 },
  trustMs: 60_000,
  maxKeys: 1000,
  concurrent: 1,
};

function limiter(extra: Partial<typeof LIMITS> = {}): { l: LoginLimiter; clock: { t: number }; lines: string[] } {
  const clock = { t: 1_700_000_000_000 };
  const lines: string[] = [];
  const l = new LoginLimiter({ ...LIMITS, ...extra }, { now: () => clock.t, log: (s) => lines.push(s) });
  return { l, clock, lines };
}

/** `n` failed checks of `user` from `address`, each admitted first. */
function fail(l: LoginLimiter, user: string, address: string, n: number): void {
  for (let i = 0; i < n; i++) {
    assert.equal(l.wait(user, address), 0, `attempt ${i + 1} of ${user} from ${address} is admitted`);
    l.take(user, address);
  }
}

void describe("LoginLimiter", () => {
  void it("refuses a user at an address after its burst, until one attempt has refilled", () => {
    const { l, clock } = limiter();
    fail(l, "alice", "192.0.2.10", 3);
    assert.equal(l.wait("alice", "192.0.2.10"), 10_000);
    clock.t += 5_000;
    assert.equal(l.wait("alice", "192.0.2.10"), 5_000);
    clock.t += 5_000;
    fail(l, "alice", "192.0.2.10", 1);
    assert.equal(l.wait("alice", "192.0.2.10"), 10_000);
  });

  void it("keeps other users at that address and that user elsewhere going", () => {
    const { l } = limiter();
    fail(l, "alice", "192.0.2.10", 3);
    assert.equal(l.wait("bob", "192.0.2.10"), 0);
    assert.equal(l.wait("alice", "198.51.100.7"), 0);
  });

  void it("refuses an address that tries many users, for every user", () => {
    const { l } = limiter();
    for (const u of ["root", "admin", "backup", "pve", "test"]) fail(l, u, "203.0.113.5", 1);
    assert.equal(l.wait("carol", "203.0.113.5"), 4_000);
    assert.equal(l.wait("carol", "192.0.2.10"), 0);
  });

  void it("refuses a user guessed at from many addresses, except where it logged in before", () => {
    const { l } = limiter();
    l.succeeded("alice", "192.0.2.10", { took: false });
    for (let i = 1; i <= 8; i++) fail(l, "alice", `203.0.113.${i}`, 1);
    assert.equal(l.wait("alice", "203.0.113.99"), 2_000);
    assert.equal(l.wait("alice", "192.0.2.10"), 0);
  });

  void it("a success resets the user's count at that address and gives back what it took", () => {
    const { l } = limiter();
    fail(l, "alice", "192.0.2.10", 2);
    // the third attempt is the right password
    fail(l, "alice", "192.0.2.10", 1);
    l.succeeded("alice", "192.0.2.10", { took: true });
    // three more admitted: alice's count is back to 0, and the address got its token back
    fail(l, "alice", "192.0.2.10", 3);
    assert.ok(l.wait("alice", "192.0.2.10") > 0);
    // the address has had its 5 failures
    assert.equal(l.wait("bob", "192.0.2.10"), 4_000);
  });

  void it("logs a lockout once, not every refused attempt, and again after a new one", () => {
    const { l, clock, lines } = limiter();
    fail(l, "alice", "192.0.2.10", 3);
    for (let i = 0; i < 50; i++) assert.ok(l.wait("alice", "192.0.2.10") > 0);
    assert.deepEqual(lines, ["login throttled: 3 failed passwords for alice from 192.0.2.10; answered 429 for 10 s."]);
    clock.t += 10_000;
    fail(l, "alice", "192.0.2.10", 1);
    assert.ok(l.wait("alice", "192.0.2.10") > 0);
    assert.equal(lines.length, 2);
  });

  void it("tracks at most maxKeys keys, dropping the least recently used", () => {
    const { l } = limiter({ maxKeys: 50 });
    fail(l, "alice", "192.0.2.10", 3);
    for (let i = 0; i < 2000; i++) {
      const address = `10.${(i >> 8) & 255}.${i & 255}.1`;
      assert.equal(l.wait(`user${i}`, address), 0);
      l.take(`user${i}`, address);
      assert.ok(l.size <= 50, `${l.size} keys after ${i + 1} addresses`);
      // a lockout being hammered stays among the recent keys
      if (i % 10 === 0) assert.ok(l.wait("alice", "192.0.2.10") > 0, `alice still throttled after ${i + 1} addresses`);
    }
  });

  void it("forgets keys whose buckets are full again", () => {
    const { l, clock } = limiter();
    for (let i = 0; i < 100; i++) fail(l, `user${i}`, `10.0.0.${i}`, 1);
    assert.equal(l.size, 300);
    clock.t += 20_000;
    for (let i = 0; i < 100; i++) l.wait("bob", "192.0.2.10");
    assert.equal(l.size, 0);
  });

  void it("keeps a trusted address's key while the trust lasts", () => {
    const { l, clock } = limiter();
    l.succeeded("alice", "192.0.2.10", { took: false });
    clock.t += 30_000;
    l.wait("bob", "192.0.2.11");
    assert.equal(l.size, 1);
    clock.t += 30_000;
    l.wait("bob", "192.0.2.11");
    assert.equal(l.size, 0);
  });
});

void describe("addressKey", () => {
  void it("counts IPv4 as is, mapped or not, and IPv6 by /64", () => {
    assert.equal(addressKey("127.0.0.1"), "127.0.0.1");
    assert.equal(addressKey("::ffff:127.0.0.1"), "127.0.0.1");
    assert.equal(addressKey("::1"), "0:0:0:0::/64");
    assert.notEqual(addressKey("::1"), addressKey("127.0.0.1"));
    assert.equal(addressKey("2001:db8:1:2::1"), "2001:db8:1:2::/64");
    assert.equal(addressKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
    assert.equal(addressKey("2001:0db8:0001:0002::ffff:1.2.3.4"), "2001:db8:1:2::/64");
    assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
    assert.notEqual(addressKey("2001:db8:1:2::1"), addressKey("2001:db8:1:3::1"));
    assert.equal(addressKey(undefined), "unknown");
  });
});

void describe("FairGate", () => {
  void it("runs at most its limit at once and serves addresses, then users, in turn", async () => {
    const gate = new FairGate(1);
    const order: string[] = [];
    let running = 0;
    let most = 0;
    const job = (name: string) => async (): Promise<void> => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 2));
      order.push(name);
      running--;
    };
    const all = [
      ...Array.from({ length: 4 }, (_, i) => gate.run("203.0.113.5", "alice", job(`burst${i}`))),
      gate.run("203.0.113.5", "admin", job("admin-same-address")),
      gate.run("192.0.2.10", "bob", job("bob")),
    ];
    assert.equal(gate.queued, 5);
    await Promise.all(all);
    assert.equal(most, 1);
    // burst0 was running; then 203.0.113.5's next user in turn (alice), then the other address
    assert.deepEqual(order, ["burst0", "burst1", "bob", "admin-same-address", "burst2", "burst3"]);
  });

  void it("frees its slot when a task fails", async () => {
    const gate = new FairGate(1);
    await assert.rejects(gate.run("a", "u", () => Promise.reject(new Error("scrypt failed"))), /scrypt failed/);
    assert.equal(await gate.run("a", "u", () => Promise.resolve(7)), 7);
  });
});
