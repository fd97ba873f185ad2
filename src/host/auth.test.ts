import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import {
  AuthStore,
  type AuthStoreOptions,
  PRIVILEGES,
  type Privilege,
  ROLE_NAMES,
  ROLES,
  type RoleName,
  datastoreAclPath,
  effectiveRoles,
  formatAuthorization,
  groupAccess,
  ownsGroup,
  parseAclPath,
  parseAuthorization,
} from "./auth.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-auth-test-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCount = 0;

function tmpDir(): string {
  return path.join(root, `state-${dirCount++}`);
}

/** A store with cheap scrypt, no failure delay and a clock the test moves (ms). */
async function openStore(dir = tmpDir(), extra: AuthStoreOptions = {}): Promise<{ store: AuthStore; dir: string; clock: { t: number } }> {
  const clock = { t: 1_700_000_000_000 };
  const store = await AuthStore.open(dir, {
    failureDelayMs: 0,
    scryptCost: { n: 1024, r: 8, p: 1 },
    now: () => clock.t,
    ...extra,
  });
  return { store, dir, clock };
}

function nowSec(clock: { t: number }): number {
  return Math.floor(clock.t / 1000);
}

function sorted(s: Iterable<Privilege>): Privilege[] {
  return [...s].sort();
}

function isCode(code: string, re?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof GordeError, String(err));
    assert.equal(err.code, code, err.message);
    if (re) assert.match(err.message, re);
    return true;
  };
}

/** The private cache, looked at to prove what is (not) remembered. */
function cacheOf(store: AuthStore): Map<string, { authId: string; until: number }> {
  return (store as unknown as { cache: Map<string, { authId: string; until: number }> }).cache;
}

void describe("roles", () => {
  void it("has the PBS role table", () => {
    const expected: Record<RoleName, Privilege[]> = {
      Admin: [...PRIVILEGES],
      NoAccess: [],
      DatastoreAdmin: ["Datastore.Audit", "Datastore.Modify", "Datastore.Read", "Datastore.Verify", "Datastore.Backup", "Datastore.Prune"],
      DatastorePowerUser: ["Datastore.Prune", "Datastore.Backup"],
      DatastoreBackup: ["Datastore.Backup"],
      DatastoreReader: ["Datastore.Audit", "Datastore.Read", "Datastore.Verify"],
      DatastoreAudit: ["Datastore.Audit"],
      RemoteAdmin: ["Remote.Audit", "Remote.Modify", "Remote.Read"],
      RemoteAudit: ["Remote.Audit"],
      RemoteSyncOperator: ["Remote.Audit", "Remote.Read"],
      PVEAuditor: ["Sys.Audit", "VM.Audit", "Datastore.Audit"],
      PVEVMUser: ["VM.Audit", "VM.PowerMgmt", "VM.Backup"],
      PVEDatastoreUser: ["Datastore.Audit", "Datastore.AllocateSpace"],
    };
    assert.deepEqual([...ROLE_NAMES].sort(), Object.keys(expected).sort());
    for (const role of ROLE_NAMES) assert.deepEqual(sorted(ROLES[role]), sorted(expected[role]), role);
    assert.ok(Object.isFrozen(ROLES));
  });

  void it("gives each role exactly its privileges through the store", async () => {
    const { store } = await openStore();
    for (const role of ROLE_NAMES) {
      const name = `u-${role}`;
      await store.addUser(name, "password");
      await store.setAcl({ path: "/datastore/s1", authId: name, role });
      assert.deepEqual(sorted(store.privileges(name, "/datastore/s1")), sorted(ROLES[role]), role);
      assert.deepEqual(sorted(store.privileges(name, "/datastore/s1/ns/deeper")), sorted(ROLES[role]), role);
      assert.equal(store.privileges(name, "/datastore/s2").size, 0, role);
      assert.equal(store.privileges(name, "/").size, 0, role);
      for (const p of PRIVILEGES) assert.equal(store.can(name, "/datastore/s1", p), ROLES[role].includes(p), `${role} ${p}`);
    }
  });
});

