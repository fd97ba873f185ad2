// Throttling of password checks. Every check runs scrypt (slow on purpose), so a burst of
// wrong passwords used to occupy the machine for all users: 200 of them took 10.8 s, and
// an admin's login sent meanwhile waited 10 s behind them.
//
// Token buckets keyed by the user and the source address: a check takes one token from
// each bucket that applies, and a key without a token is refused at once (429, before any
// scrypt) until one has refilled. A successful check refills its user's bucket for that
// address and gives back what it took from the others, so only failures count.
//   - user at address: `userAddress`
//   - address (any user): `address`; IPv6 addresses count per /64, what one host gets
//   - user (any address): `user`, not applied to addresses where the user logged in
//     successfully within `trustMs`, so guessing a user's password from elsewhere does
//     not lock that user out of where it works from
// Memory is bounded: at most `maxKeys` keys, least recently used dropped first, and keys
// whose bucket is full again (and carry no trust) are dropped as they age.
//
// `FairGate` bounds the checks that run scrypt at once and serves waiting ones round-robin
// by address, then by user, so a burst from one address or for one user cannot queue
// ahead of everyone else's login.
import os from "node:os";

export interface Bucket {
  /** failures allowed in a row */
  burst: number;
  /** one more allowed after this long */
  refillMs: number;
}

export interface LoginLimits {
  userAddress: Bucket;
  address: Bucket;
  user: Bucket;
  /** how long a successful login exempts its address from the user's bucket */
  trustMs: number;
  /** keys tracked at most */
  maxKeys: number;
  /** password checks running at once */
  concurrent: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  userAddress: { burst: 5, refillMs: 30_000 },
  address: { burst: 20, refillMs: 10_000 },
  user: { burst: 50, refillMs: 10_000 },
  trustMs: 24 * 3600_000,
  maxKeys: 10_000,
  // scrypt runs in libuv's thread pool, which file I/O shares, and takes a core while it
  // runs: half the cores leaves the other half to serving backups. At least two: with
  // one, the logins of a dozen users whose cached checks expired together took 13 s on a
  // loaded 2-core machine.
  concurrent: Math.max(2, Math.floor(os.availableParallelism() / 2)),
};

type Kind = "userAddress" | "address" | "user";

interface Entry {
  kind: Kind;
  tokens: number;
  /** when `tokens` was computed */
  at: number;
  /** refused since it last admitted: the lockout is logged once */
  locked: boolean;
  /** userAddress only: the user logged in from there; exempt from the user bucket until */
  trustedUntil: number;
}

/**
 * The key an address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
 * its /64 prefix.
 */
