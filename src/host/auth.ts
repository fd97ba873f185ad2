// Users, API tokens and ACLs of `gorde server`, modelled on Proxmox Backup Server.
//
// State: <state>/users.json (scrypt password hashes), <state>/tokens.json (SHA-256 of token
// secrets), <state>/acl.json. Each file is validated on load and rewritten atomically (mode
// 0600) on every change; the in-memory copy is replaced only once its file is on disk, and
// changes run one at a time, so memory and files never disagree.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import type { TokenInfoSchema, UserInfoSchema } from "../api/access-routes.ts";
import { GordeError, ThrottledError } from "../errors.ts";
import { FairGate, type LoginLimits, LoginLimiter, addressKey } from "./login-limiter.ts";
import {
  type AclEntry,
  type Privilege,
  type RoleName,
  ROLE_NAMES,
  effectiveRoles,
  isRoleName,
  isValidAuthId,
  parseAclPath,
  parseAuthId,
  rolePrivileges,
} from "./auth-roles.ts";

export * from "./auth-roles.ts";
export { readState, writeState } from "./auth-records.ts";
import {
  type PasswordHash,
  type TokenRecord,
  type UserRecord,
  AclFileSchema,
  CACHE_MAX,
  DEFAULT_SCRYPT,
  MAX_SECRET,
  TOKEN_SECRET_BYTES,
  TokensFileSchema,
  UsersFileSchema,
  aclKey,
  belongsTo,
  checkComment,
  checkExpire,
  checkPassword,
  checkUserName,
  hashPassword,
  hashToken,
  notFound,
  patchAccount,
  readState,
  usage,
  userOf,
  verifyPassword,
  writeState,
} from "./auth-records.ts";

export type UserInfo = z.infer<typeof UserInfoSchema>;
export type TokenInfo = z.infer<typeof TokenInfoSchema>;

export interface AuthStoreOptions {
  /** Delay before answering a failed authentication, to slow guessing. Default 500 ms. */
  failureDelayMs?: number;
  /** How long a successful verification is remembered. Default 60 s. */
  cacheTtlMs?: number;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** scrypt cost for new password hashes; stored with each hash. Default N=2^15, r=8, p=1. */
  scryptCost?: { n: number; r: number; p: number };
  /** throttling of password checks (login-limiter.ts); defaults DEFAULT_LOGIN_LIMITS */
  loginLimits?: Partial<LoginLimits>;
  /** where lockouts are logged, one line each */
  log?: (line: string) => void;
}

export class AuthStore {
  readonly stateDir: string;
  private users: ReadonlyMap<string, UserRecord>;
  private tokens: ReadonlyMap<string, TokenRecord>;
  private acl: readonly AclEntry[];

  private readonly failureDelayMs: number;
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private readonly scryptCost: { n: number; r: number; p: number };
  /** hashes compared against when the auth id is unknown, so timing does not tell */
  private readonly dummyPassword: Promise<PasswordHash>;
  private readonly limiter: LoginLimiter;
  /** every scrypt of a check runs through it */
  private readonly gate: FairGate;

  /** per-process key: the cache holds HMACs of credentials, never secrets */
  private readonly cacheKey = randomBytes(32);
  private readonly cache = new Map<string, { authId: string; until: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  /** bumped on every credential or account change; verifications started before are not cached */
  private epoch = 0;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    stateDir: string,
    state: { users: Map<string, UserRecord>; tokens: Map<string, TokenRecord>; acl: AclEntry[] },
    options: AuthStoreOptions,
  ) {
    this.stateDir = stateDir;
    this.users = state.users;
    this.tokens = state.tokens;
    this.acl = state.acl;
    this.failureDelayMs = options.failureDelayMs ?? 500;
    this.cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.now = options.now ?? Date.now;
    this.scryptCost = options.scryptCost ?? DEFAULT_SCRYPT;
    this.limiter = new LoginLimiter(options.loginLimits, { now: this.now, log: options.log });
    this.gate = new FairGate(this.limiter.limits.concurrent);
    this.dummyPassword = hashPassword(randomBytes(16).toString("hex"), this.scryptCost);
    // opening never fails because of the dummy hash; a failure shows at the first use
    this.dummyPassword.catch(() => undefined);
  }