void describe("ACL evaluation", () => {
  const e = (p: string, role: RoleName, propagate = true, authId = "u"): { path: string; authId: string; role: RoleName; propagate: boolean } => ({
    path: p,
    authId,
    role,
    propagate,
  });
  const roles = (entries: ReturnType<typeof e>[], p: string, authId = "u"): RoleName[] => [...effectiveRoles(entries, authId, parseAclPath(p))].sort();

  void it("propagates down the tree", () => {
    const acl = [e("/datastore", "DatastoreReader")];
    assert.deepEqual(roles(acl, "/"), []);
    assert.deepEqual(roles(acl, "/datastore"), ["DatastoreReader"]);
    assert.deepEqual(roles(acl, "/datastore/a"), ["DatastoreReader"]);
    assert.deepEqual(roles(acl, "/datastore/a/x/y"), ["DatastoreReader"]);
  });

  void it("lets a deeper entry override the inherited ones", () => {
    const acl = [e("/", "Admin"), e("/datastore", "DatastoreAdmin"), e("/datastore/b", "DatastoreAudit"), e("/datastore/b", "DatastoreBackup")];
    assert.deepEqual(roles(acl, "/datastore/a"), ["DatastoreAdmin"]);
    assert.deepEqual(roles(acl, "/datastore/b"), ["DatastoreAudit", "DatastoreBackup"]);
    assert.deepEqual(roles(acl, "/datastore/b/ns"), ["DatastoreAudit", "DatastoreBackup"]);
  });

  void it("applies propagate=false to the exact path only", () => {
    const acl = [e("/datastore", "DatastoreAudit"), e("/datastore/a", "DatastoreAdmin", false)];
    assert.deepEqual(roles(acl, "/datastore/a"), ["DatastoreAdmin"]);
    // below, the non-propagating entry does not count and the inherited one stays
    assert.deepEqual(roles(acl, "/datastore/a/ns"), ["DatastoreAudit"]);
    assert.deepEqual(roles([e("/datastore/a", "DatastoreAdmin", false)], "/datastore/a/ns"), []);
  });

  void it("removes access with NoAccess on a deeper path", () => {
    const acl = [e("/", "Admin"), e("/datastore/secret", "NoAccess"), e("/datastore/half", "NoAccess", false)];
    assert.deepEqual(roles(acl, "/datastore/open"), ["Admin"]);
    assert.deepEqual(roles(acl, "/datastore/secret"), ["NoAccess"]);
    assert.deepEqual(roles(acl, "/datastore/secret/ns"), ["NoAccess"]);
    assert.deepEqual(roles(acl, "/datastore/half"), ["NoAccess"]);
    assert.deepEqual(roles(acl, "/datastore/half/ns"), ["Admin"]);
    // NoAccess beats other roles on the same level, and a deeper grant beats it
    const mixed = [e("/datastore/a", "NoAccess"), e("/datastore/a", "DatastoreAdmin"), e("/datastore/a/ok", "DatastoreReader")];
    assert.deepEqual(roles(mixed, "/datastore/a"), ["NoAccess"]);
    assert.deepEqual(roles(mixed, "/datastore/a/ok"), ["DatastoreReader"]);
  });

  void it("looks only at the entries of the given auth id", () => {
    const acl = [e("/", "Admin", true, "other"), e("/datastore", "DatastoreAudit")];
    assert.deepEqual(roles(acl, "/datastore/x"), ["DatastoreAudit"]);
    assert.deepEqual(roles(acl, "/datastore/x", "other"), ["Admin"]);
    assert.deepEqual(roles(acl, "/datastore/x", "nobody"), []);
  });

  void it("evaluates the same way through the store", async () => {
    const { store } = await openStore();
    await store.addUser("alice", "password");
    await store.setAcl({ path: "/", authId: "alice", role: "Admin" });
    await store.setAcl({ path: "/datastore/secret", authId: "alice", role: "NoAccess" });
    await store.setAcl({ path: "/datastore/ro", authId: "alice", role: "DatastoreReader", propagate: false });
    assert.equal(store.privileges("alice", "/datastore/x").size, PRIVILEGES.length);
    assert.equal(store.privileges("alice", "/datastore/secret").size, 0);
    assert.equal(store.privileges("alice", "/datastore/secret/ns").size, 0);
    assert.deepEqual(sorted(store.privileges("alice", "/datastore/ro")), sorted(ROLES.DatastoreReader));
    assert.equal(store.privileges("alice", "/datastore/ro/ns").size, PRIVILEGES.length);
    assert.equal(store.privileges("nobody", "/").size, 0);
    assert.equal(store.privileges("bad name!", "/").size, 0);

    // same (path, auth id, role) updates; remove takes it away
    await store.setAcl({ path: "/datastore/ro", authId: "alice", role: "DatastoreReader", propagate: true });
    assert.equal(store.listAcl().filter((a) => a.path === "/datastore/ro").length, 1);
    assert.deepEqual(sorted(store.privileges("alice", "/datastore/ro/ns")), sorted(ROLES.DatastoreReader));
    await store.setAcl({ path: "/datastore/secret", authId: "alice", role: "NoAccess", remove: true });
    assert.equal(store.privileges("alice", "/datastore/secret").size, PRIVILEGES.length);
    await assert.rejects(store.setAcl({ path: "/datastore/secret", authId: "alice", role: "NoAccess", remove: true }), isCode("not-found"));
    await assert.rejects(store.setAcl({ path: "/", authId: "ghost", role: "Admin" }), isCode("not-found"));
    await assert.rejects(store.setAcl({ path: "/", authId: "alice", role: "Root" as RoleName }), isCode("usage"));
  });

  void it("tells which paths have privileges below them", async () => {
    const { store } = await openStore();
    await store.addUser("bob", "password");
    await store.setAcl({ path: "/datastore/a/ns1", authId: "bob", role: "DatastoreBackup" });
    await store.setAcl({ path: "/datastore/b/ns1", authId: "bob", role: "NoAccess" });
    assert.equal(store.anyPrivilegesBelow("bob", "/"), true);
    assert.equal(store.anyPrivilegesBelow("bob", "/datastore/a"), true);
    assert.equal(store.anyPrivilegesBelow("bob", "/datastore/b"), false);
    assert.equal(store.anyPrivilegesBelow("bob", "/datastore/c"), false);
    const { tokenId } = await store.addToken("bob", "t");
    await store.setAcl({ path: "/", authId: tokenId, role: "DatastoreBackup" });
    assert.equal(store.anyPrivilegesBelow(tokenId, "/datastore/a"), true);
    assert.equal(store.anyPrivilegesBelow(tokenId, "/datastore/b"), false);
  });
});