export function addressKey(address: string | undefined): string {
  if (!address) return "unknown";
  const a = address.replace(/%.*$/, "");
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a);
  if (mapped) return mapped[1]!;
  if (!a.includes(":")) return a;
  const [head = "", tail = ""] = a.split("::");
  const parts = (s: string): string[] => (s === "" ? [] : s.split(":").flatMap((p) => (p.includes(".") ? ["0", "0"] : [p])));
  const h = parts(head);
  const t = a.includes("::") ? parts(tail) : [];
  const groups = [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

export class LoginLimiter {
  readonly limits: LoginLimits;
  private readonly now: () => number;
  private readonly log: (line: string) => void;
  /** in order of last use */
  private readonly entries = new Map<string, Entry>();

  constructor(limits: Partial<LoginLimits> = {}, opts: { now?: () => number; log?: (line: string) => void } = {}) {
    this.limits = { ...DEFAULT_LOGIN_LIMITS, ...limits };
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? (() => undefined);
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Milliseconds until `user` may try a password from `address`; 0: now. A key that starts
   * refusing here is logged, once per lockout.
   */
  wait(user: string, address: string): number {
    const now = this.now();
    this.sweep(now);
    let wait = 0;
    for (const [key, kind] of this.keys(user, address, now)) {
      const e = this.entries.get(key);
      if (!e) continue;
      this.refill(e, now);
      if (e.tokens >= 1) {
        e.locked = false;
        continue;
      }
      // an active lockout stays among the most recently used keys
      this.entries.delete(key);
      this.entries.set(key, e);
      const ms = Math.ceil((1 - e.tokens) * this.limits[kind].refillMs);
      wait = Math.max(wait, ms);
      if (!e.locked) {
        e.locked = true;
        this.log(`login throttled: ${describe(kind, user, address, this.limits[kind].burst)}; answered 429 for ${Math.ceil(ms / 1000)} s.`);
      }
    }
    return wait;
  }

  /** A password check is starting: one token from each bucket (after `wait` said 0). */
  take(user: string, address: string): void {
    const now = this.now();
    for (const [key, kind] of this.keys(user, address, now)) {
      const e = this.touch(key, kind, now);
      e.tokens = Math.max(0, e.tokens - 1);
    }
  }

  /**
   * The password was right: the user's bucket for this address is full again and the
   * address trusted for the user; the other buckets get back the token `take` took.
   */
  succeeded(user: string, address: string, opts: { took: boolean }): void {
    const now = this.now();
    const took = opts.took ? this.keys(user, address, now) : [];
    const pair = this.touch(pairKey(user, address), "userAddress", now);
    pair.tokens = this.limits.userAddress.burst;
    pair.locked = false;
    pair.trustedUntil = now + this.limits.trustMs;
    for (const [key, kind] of took) {
      const e = this.entries.get(key);
      if (e && kind !== "userAddress") {
        this.refill(e, now);
        e.tokens = Math.min(this.limits[kind].burst, e.tokens + 1);
      }
    }
  }

  /** The buckets that apply to `user` at `address`. */
  private keys(user: string, address: string, now: number): Array<[string, Kind]> {
    const out: Array<[string, Kind]> = [[`a\0${address}`, "address"]];
    if (user === "") return out;
    out.push([pairKey(user, address), "userAddress"]);
    const pair = this.entries.get(pairKey(user, address));
    if (!pair || pair.trustedUntil <= now) out.push([`u\0${user}`, "user"]);
    return out;
  }

  private refill(e: Entry, now: number): void {
    const { burst, refillMs } = this.limits[e.kind];
    if (now > e.at) e.tokens = Math.min(burst, e.tokens + (now - e.at) / refillMs);
    e.at = now;
  }

  /** The entry of `key`, made the most recently used (created full when new). */
  private touch(key: string, kind: Kind, now: number): Entry {
    let e = this.entries.get(key);
    if (e) {
      this.refill(e, now);
      this.entries.delete(key);
    } else {
      while (this.entries.size >= this.limits.maxKeys) {
        const oldest = this.entries.keys().next();
        if (oldest.done === true) break;
        this.entries.delete(oldest.value);
      }
      e = { kind, tokens: this.limits[kind].burst, at: now, locked: false, trustedUntil: 0 };
    }
    this.entries.set(key, e);
    return e;
  }

  /** Drops the least recently used keys that hold nothing any more (a few per call). */
  private sweep(now: number): void {
    for (let i = 0; i < 4; i++) {
      const first = this.entries.entries().next();
      if (first.done === true) return;
      const [key, e] = first.value;
      const { burst, refillMs } = this.limits[e.kind];
      if (e.tokens + (now - e.at) / refillMs < burst || e.trustedUntil > now) return;
      this.entries.delete(key);
    }
  }
}

function pairKey(user: string, address: string): string {
  return `p\0${user}\0${address}`;
}

function describe(kind: Kind, user: string, address: string, burst: number): string {
  if (kind === "address") return `${burst} failed passwords from ${address}`;
  if (kind === "user") return `${burst} failed passwords for ${user} from addresses it has not logged in from`;
  return `${burst} failed passwords for ${user} from ${address}`;
}

/**
 * Runs at most `limit` tasks at once; waiting ones are served round-robin by address and,
 * within an address, by user.
 */
export class FairGate {
  private readonly limit: number;
  private running = 0;
  /** address → user → waiting starts; a Map's order is the rotation */
  private readonly waiting = new Map<string, Map<string, Array<() => void>>>();

  constructor(limit: number) {
    if (!(Number.isSafeInteger(limit) && limit >= 1)) throw new RangeError(`the number of password checks at once must be at least 1, not ${limit}.`);
    this.limit = limit;
  }

  get queued(): number {
    let n = 0;
    for (const users of this.waiting.values()) for (const q of users.values()) n += q.length;
    return n;
  }

  async run<T>(address: string, user: string, fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((resolve) => {
        let users = this.waiting.get(address);
        if (!users) this.waiting.set(address, (users = new Map<string, Array<() => void>>()));
        let q = users.get(user);
        if (!q) users.set(user, (q = []));
        q.push(resolve);
      });
    } else {
      this.running++;
    }
    try {
      return await fn();
    } finally {
      this.next();
    }
  }

  /** Hands the finished task's slot to the next in turn, or frees it. */
  private next(): void {
    const first = this.waiting.entries().next();
    if (first.done === true) {
      this.running--;
      return;
    }
    const [address, users] = first.value;
    const [user, q] = users.entries().next().value!;
    const start = q.shift()!;
    // both go to the back of their rotation
    users.delete(user);
    if (q.length > 0) users.set(user, q);
    this.waiting.delete(address);
    if (users.size > 0) this.waiting.set(address, users);
    start();
  }
}