  static async open(stateDir: string, options: AuthStoreOptions = {}): Promise<AuthStore> {
    const dir = path.resolve(stateDir);
    try {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new GordeError("io", `cannot create the state directory ${dir}: ${(err as Error).message}.`, { cause: err });
    }
    const usersFile = await readState(path.join(dir, "users.json"), UsersFileSchema, "users");
    const tokensFile = await readState(path.join(dir, "tokens.json"), TokensFileSchema, "tokens");
    const aclFile = await readState(path.join(dir, "acl.json"), AclFileSchema, "ACL");

    const users = new Map<string, UserRecord>();
    for (const u of usersFile?.users ?? []) {
      if (users.has(u.name)) throw new GordeError("invalid", `${path.join(dir, "users.json")} lists user "${u.name}" twice.`);
      users.set(u.name, u);
    }
    const tokens = new Map<string, TokenRecord>();
    let orphans = false;
    for (const t of tokensFile?.tokens ?? []) {
      if (tokens.has(t.tokenId)) throw new GordeError("invalid", `${path.join(dir, "tokens.json")} lists token "${t.tokenId}" twice.`);
      // left behind when removing a user was interrupted: must not come back with a new user of that name
      if (!users.has(userOf(t.tokenId))) orphans = true;
      else tokens.set(t.tokenId, t);
    }
    const seen = new Set<string>();
    const acl: AclEntry[] = [];
    for (const e of aclFile?.acl ?? []) {
      if (seen.has(aclKey(e))) continue;
      seen.add(aclKey(e));
      const known = e.authId.includes("!") ? tokens.has(e.authId) : users.has(e.authId);
      if (!known) orphans = true;
      else acl.push(e);
    }
    const store = new AuthStore(dir, { users, tokens, acl }, options);
    if (orphans) {
      await store.serial(async () => {
        await store.writeTokens(store.tokens);
        await store.writeAcl(store.acl);
      });
    }
    return store;
  }

  /** No users yet: the server's first start. */
  isEmpty(): boolean {
    return this.users.size === 0;
  }

  /** Creates the first user with the Admin role on `/`; refused once any user exists. */
  async createFirstAdmin(name: string, password: string): Promise<void> {
    if (!this.isEmpty()) throw new GordeError("exists", "users exist already: the first admin is created only on an empty state directory.");
    await this.addUser(name, password, { comment: "administrator" });
    await this.setAcl({ path: "/", authId: name, role: "Admin", propagate: true });
  }

  // ---- users

  async addUser(name: string, password: string, opts: { comment?: string; expire?: number; enable?: boolean } = {}): Promise<void> {
    checkUserName(name);
    checkPassword(password);
    checkComment(opts.comment);
    checkExpire(opts.expire);
    if (this.users.has(name)) throw new GordeError("exists", `user "${name}" exists already.`);
    const hash = await hashPassword(password, this.scryptCost);
    await this.serial(async () => {
      if (this.users.has(name)) throw new GordeError("exists", `user "${name}" exists already.`);
      const rec: UserRecord = { name, password: hash, enable: opts.enable ?? true };
      if (opts.comment) rec.comment = opts.comment;
      if (opts.expire) rec.expire = opts.expire;
      const next = new Map(this.users).set(name, rec);
      await this.writeUsers(next);
      this.invalidate((id) => belongsTo(id, name));
    });
  }

  async setPassword(name: string, password: string): Promise<void> {
    checkPassword(password);
    this.user(name);
    const hash = await hashPassword(password, this.scryptCost);
    await this.serial(async () => {
      const rec = this.user(name);
      const next = new Map(this.users).set(name, { ...rec, password: hash });
      await this.writeUsers(next);
      // tokens have their own secrets: only the user's own cached logins go
      this.invalidate((id) => id === name);
    });
  }

  /** comment "" and expire 0 clear those fields. */
  async updateUser(name: string, patch: { comment?: string; expire?: number; enable?: boolean }): Promise<void> {
    checkComment(patch.comment);
    checkExpire(patch.expire);
    await this.serial(async () => {
      const rec = patchAccount(this.user(name), patch);
      await this.writeUsers(new Map(this.users).set(name, rec));
      this.invalidate((id) => belongsTo(id, name));
    });
  }

  /** Removes the user, its tokens and every ACL entry of either. */
  async removeUser(name: string): Promise<void> {
    await this.serial(async () => {
      this.user(name);
      const users = new Map(this.users);
      users.delete(name);
      // the user first: if a later write fails, its tokens are orphans open() discards
      await this.writeUsers(users);
      this.invalidate((id) => belongsTo(id, name));
      await this.writeTokens(new Map([...this.tokens].filter(([id]) => !belongsTo(id, name))));
      await this.writeAcl(this.acl.filter((e) => !belongsTo(e.authId, name)));
    });
  }