void describe("validation", () => {
  void it("accepts only canonical ACL paths", () => {
    assert.deepEqual(parseAclPath("/"), []);
    assert.deepEqual(parseAclPath("/datastore"), ["datastore"]);
    assert.deepEqual(parseAclPath("/datastore/s1/ns.a/b_c-d"), ["datastore", "s1", "ns.a", "b_c-d"]);
    assert.deepEqual(parseAclPath("/vms"), ["vms"]);
    assert.deepEqual(parseAclPath("/vms/100"), ["vms", "100"]);
    assert.deepEqual(parseAclPath("/remote"), ["remote"]);
    assert.deepEqual(parseAclPath("/remote/offsite-1"), ["remote", "offsite-1"]);
    assert.deepEqual(parseAclPath("/storage"), ["storage"]);
    assert.deepEqual(parseAclPath("/storage/backup-1"), ["storage", "backup-1"]);
    for (const bad of [
      "/storage/",
      "/storage/a/b",
      "/storage/.hidden",
      "/remote/",
      "/remote/offsite/main",
      "/remote/offsite.example",
      "/remote/1offsite",
      "/remote/https:",
      "/vms/",
      "/vms/99",
      "/vms/0100",
      "/vms/100/disk0",
      "/vms/abc",
      "",
      "datastore",
      "//",
      "/datastore/",
      "/datastore/../x",
      "/datastore/a/..",
      "/datastore/./a",
      "/datastore/a//b",
      "/datastore/a/b/",
      "/datastore/.hidden",
      "/datastore/a b",
      "/datastore/a\\b",
      "/datastore/a\0",
      "/system",
      "/Datastore/a",
      `/datastore/${"x".repeat(65)}`,
      `/datastore/s${"/n".repeat(9)}`,
    ]) {
      assert.throws(() => parseAclPath(bad), isCode("usage"), JSON.stringify(bad));
    }
    parseAclPath(`/datastore/s${"/n".repeat(8)}`);
    assert.equal(datastoreAclPath("s1", ["a", "b"]), "/datastore/s1/a/b");
    assert.throws(() => datastoreAclPath("..", []), isCode("usage"));
  });

  void it("refuses bad names and paths through the store", async () => {
    const { store } = await openStore();
    for (const bad of ["", "a!b", "../x", ".x", "-x", "a/b", "a b", "x".repeat(65), "a:b"]) {
      await assert.rejects(store.addUser(bad, "password"), isCode("usage"), JSON.stringify(bad));
    }
    await store.addUser("u", "password");
    await assert.rejects(store.addUser("u2", "pw"), isCode("usage", /password/));
    await assert.rejects(store.addUser("u3", "password", { comment: "two\nlines" }), isCode("usage"));
    await assert.rejects(store.addUser("u4", "password", { expire: -1 }), isCode("usage"));
    for (const bad of ["", "a!b", "..", "x/y"]) {
      await assert.rejects(store.addToken("u", bad), isCode("usage"), JSON.stringify(bad));
    }
    for (const bad of ["/datastore/../x", "/datastore/a//b", "/datastore/", "/etc"]) {
      await assert.rejects(store.setAcl({ path: bad, authId: "u", role: "Admin" }), isCode("usage"), bad);
      assert.throws(() => store.privileges("u", bad), isCode("usage"), bad);
    }
    await assert.rejects(store.setAcl({ path: "/", authId: "u!", role: "Admin" }), isCode("usage"));
    assert.equal(store.listAcl().length, 0);
  });
});

void describe("users and passwords", () => {
  void it("authenticates the right password only", async () => {
    const { store } = await openStore();
    assert.equal(store.isEmpty(), true);
    await store.addUser("alice", "correct horse", { comment: "Alice" });
    assert.equal(store.isEmpty(), false);
    await assert.rejects(store.addUser("alice", "another one"), isCode("exists"));
    assert.equal(await store.authenticate("alice", "correct horse"), "alice");
    assert.equal(await store.authenticate("alice", "correct horsE"), undefined);
    assert.equal(await store.authenticate("alice", ""), undefined);
    assert.equal(await store.authenticate("bob", "correct horse"), undefined);
    assert.equal(await store.authenticate("alice!tok", "correct horse"), undefined);
    assert.equal(await store.authenticate("bad name", "x"), undefined);
    assert.deepEqual(store.listUsers(), [{ name: "alice", comment: "Alice", enable: true }]);
  });

  void it("refuses disabled and expired users, and their tokens", async () => {
    const { store, clock } = await openStore();
    await store.addUser("alice", "password");
    await store.setAcl({ path: "/", authId: "alice", role: "Admin" });
    const { tokenId, secret } = await store.addToken("alice", "t1");
    await store.setAcl({ path: "/", authId: tokenId, role: "Admin" });
    assert.equal(await store.authenticate("alice", "password"), "alice");
    assert.equal(await store.authenticate(tokenId, secret), tokenId);

    await store.updateUser("alice", { enable: false });
    assert.equal(await store.authenticate("alice", "password"), undefined);
    assert.equal(await store.authenticate(tokenId, secret), undefined);
    assert.equal(store.privileges("alice", "/").size, 0);
    assert.equal(store.privileges(tokenId, "/").size, 0);
    await store.updateUser("alice", { enable: true });
    assert.equal(await store.authenticate("alice", "password"), "alice");
    assert.equal(await store.authenticate(tokenId, secret), tokenId);

    await store.updateUser("alice", { expire: nowSec(clock) + 10, comment: "temp" });
    assert.equal(await store.authenticate("alice", "password"), "alice");
    // expiry is checked on every call, cached or not
    clock.t += 10_000;
    assert.equal(await store.authenticate("alice", "password"), undefined);
    assert.equal(await store.authenticate(tokenId, secret), undefined);
    assert.equal(store.privileges(tokenId, "/").size, 0);
    await store.updateUser("alice", { expire: 0, comment: "" });
    assert.deepEqual(store.listUsers(), [{ name: "alice", enable: true }]);
    assert.equal(await store.authenticate("alice", "password"), "alice");
    assert.equal(await store.authenticate(tokenId, secret), tokenId);

    await store.addUser("late", "password", { enable: false, expire: nowSec(clock) + 100 });
    assert.equal(await store.authenticate("late", "password"), undefined);
    assert.deepEqual(store.listUsers()[1], { name: "late", enable: false, expire: nowSec(clock) + 100 });
  });

  void it("forgets the old password at once when it changes", async () => {
    const { store } = await openStore();
    await store.addUser("alice", "old password");
    assert.equal(await store.authenticate("alice", "old password"), "alice");
    assert.equal(cacheOf(store).size, 1);
    assert.equal(await store.authenticate("alice", "old password"), "alice");
    await store.setPassword("alice", "new password");
    assert.equal(cacheOf(store).size, 0);
    assert.equal(await store.authenticate("alice", "old password"), undefined);
    assert.equal(await store.authenticate("alice", "new password"), "alice");
    await assert.rejects(store.setPassword("ghost", "password"), isCode("not-found"));
    await assert.rejects(store.setPassword("alice", "x"), isCode("usage"));
  });

  void it("remembers successes briefly, keyed without the secret, and never failures", async () => {
    const { store, clock } = await openStore(undefined, { cacheTtlMs: 60_000 });
    await store.addUser("alice", "s3cret-pass");
    assert.equal(await store.authenticate("alice", "wrong-pass"), undefined);
    assert.equal(cacheOf(store).size, 0);
    const all = await Promise.all(Array.from({ length: 20 }, () => store.authenticate("alice", "s3cret-pass")));
    assert.deepEqual(new Set(all), new Set(["alice"]));
    assert.equal(cacheOf(store).size, 1);
    for (const [key, value] of cacheOf(store)) {
      assert.ok(!key.includes("s3cret"), key);
      assert.ok(!JSON.stringify(value).includes("s3cret"));
      assert.equal(value.until, clock.t + 60_000);
    }
    clock.t += 61_000;
    assert.equal(await store.authenticate("alice", "s3cret-pass"), "alice");
    assert.equal([...cacheOf(store).values()][0]?.until, clock.t + 60_000);
  });

  void it("waits before answering a failure", async () => {
    const { store } = await openStore(undefined, { failureDelayMs: 60 });
    await store.addUser("alice", "password");
    let t0 = performance.now();
    assert.equal(await store.authenticate("alice", "wrong"), undefined);
    assert.ok(performance.now() - t0 >= 55);
    t0 = performance.now();
    assert.equal(await store.authenticate("nobody", "wrong"), undefined);
    assert.ok(performance.now() - t0 >= 55);
  });

  void it("hashes with the default scrypt cost", async () => {
    const dir = tmpDir();
    const store = await AuthStore.open(dir, { failureDelayMs: 0 });
    await store.addUser("alice", "password");
    assert.equal(await store.authenticate("alice", "password"), "alice");
    const saved = JSON.parse(fs.readFileSync(path.join(dir, "users.json"), "utf8")) as { users: { password: { n: number; r: number } }[] };
    assert.equal(saved.users[0]?.password.n, 2 ** 15);
    assert.equal(saved.users[0]?.password.r, 8);
  });

  void it("removes a user with its tokens and ACL entries", async () => {
    const { store } = await openStore();
    await store.addUser("alice", "password");
    await store.addUser("alice2", "password");
    const { tokenId, secret } = await store.addToken("alice", "t");
    await store.addToken("alice2", "t");
    await store.setAcl({ path: "/", authId: "alice", role: "Admin" });
    await store.setAcl({ path: "/", authId: tokenId, role: "Admin" });
    await store.setAcl({ path: "/", authId: "alice2", role: "DatastoreAudit" });
    assert.equal(await store.authenticate(tokenId, secret), tokenId);
    await store.removeUser("alice");
    assert.equal(await store.authenticate("alice", "password"), undefined);
    assert.equal(await store.authenticate(tokenId, secret), undefined);
    assert.deepEqual(store.listUsers().map((u) => u.name), ["alice2"]);
    assert.deepEqual(store.listTokens().map((t) => t.tokenId), ["alice2!t"]);
    assert.deepEqual(store.listAcl().map((a) => a.authId), ["alice2"]);
    await assert.rejects(store.removeUser("alice"), isCode("not-found"));
    // a new user of the same name starts with nothing
    await store.addUser("alice", "password");
    assert.equal(store.privileges("alice", "/").size, 0);
    assert.deepEqual(store.listTokens("alice"), []);
  });

  void it("creates the first admin only on an empty state", async () => {
    const { store } = await openStore();
    await store.createFirstAdmin("admin", "admin-password");
    assert.equal(store.privileges("admin", "/datastore/any").size, PRIVILEGES.length);
    assert.equal(await store.authenticate("admin", "admin-password"), "admin");
    await assert.rejects(store.createFirstAdmin("admin2", "password"), isCode("exists"));
  });
});