  listUsers(): UserInfo[] {
    return [...this.users.values()]
      .map((u) => {
        const info: UserInfo = { name: u.name, enable: u.enable };
        if (u.comment !== undefined) info.comment = u.comment;
        if (u.expire !== undefined) info.expire = u.expire;
        return info;
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  // ---- tokens

  /** Creates `user!tokenName`; the secret is returned here and never again. */
  async addToken(
    user: string,
    tokenName: string,
    opts: { comment?: string; expire?: number; enable?: boolean } = {},
  ): Promise<{ tokenId: string; secret: string }> {
    const tokenId = `${user}!${tokenName}`;
    parseAuthId(tokenId);
    checkComment(opts.comment);
    checkExpire(opts.expire);
    return this.serial(async () => {
      this.user(user);
      if (this.tokens.has(tokenId)) throw new GordeError("exists", `token "${tokenId}" exists already.`);
      const secret = randomBytes(TOKEN_SECRET_BYTES).toString("base64url");
      const rec: TokenRecord = { tokenId, hash: hashToken(secret), enable: opts.enable ?? true };
      if (opts.comment) rec.comment = opts.comment;
      if (opts.expire) rec.expire = opts.expire;
      await this.writeTokens(new Map(this.tokens).set(tokenId, rec));
      this.invalidate((id) => id === tokenId);
      return { tokenId, secret };
    });
  }

  /** comment "" and expire 0 clear those fields. */
  async updateToken(tokenId: string, patch: { comment?: string; expire?: number; enable?: boolean }): Promise<void> {
    checkComment(patch.comment);
    checkExpire(patch.expire);
    await this.serial(async () => {
      const rec = patchAccount(this.token(tokenId), patch);
      await this.writeTokens(new Map(this.tokens).set(tokenId, rec));
      this.invalidate((id) => id === tokenId);
    });
  }

  /** Revokes a token and removes its ACL entries. */
  async removeToken(tokenId: string): Promise<void> {
    await this.serial(async () => {
      this.token(tokenId);
      const tokens = new Map(this.tokens);
      tokens.delete(tokenId);
      await this.writeTokens(tokens);
      this.invalidate((id) => id === tokenId);
      await this.writeAcl(this.acl.filter((e) => e.authId !== tokenId));
    });
  }

  listTokens(user?: string): TokenInfo[] {
    return [...this.tokens.values()]
      .filter((t) => user === undefined || userOf(t.tokenId) === user)
      .map((t) => {
        const u = userOf(t.tokenId);
        const info: TokenInfo = { tokenId: t.tokenId, user: u, name: t.tokenId.slice(u.length + 1), enable: t.enable };
        if (t.comment !== undefined) info.comment = t.comment;
        if (t.expire !== undefined) info.expire = t.expire;
        return info;
      })
      .sort((a, b) => a.tokenId.localeCompare(b.tokenId));
  }

  // ---- ACL

  /**
   * Grants `role` to `authId` on `path` (propagate defaults to true), or with `remove`
   * takes that role away again. Granting to an unknown user or token is refused.
   */
  async setAcl(entry: { path: string; authId: string; role: RoleName; propagate?: boolean; remove?: boolean }): Promise<void> {
    parseAclPath(entry.path);
    parseAuthId(entry.authId);
    if (!isRoleName(entry.role)) throw usage(`"${String(entry.role)}" is not a role: expected one of ${ROLE_NAMES.join(", ")}.`);
    await this.serial(async () => {
      const key = aclKey(entry);
      const rest = this.acl.filter((e) => aclKey(e) !== key);
      if (entry.remove) {
        if (rest.length === this.acl.length) {
          throw notFound(`${entry.authId} has no role ${entry.role} on ${entry.path}.`);
        }
        await this.writeAcl(rest);
        return;
      }
      if (!this.exists(entry.authId)) throw notFound(`no user or token "${entry.authId}".`);
      await this.writeAcl([...rest, { path: entry.path, authId: entry.authId, role: entry.role, propagate: entry.propagate ?? true }]);
    });
  }

  listAcl(): AclEntry[] {
    return this.acl
      .map((e) => ({ ...e }))
      .sort((a, b) => a.path.localeCompare(b.path) || a.authId.localeCompare(b.authId) || a.role.localeCompare(b.role));
  }

  /**
   * The privileges of `authId` on `path`; a token gets at most its user's. An unknown,
   * disabled or expired user or token has none.
   */
  privileges(authId: string, aclPath: string): Set<Privilege> {
    const comps = parseAclPath(aclPath);
    if (!isValidAuthId(authId) || !this.active(authId)) return new Set();
    const own = rolePrivileges(effectiveRoles(this.acl, authId, comps));
    const user = userOf(authId);
    if (user === authId) return own;
    const userPrivs = rolePrivileges(effectiveRoles(this.acl, user, comps));
    return new Set([...own].filter((p) => userPrivs.has(p)));
  }

  can(authId: string, aclPath: string, priv: Privilege): boolean {
    return this.privileges(authId, aclPath).has(priv);
  }

  /**
   * Whether `authId` has some privilege on `aclPath` or an entry granting a role below it
   * (PBS's any_privs_below): decides which datastores and namespaces a listing shows.
   */
  anyPrivilegesBelow(authId: string, aclPath: string): boolean {
    if (this.privileges(authId, aclPath).size > 0) return true;
    if (!isValidAuthId(authId) || !this.active(authId)) return false;
    // a token's privileges can start below wherever its own or its user's entries are
    const user = userOf(authId);
    return this.acl.some(
      (e) =>
        (e.authId === authId || e.authId === user) &&
        (aclPath === "/" ? e.path !== "/" : e.path.startsWith(`${aclPath}/`)) &&
        this.privileges(authId, e.path).size > 0,
    );
  }

  // ---- authentication

  /**
   * Checks a user's password or a token's secret. Returns the auth id, or undefined on any
   * failure (unknown, wrong secret, disabled, expired) so callers answer 401 without saying
   * which. Successful checks are remembered for a short time: scrypt is slow on purpose
   * and every HTTP request is authenticated.
   *
   * Password checks are throttled by user and by `address`, the source address
   * (login-limiter.ts): a throttled one throws ThrottledError before any work, whether or
   * not the password is right. Token secrets are 256 random bits checked with one SHA-256:
   * nothing to guess and nothing to slow down, so they are not throttled.
   */
  async authenticate(authId: string, secret: string, opts: { address?: string } = {}): Promise<string | undefined> {
    let ok = false;
    const password = typeof authId === "string" && !authId.includes("!");
    const address = addressKey(opts.address);
    // an invalid name still counts against its address
    const user = password && isValidAuthId(authId) ? authId : "";
    let took = false;
    if (password) {
      const wait = this.limiter.wait(user, address);
      if (wait > 0) throw new ThrottledError(`too many failed logins: try again in ${Math.ceil(wait / 1000)} s.`, wait);
    }
    try {
      ok = await this.check(authId, secret, {
        address,
        starting: () => {
          if (!password) return;
          this.limiter.take(user, address);
          took = true;
        },
      });
    } catch {
      ok = false;
    }
    if (ok && user !== "") this.limiter.succeeded(user, address, { took });
    if (ok) return authId;
    if (this.failureDelayMs > 0) await sleep(this.failureDelayMs);
    return undefined;
  }

  /**
   * Changes whenever a user, token or ACL changes: a caller caching a successful check
   * (per connection) must check again when it moved.
   */
  get revision(): number {
    return this.epoch;
  }

  /** The auth id exists, is enabled and has not expired (nor has its user). */
  isActive(authId: string): boolean {
    return isValidAuthId(authId) && this.active(authId);
  }

  /**
   * `starting` is called when a new check begins, not for one answered from the cache or
   * joining the same check under way.
   */
  private async check(authId: string, secret: string, opts: { address: string; starting: () => void }): Promise<boolean> {
    if (typeof authId !== "string" || typeof secret !== "string") return false;
    if (secret === "" || secret.length > MAX_SECRET || !isValidAuthId(authId) || !this.active(authId)) {
      // the same work as a real check, so the answer's timing does not reveal who exists
      if (!authId.includes("!")) {
        opts.starting();
        const dummy = await this.dummyPassword;
        await this.gate.run(opts.address, authId, () => verifyPassword(secret.slice(0, MAX_SECRET), dummy));
      }
      return false;
    }
    const key = createHmac("sha256", this.cacheKey).update(authId).update("\0").update(secret).digest("base64");
    const now = this.now();
    const hit = this.cache.get(key);
    if (hit !== undefined) {
      if (hit.until > now && hit.authId === authId) return true;
      this.cache.delete(key);
    }
    const running = this.inflight.get(key);
    if (running) return running;
    opts.starting();
    const epoch = this.epoch;
    const pending = this.verify(authId, secret, opts.address).then((ok) => {
      if (ok && epoch === this.epoch) this.remember(key, authId, now);
      return ok;
    });
    this.inflight.set(key, pending);
    try {
      return await pending;
    } finally {
      if (this.inflight.get(key) === pending) this.inflight.delete(key);
    }
  }

  private async verify(authId: string, secret: string, address: string): Promise<boolean> {
    if (authId.includes("!")) {
      const rec = this.tokens.get(authId);
      if (!rec) return false;
      return timingSafeEqual(Buffer.from(hashToken(secret), "hex"), Buffer.from(rec.hash, "hex"));
    }
    const rec = this.users.get(authId);
    if (!rec) return false;
    return this.gate.run(address, authId, () => verifyPassword(secret, rec.password));
  }

  private remember(key: string, authId: string, now: number): void {
    if (this.cache.size >= CACHE_MAX) {
      for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
      // still full: drop the oldest (a Map iterates in insertion order)
      while (this.cache.size >= CACHE_MAX) {
        const first = this.cache.keys().next();
        if (first.done === true) break;
        this.cache.delete(first.value);
      }
    }
    this.cache.set(key, { authId, until: now + this.cacheTtlMs });
  }

  private invalidate(matches: (authId: string) => boolean): void {
    this.epoch++;
    for (const [k, v] of this.cache) if (matches(v.authId)) this.cache.delete(k);
    // checks already running compare against the old state; new ones must not join them
    this.inflight.clear();
  }

  // ---- state

  private expired(expire: number | undefined): boolean {
    return expire !== undefined && expire * 1000 <= this.now();
  }

  /** The auth id exists, is enabled and has not expired, and so is its user. */
  private active(authId: string): boolean {
    const user = this.users.get(userOf(authId));
    if (!user || !user.enable || this.expired(user.expire)) return false;
    if (!authId.includes("!")) return true;
    const token = this.tokens.get(authId);
    return token !== undefined && token.enable && !this.expired(token.expire);
  }

  private exists(authId: string): boolean {
    return authId.includes("!") ? this.tokens.has(authId) : this.users.has(authId);
  }

  private user(name: string): UserRecord {
    const rec = typeof name === "string" ? this.users.get(name) : undefined;
    if (!rec) throw notFound(`no user "${String(name)}".`);
    return rec;
  }

  private token(tokenId: string): TokenRecord {
    const rec = typeof tokenId === "string" ? this.tokens.get(tokenId) : undefined;
    if (!rec) throw notFound(`no token "${String(tokenId)}".`);
    return rec;
  }

  /** Runs changes one after another, each seeing the state the previous one left. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writeUsers(users: ReadonlyMap<string, UserRecord>): Promise<void> {
    await writeState(path.join(this.stateDir, "users.json"), { version: 1, users: [...users.values()] });
    this.users = users;
  }

  private async writeTokens(tokens: ReadonlyMap<string, TokenRecord>): Promise<void> {
    await writeState(path.join(this.stateDir, "tokens.json"), { version: 1, tokens: [...tokens.values()] });
    this.tokens = tokens;
  }

  private async writeAcl(acl: readonly AclEntry[]): Promise<void> {
    await writeState(path.join(this.stateDir, "acl.json"), { version: 1, acl });
    this.acl = acl;
  }
}

// ---- the wire

/**
 * Parses `Authorization: Basic base64(authId:secret)`, authId being `user` or `user!token`.
 * Undefined when absent or malformed.
 */
export function parseAuthorization(header: string | undefined): { authId: string; secret: string } | undefined {
  if (typeof header !== "string") return undefined;
  const m = /^basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(header);
  const b64 = m?.[1];
  if (b64 === undefined) return undefined;
  const text = Buffer.from(b64, "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) return undefined;
  const authId = text.slice(0, colon);
  const secret = text.slice(colon + 1);
  if (!isValidAuthId(authId) || secret === "" || secret.length > MAX_SECRET) return undefined;
  return { authId, secret };
}

/** The `Authorization` header value for `authId` and its password or token secret. */
export function formatAuthorization(authId: string, secret: string): string {
  return `Basic ${Buffer.from(`${authId}:${secret}`, "utf8").toString("base64")}`;
}