void describe("tokens", () => {
  void it("returns a random URL-safe secret once and authenticates with it", async () => {
    const { store } = await openStore();
    await store.addUser("alice", "password");
    const a = await store.addToken("alice", "backup", { comment: "nodes" });
    const b = await store.addToken("alice", "other");
    assert.equal(a.tokenId, "alice!backup");
    assert.match(a.secret, /^[A-Za-z0-9_-]{43,}$/);
    assert.ok(Buffer.from(a.secret, "base64url").length >= 32);
    assert.notEqual(a.secret, b.secret);
    assert.equal(await store.authenticate(a.tokenId, a.secret), a.tokenId);
    assert.equal(await store.authenticate(a.tokenId, b.secret), undefined);
    assert.equal(await store.authenticate(a.tokenId, "password"), undefined);
    assert.equal(await store.authenticate("alice", a.secret), undefined);
    assert.deepEqual(store.listTokens(), [
      { tokenId: "alice!backup", user: "alice", name: "backup", comment: "nodes", enable: true },
      { tokenId: "alice!other", user: "alice", name: "other", enable: true },
    ]);
    assert.ok(!JSON.stringify(store.listTokens()).includes(a.secret));
    await assert.rejects(store.addToken("alice", "backup"), isCode("exists"));
    await assert.rejects(store.addToken("ghost", "t"), isCode("not-found"));
  });

  void it("never has more privileges than its user", async () => {
    const { store } = await openStore();
    await store.addUser("node", "password");
    await store.setAcl({ path: "/datastore/a", authId: "node", role: "DatastorePowerUser" });
    const { tokenId } = await store.addToken("node", "t");
    // no ACL of its own: nothing, whatever the user has
    assert.equal(store.privileges(tokenId, "/datastore/a").size, 0);
    await store.setAcl({ path: "/", authId: tokenId, role: "Admin" });
    assert.deepEqual(sorted(store.privileges(tokenId, "/datastore/a")), sorted(ROLES.DatastorePowerUser));
    assert.equal(store.privileges(tokenId, "/datastore/b").size, 0);
    assert.equal(store.privileges(tokenId, "/").size, 0);
    await store.setAcl({ path: "/datastore/a", authId: tokenId, role: "DatastoreBackup" });
    assert.deepEqual(sorted(store.privileges(tokenId, "/datastore/a/ns")), ["Datastore.Backup"]);
    assert.equal(store.can(tokenId, "/datastore/a", "Datastore.Prune"), false);
    assert.equal(store.can("node", "/datastore/a", "Datastore.Prune"), true);
  });

  void it("refuses disabled, expired and revoked tokens", async () => {
    const { store, clock } = await openStore();
    await store.addUser("alice", "password");
    await store.setAcl({ path: "/", authId: "alice", role: "Admin" });
    const t = await store.addToken("alice", "t", { expire: nowSec(clock) + 5 });
    await store.setAcl({ path: "/", authId: t.tokenId, role: "DatastoreAudit" });
    assert.equal(await store.authenticate(t.tokenId, t.secret), t.tokenId);
    clock.t += 5_000;
    assert.equal(await store.authenticate(t.tokenId, t.secret), undefined);
    assert.equal(store.privileges(t.tokenId, "/").size, 0);
    await store.updateToken(t.tokenId, { expire: 0 });
    assert.equal(await store.authenticate(t.tokenId, t.secret), t.tokenId);

    await store.updateToken(t.tokenId, { enable: false });
    assert.equal(await store.authenticate(t.tokenId, t.secret), undefined);
    assert.equal(store.listTokens("alice")[0]?.enable, false);
    await store.updateToken(t.tokenId, { enable: true });
    assert.equal(await store.authenticate(t.tokenId, t.secret), t.tokenId);
    assert.equal(cacheOf(store).size, 1);

    const disabled = await store.addToken("alice", "off", { enable: false });
    assert.equal(await store.authenticate(disabled.tokenId, disabled.secret), undefined);

    await store.removeToken(t.tokenId);
    assert.equal(cacheOf(store).size, 0);
    assert.equal(await store.authenticate(t.tokenId, t.secret), undefined);
    assert.ok(!store.listAcl().some((a) => a.authId === t.tokenId));
    await assert.rejects(store.removeToken(t.tokenId), isCode("not-found"));
    // a token of the same name gets a new secret; the old one stays refused
    const again = await store.addToken("alice", "t");
    assert.notEqual(again.secret, t.secret);
    assert.equal(await store.authenticate(t.tokenId, t.secret), undefined);
    assert.equal(await store.authenticate(again.tokenId, again.secret), again.tokenId);
    assert.equal(store.privileges(again.tokenId, "/").size, 0);
  });

  void it("keeps a user's tokens working when the user's password changes", async () => {
    const { store } = await openStore();
    await store.addUser("alice", "password");
    const t = await store.addToken("alice", "t");
    await store.setPassword("alice", "password2");
    assert.equal(await store.authenticate(t.tokenId, t.secret), t.tokenId);
  });
});

void describe("persistence", () => {
  void it("survives reopening and never stores a secret", async () => {
    const { store, dir } = await openStore();
    const password = "Pl41n-Password-Marker";
    await store.addUser("alice", password, { comment: "first", expire: 4_000_000_000 });
    await store.addUser("bob", "bobs-password", { enable: false });
    const t = await store.addToken("alice", "nodes", { comment: "cluster", expire: 4_000_000_001 });
    await store.setAcl({ path: "/datastore/s1", authId: "alice", role: "DatastoreAdmin" });
    await store.setAcl({ path: "/datastore/s1/ns", authId: t.tokenId, role: "DatastoreBackup", propagate: false });

    const { store: again } = await openStore(dir);
    assert.deepEqual(again.listUsers(), store.listUsers());
    assert.deepEqual(again.listTokens(), store.listTokens());
    assert.deepEqual(again.listAcl(), store.listAcl());
    assert.equal(await again.authenticate("alice", password), "alice");
    assert.equal(await again.authenticate(t.tokenId, t.secret), t.tokenId);
    assert.equal(await again.authenticate("bob", "bobs-password"), undefined);
    assert.deepEqual(sorted(again.privileges(t.tokenId, "/datastore/s1/ns")), ["Datastore.Backup"]);

    for (const name of ["users.json", "tokens.json", "acl.json"]) {
      const file = path.join(dir, name);
      const text = fs.readFileSync(file, "utf8");
      for (const secret of [password, "bobs-password", t.secret]) assert.ok(!text.includes(secret), `${name} holds a secret`);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600, name);
    }
    assert.deepEqual(
      fs.readdirSync(dir).sort(),
      ["acl.json", "tokens.json", "users.json"],
      "no temp files are left behind",
    );
  });

  void it("names the file that is malformed", async () => {
    const cases: [string, string, RegExp][] = [
      ["users.json", "{not json", /users\.json is not a valid users file: it is not JSON/],
      ["users.json", `{"version":1,"users":[],"extra":1}`, /users\.json is not a valid users file/],
      ["users.json", `{"version":2,"users":[]}`, /users\.json.*version/],
      [
        "users.json",
        `{"version":1,"users":[{"name":"a","password":{"kdf":"scrypt","n":1000,"r":8,"p":1,"salt":"AA==","hash":"AA=="},"enable":true}]}`,
        /users\.json.*power of two/,
      ],
      ["tokens.json", `{"version":1,"tokens":[{"tokenId":"a","hash":"00","enable":true}]}`, /tokens\.json is not a valid tokens file: tokens\.0\./],
      ["acl.json", `{"version":1,"acl":[{"path":"/datastore/../x","authId":"a","role":"Admin","propagate":true}]}`, /acl\.json is not a valid ACL file: acl\.0\.path/],
      ["acl.json", `{"version":1,"acl":[{"path":"/","authId":"a","role":"Root","propagate":true}]}`, /acl\.json.*acl\.0\.role/],
      ["acl.json", `[]`, /acl\.json/],
    ];
    for (const [name, content, re] of cases) {
      const dir = tmpDir();
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, name), content);
      await assert.rejects(openStore(dir), isCode("invalid", re), `${name}: ${content}`);
    }
    const dir = tmpDir();
    const { store } = await openStore(dir);
    await store.addUser("a", "password");
    const file = path.join(dir, "users.json");
    const doc = JSON.parse(fs.readFileSync(file, "utf8")) as { users: unknown[] };
    doc.users.push(doc.users[0]);
    fs.writeFileSync(file, JSON.stringify(doc));
    await assert.rejects(openStore(dir), isCode("invalid", /users\.json lists user "a" twice/));
  });

  void it("drops tokens and ACL entries whose owner is gone", async () => {
    const { store, dir } = await openStore();
    await store.addUser("a", "password");
    await store.addUser("b", "password");
    const t = await store.addToken("b", "t");
    await store.setAcl({ path: "/", authId: "b", role: "Admin" });
    await store.setAcl({ path: "/", authId: t.tokenId, role: "Admin" });
    await store.setAcl({ path: "/", authId: "a", role: "DatastoreAudit" });
    // as if removing b had stopped right after users.json was written
    const file = path.join(dir, "users.json");
    const doc = JSON.parse(fs.readFileSync(file, "utf8")) as { users: { name: string }[] };
    doc.users = doc.users.filter((u) => u.name !== "b");
    fs.writeFileSync(file, JSON.stringify(doc));
    const { store: again } = await openStore(dir);
    assert.deepEqual(again.listTokens(), []);
    assert.deepEqual(again.listAcl().map((e) => e.authId), ["a"]);
    const tokensOnDisk = JSON.parse(fs.readFileSync(path.join(dir, "tokens.json"), "utf8")) as { tokens: unknown[] };
    assert.deepEqual(tokensOnDisk.tokens, []);
    await again.addUser("b", "password");
    assert.equal(await again.authenticate(t.tokenId, t.secret), undefined);
    assert.equal(again.privileges("b", "/").size, 0);
  });

  void it("keeps memory as it was when a write fails", async () => {
    const { store, dir } = await openStore();
    await store.addUser("a", "password");
    // a non-empty directory in the file's place makes the rename fail
    fs.rmSync(path.join(dir, "users.json"));
    fs.mkdirSync(path.join(dir, "users.json", "x"), { recursive: true });
    await assert.rejects(store.addUser("b", "password"), isCode("io", /users\.json/));
    await assert.rejects(store.setPassword("a", "password2"), isCode("io"));
    assert.deepEqual(store.listUsers().map((u) => u.name), ["a"]);
    assert.equal(await store.authenticate("a", "password"), "a");
    assert.ok(!fs.readdirSync(dir).some((n) => n.includes(".tmp")), "temp file removed");
    // later changes still run
    const t = await store.addToken("a", "t");
    assert.equal(await store.authenticate(t.tokenId, t.secret), t.tokenId);
  });

  void it("applies concurrent changes one after another", async () => {
    const { store, dir } = await openStore();
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.addUser(`u${i}`, "password")));
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.setAcl({ path: `/datastore/s${i}`, authId: `u${i}`, role: "DatastoreAudit" })));
    const { store: again } = await openStore(dir);
    assert.equal(again.listUsers().length, 10);
    assert.equal(again.listAcl().length, 10);
  });
});

void describe("Authorization header", () => {
  void it("parses Basic credentials", () => {
    assert.deepEqual(parseAuthorization(formatAuthorization("alice", "pa:ss wörd")), { authId: "alice", secret: "pa:ss wörd" });
    assert.deepEqual(parseAuthorization(formatAuthorization("node!backup", "abc_-123")), { authId: "node!backup", secret: "abc_-123" });
    const b64 = Buffer.from("alice:pw").toString("base64");
    assert.deepEqual(parseAuthorization(`basic ${b64}`), { authId: "alice", secret: "pw" });
    assert.deepEqual(parseAuthorization(`BASIC  ${b64}`), { authId: "alice", secret: "pw" });
  });

  void it("refuses anything else", () => {
    const enc = (s: string): string => `Basic ${Buffer.from(s).toString("base64")}`;
    for (const bad of [
      undefined,
      "",
      "Basic",
      "Basic ",
      "Bearer abc",
      "Basic !!!!",
      `Digest ${Buffer.from("a:b").toString("base64")}`,
      enc("alice"),
      enc("alice:"),
      enc(":secret"),
      enc("../x:secret"),
      enc("alice!:secret"),
      enc("a!b!c:secret"),
      enc(`alice:${"x".repeat(2000)}`),
    ]) {
      assert.equal(parseAuthorization(bad), undefined, String(bad));
    }
  });
});

void describe("group access", () => {
  void it("knows who owns a group", () => {
    assert.equal(ownsGroup("alice", "alice"), true);
    assert.equal(ownsGroup("alice", "alice!t"), true);
    assert.equal(ownsGroup("alice!t", "alice!t"), true);
    assert.equal(ownsGroup("alice!t", "alice"), false);
    assert.equal(ownsGroup("alice!u", "alice!t"), false);
    assert.equal(ownsGroup("bob", "alice"), false);
    assert.equal(ownsGroup("ali", "alice!t"), false);
  });

  void it("maps privileges and ownership to what may be done", () => {
    const access = (role: RoleName, owned: boolean): string[] =>
      Object.entries(groupAccess(new Set(ROLES[role]), owned))
        .filter(([, v]) => v)
        .map(([k]) => k)
        .sort();
    assert.deepEqual(access("DatastoreBackup", true), ["backup", "list", "notes", "read", "verify"]);
    assert.deepEqual(access("DatastoreBackup", false), []);
    assert.deepEqual(access("DatastorePowerUser", true), ["backup", "list", "notes", "prune", "read", "verify"]);
    assert.deepEqual(access("DatastorePowerUser", false), []);
    assert.deepEqual(access("DatastoreReader", false), ["list", "read", "verify"]);
    assert.deepEqual(access("DatastoreAudit", false), ["list"]);
    assert.deepEqual(access("DatastoreAdmin", false), ["changeOwner", "list", "notes", "prune", "read", "verify"]);
    assert.deepEqual(access("DatastoreAdmin", true), ["backup", "changeOwner", "list", "notes", "prune", "read", "verify"]);
    assert.deepEqual(access("NoAccess", true), []);
  });
});
