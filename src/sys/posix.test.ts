import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { SCAN_FIELDS, dataExtents, flock, lgetxattr, llistxattr, lsetxattr, lutimes, mknod, nativePath, scanDir, syncfs } from "./posix.ts";
import type { PathLike, SysError } from "./posix.ts";

let dir = "";
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-posix-"));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const isRoot = process.getuid?.() === 0;

/** Runs fn and returns the error it throws, failing the test if it does not throw. */
function thrown(fn: () => unknown): SysError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof Error);
    return err as SysError;
  }
  assert.fail("expected an error");
}

function makeFile(name: string, content = ""): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, content);
  return p;
}

/** Encodes a Linux dev_t the way glibc's makedev does. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n) | ((ma & ~0xfffn) << 32n);
}

function hasUserXattrs(p: PathLike): boolean {
  try {
    lsetxattr(p, "user.gorde.probe", Buffer.from("x"));
    return true;
  } catch (err) {
    if ((err as SysError).code === "ENOTSUP") return false;
    throw err;
  }
}

void test("user xattrs round trip with binary values and raw names", (t) => {
  const file = makeFile("xattr-file");
  if (!hasUserXattrs(file)) return t.skip(`the filesystem of ${dir} does not support user xattrs (ENOTSUP)`);

  const value = Buffer.from([0, 1, 2, 0, 0xff, 0, 0x80]);
  lsetxattr(file, "user.gorde.bin", value);
  assert.deepEqual(lgetxattr(file, "user.gorde.bin"), value);
  assert.deepEqual(lgetxattr(Buffer.from(file), Buffer.from("user.gorde.bin")), value);

  lsetxattr(file, "user.gorde.empty", Buffer.alloc(0));
  assert.equal(lgetxattr(file, "user.gorde.empty").length, 0);

  // Replacing keeps one attribute with the new value.
  lsetxattr(file, "user.gorde.bin", Buffer.from("second"));
  assert.equal(lgetxattr(file, "user.gorde.bin").toString(), "second");

  // A name that is not valid UTF-8 comes back as the same bytes.
  const rawName = Buffer.concat([Buffer.from("user.gorde.raw-"), Buffer.from([0xff, 0xfe, 0xc3])]);
  lsetxattr(file, rawName, Buffer.from("raw"));
  const names = llistxattr(file);
  assert.ok(names.every((n) => Buffer.isBuffer(n)));
  assert.ok(names.some((n) => n.equals(rawName)), "raw name listed byte for byte");
  assert.deepEqual(
    names.map((n) => n.toString("latin1")).filter((n) => n.startsWith("user.gorde.")).sort(),
    ["user.gorde.bin", "user.gorde.empty", "user.gorde.probe", rawName.toString("latin1")].sort(),
  );
  assert.equal(lgetxattr(file, rawName).toString(), "raw");

  const missing = thrown(() => lgetxattr(file, "user.gorde.absent"));
  assert.equal(missing.code, "ENODATA");
  assert.equal(missing.syscall, "lgetxattr");
});

void test("xattr calls act on a symlink itself, not its target", (t) => {
  const target = makeFile("xattr-target");
  if (!hasUserXattrs(target)) return t.skip(`the filesystem of ${dir} does not support user xattrs (ENOTSUP)`);
  lsetxattr(target, "user.gorde.on-target", Buffer.from("t"));
  const link = path.join(dir, "xattr-link");
  fs.symlinkSync(target, link);

  // Linux refuses user.* attributes on symlinks.
  const err = thrown(() => lsetxattr(link, "user.gorde.on-link", Buffer.from("l")));
  assert.equal(err.code, "EPERM");
  assert.equal(err.syscall, "lsetxattr");
  assert.equal(err.path, link);

  assert.ok(!llistxattr(link).some((n) => n.toString() === "user.gorde.on-target"));
  assert.equal(thrown(() => lgetxattr(link, "user.gorde.on-target")).code, "ENODATA");
  assert.equal(lgetxattr(target, "user.gorde.on-target").toString(), "t");
});

void test("large xattr values are read in full", (t) => {
  // ext4 without ea_inode keeps values within one block, so fall back to tmpfs for the large case.
  const value = Buffer.alloc(20000);
  for (let i = 0; i < value.length; i++) value[i] = (i * 7) & 0xff;
  const places = [dir, "/dev/shm"];
  for (const place of places) {
    if (!fs.existsSync(place)) continue;
    const sub = fs.mkdtempSync(path.join(place, "gorde-posix-large-"));
    try {
      const file = path.join(sub, "f");
      fs.writeFileSync(file, "");
      try {
        lsetxattr(file, "user.gorde.large", value);
      } catch (err) {
        const code = (err as SysError).code;
        if (code === "ENOSPC" || code === "E2BIG" || code === "ENOTSUP") continue;
        throw err;
      }
      assert.deepEqual(lgetxattr(file, "user.gorde.large"), value);
      return;
    } finally {
      fs.rmSync(sub, { recursive: true, force: true });
    }
  }
  t.skip(`no filesystem among ${places.join(", ")} accepts a ${value.length}-byte xattr`);
});

/** Encodes a POSIX ACL in the kernel's xattr format (version 2, little endian). */
function aclXattr(entries: { tag: number; perm: number; id?: number }[]): Buffer {
  const buf = Buffer.alloc(4 + 8 * entries.length);
  buf.writeUInt32LE(2, 0);
  entries.forEach((e, i) => {
    const at = 4 + 8 * i;
    buf.writeUInt16LE(e.tag, at);
    buf.writeUInt16LE(e.perm, at + 2);
    buf.writeUInt32LE(e.id ?? 0xffffffff, at + 4); // entries without an id carry ACL_UNDEFINED_ID
  });
  return buf;
}

const ACL_USER_OBJ = 0x01;
const ACL_USER = 0x02;
const ACL_GROUP_OBJ = 0x04;
const ACL_MASK = 0x10;
const ACL_OTHER = 0x20;
const R = 4;
const W = 2;
const X = 1;

void test("POSIX ACLs round trip through their system.posix_acl_* xattrs", (t) => {
  const file = makeFile("acl-file");
  const access = aclXattr([
    { tag: ACL_USER_OBJ, perm: R | W },
    { tag: ACL_USER, perm: R, id: 1234 },
    { tag: ACL_GROUP_OBJ, perm: R },
    { tag: ACL_MASK, perm: R },
    { tag: ACL_OTHER, perm: 0 },
  ]);
  try {
    lsetxattr(file, "system.posix_acl_access", access);
  } catch (err) {
    if ((err as SysError).code === "ENOTSUP") return t.skip(`the filesystem of ${dir} has no POSIX ACLs (ENOTSUP)`);
    throw err;
  }
  assert.deepEqual(lgetxattr(file, "system.posix_acl_access"), access);
  assert.ok(llistxattr(file).some((n) => n.toString() === "system.posix_acl_access"));
  // The kernel keeps the mode in step: group bits show the mask.
  assert.equal(fs.lstatSync(file).mode & 0o777, 0o640);

  const sub = path.join(dir, "acl-dir");
  fs.mkdirSync(sub);
  const defaults = aclXattr([
    { tag: ACL_USER_OBJ, perm: R | W | X },
    { tag: ACL_USER, perm: R | X, id: 1234 },
    { tag: ACL_GROUP_OBJ, perm: R | X },
    { tag: ACL_MASK, perm: R | X },
    { tag: ACL_OTHER, perm: 0 },
  ]);
  lsetxattr(sub, "system.posix_acl_default", defaults);
  assert.deepEqual(lgetxattr(sub, "system.posix_acl_default"), defaults);

  const getfacl = spawnSync("getfacl", ["--numeric", "--omit-header", file], { encoding: "utf8" });
  if (getfacl.error === undefined && getfacl.status === 0) {
    assert.match(getfacl.stdout, /^user:1234:r--$/m);
  } else {
    t.diagnostic("getfacl is not installed; checked the ACL through its xattr only");
  }
});

void test("mknod creates fifos and sockets", () => {
  const fifo = path.join(dir, "fifo");
  mknod(fifo, fs.constants.S_IFIFO | 0o640, 0n);
  const fifoStat = fs.lstatSync(fifo);
  assert.ok(fifoStat.isFIFO());
  assert.equal(fifoStat.mode & 0o7777, 0o640 & ~process.umask());

  const sock = path.join(dir, "sock");
  mknod(sock, fs.constants.S_IFSOCK | 0o755, 0n);
  assert.ok(fs.lstatSync(sock).isSocket());

  assert.equal(thrown(() => mknod(fifo, fs.constants.S_IFIFO | 0o600, 0n)).code, "EEXIST");
});

void test("mknod creates character and block devices", (t) => {
  if (!isRoot) return t.skip("creating device nodes needs root");
  const nul = path.join(dir, "null");
  const nullDev = makedev(1, 3);
  mknod(nul, fs.constants.S_IFCHR | 0o666, nullDev);
  const st = fs.lstatSync(nul, { bigint: true });
  assert.ok(st.isCharacterDevice());
  assert.equal(st.rdev, nullDev);
  assert.equal(st.rdev, fs.statSync("/dev/null", { bigint: true }).rdev);

  const blk = path.join(dir, "loop");
  const big = makedev(259, 300000); // exercises the high major and minor bits
  mknod(blk, fs.constants.S_IFBLK | 0o600, big);
  const blkStat = fs.lstatSync(blk, { bigint: true });
  assert.ok(blkStat.isBlockDevice());
  assert.equal(blkStat.rdev, big);
});

void test("lutimes sets nanosecond times, on a symlink itself", () => {
  const file = makeFile("times-file");
  lutimes(file, 1234567890123456789n, -1234567890123456789n);
  let st = fs.lstatSync(file, { bigint: true });
  assert.equal(st.atimeNs, 1234567890123456789n);
  assert.equal(st.mtimeNs, -1234567890123456789n);

  // Just before the epoch: seconds -2, nanoseconds 999999999.
  lutimes(file, -1000000001n, -1n);
  st = fs.lstatSync(file, { bigint: true });
  assert.equal(st.atimeNs, -1000000001n);
  assert.equal(st.mtimeNs, -1n);

  const target = makeFile("times-target");
  lutimes(target, 1000000000000000001n, 1000000000000000001n);
  const link = path.join(dir, "times-link");
  fs.symlinkSync(target, link);
  lutimes(link, 1500000000987654321n, 1600000000123456789n);
  const linkStat = fs.lstatSync(link, { bigint: true });
  assert.ok(linkStat.isSymbolicLink());
  assert.equal(linkStat.atimeNs, 1500000000987654321n);
  assert.equal(linkStat.mtimeNs, 1600000000123456789n);
  const targetStat = fs.statSync(link, { bigint: true });
  assert.equal(targetStat.atimeNs, 1000000000000000001n);
  assert.equal(targetStat.mtimeNs, 1000000000000000001n);

  assert.throws(() => lutimes(file, 1n << 64n, 0n), { code: "ERR_OUT_OF_RANGE" });
});

void test("paths that are not valid UTF-8 work as Buffers", (t) => {
  const raw = Buffer.concat([Buffer.from(dir + "/bad-"), Buffer.from([0xff, 0x80]), Buffer.from(".bin")]);
  fs.writeFileSync(raw, "data");
  lutimes(raw, 42000000007n, 43000000009n);
  const st = fs.lstatSync(raw, { bigint: true });
  assert.equal(st.mtimeNs, 43000000009n);
  assert.equal(st.atimeNs, 42000000007n);
  assert.ok(fs.readdirSync(dir, { encoding: "buffer" }).some((n) => n.equals(raw.subarray(dir.length + 1))));

  if (!hasUserXattrs(raw)) return t.skip(`the filesystem of ${dir} does not support user xattrs (ENOTSUP)`);
  lsetxattr(raw, "user.gorde.k", Buffer.from([0]));
  assert.ok(llistxattr(raw).some((n) => n.toString() === "user.gorde.k"));
  assert.deepEqual(lgetxattr(raw, "user.gorde.k"), Buffer.from([0]));

  // The error path is a lossy string.
  const missing = Buffer.concat([raw, Buffer.from("-missing")]);
  const err = thrown(() => lsetxattr(missing, "user.gorde.k", Buffer.from("v")));
  assert.equal(err.code, "ENOENT");
  assert.equal(err.path, missing.toString());
});

/** Runs a child node that tries the lock on file without waiting and prints the result. */
function childTryLock(file: string, op: "sh" | "ex"): string {
  const code = `
    const native = require(${JSON.stringify(nativePath)});
    const fd = require("node:fs").openSync(${JSON.stringify(file)}, "r");
    process.stdout.write(String(native.flock(fd, ${JSON.stringify(op)}, false)));`;
  const r = spawnSync(process.execPath, ["-e", code], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

void test("flock excludes other processes and is released on unlock", () => {
  const file = makeFile("lock");
  const fd = fs.openSync(file, "r");
  try {
    assert.equal(flock(fd, "ex", false), true);
    assert.equal(childTryLock(file, "ex"), "false");
    assert.equal(childTryLock(file, "sh"), "false");

    // Locks belong to the open file, so a second open in this process also conflicts.
    const fd2 = fs.openSync(file, "r");
    try {
      assert.equal(flock(fd2, "ex", false), false);
    } finally {
      fs.closeSync(fd2);
    }

    assert.equal(flock(fd, "sh", false), true); // downgrade
    assert.equal(childTryLock(file, "sh"), "true");
    assert.equal(childTryLock(file, "ex"), "false");

    assert.equal(flock(fd, "un", false), true);
    assert.equal(childTryLock(file, "ex"), "true");
    assert.equal(flock(fd, "ex", true), true);
  } finally {
    fs.closeSync(fd);
  }
});

void test("a lock held by a killed process is released", async () => {
  const file = makeFile("lock-killed");
  const code = `
    const native = require(${JSON.stringify(nativePath)});
    const fd = require("node:fs").openSync(${JSON.stringify(file)}, "r");
    native.flock(fd, "ex", true);
    process.stdout.write("locked\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = once(child, "exit");
  try {
    const [chunk] = (await once(child.stdout, "data")) as [Buffer];
    assert.equal(chunk.toString(), "locked\n");

    const fd = fs.openSync(file, "r");
    try {
      assert.equal(flock(fd, "ex", false), false);
      child.kill("SIGKILL");
      const [, signal] = (await exited) as [number | null, NodeJS.Signals | null];
      assert.equal(signal, "SIGKILL");
      assert.equal(flock(fd, "ex", false), true);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  }
});

void test("syncfs flushes the filesystem of an open descriptor", () => {
  const fd = fs.openSync(makeFile("sync", "x"), "r");
  try {
    syncfs(fd);
  } finally {
    fs.closeSync(fd);
  }
  const err = thrown(() => syncfs(fd));
  assert.equal(err.code, "EBADF");
  assert.equal(err.syscall, "syncfs");
  assert.equal(err.path, undefined);
});

void test("errors look like Node's fs errors", () => {
  const missing = path.join(dir, "no", "such");
  const err = thrown(() => lsetxattr(missing, "user.x", Buffer.from("v")));
  assert.equal(err.code, "ENOENT");
  assert.equal(err.errno, -2);
  assert.equal(err.syscall, "lsetxattr");
  assert.equal(err.path, missing);
  assert.equal(err.message, `ENOENT: no such file or directory, lsetxattr '${missing}'`);
  // Same shape as an error from fs itself.
  const fsErr = thrown(() => fs.lstatSync(missing));
  assert.equal(err.errno, fsErr.errno);
  assert.equal(err.code, fsErr.code);

  assert.equal(thrown(() => llistxattr(missing)).syscall, "llistxattr");
  assert.equal(thrown(() => lutimes(missing, 0n, 0n)).code, "ENOENT");
  assert.equal(thrown(() => mknod(missing, fs.constants.S_IFIFO | 0o600, 0n)).syscall, "mknod");
  const flockErr = thrown(() => flock(-1, "ex", false));
  assert.equal(flockErr.code, "EBADF");
  assert.equal(flockErr.message, "EBADF: bad file descriptor, flock");

  // Bad arguments are TypeErrors with Node's codes.
  assert.throws(() => lgetxattr("a\0b", "user.x"), { name: "TypeError", code: "ERR_INVALID_ARG_VALUE" });
  assert.throws(() => lgetxattr(42 as unknown as string, "user.x"), { name: "TypeError", code: "ERR_INVALID_ARG_TYPE" });
  assert.throws(() => flock(0, "xx" as "ex", false), { name: "TypeError" });
});

void test("llistxattr gives [] where the filesystem has no xattrs", () => {
  assert.deepEqual(llistxattr("/proc/self/status"), []);
});

void test("scanDir reads a directory and lstats each entry, raw names included", async () => {
  const d = fs.mkdtempSync(path.join(dir, "scan-"));
  fs.writeFileSync(path.join(d, "file"), "12345");
  fs.mkdirSync(path.join(d, "sub"));
  fs.symlinkSync("file", path.join(d, "link"));
  const odd = Buffer.concat([Buffer.from(d + "/"), Buffer.from([0x61, 0xff])]);
  fs.writeFileSync(odd, "");
  const { names, stats } = await scanDir(d);
  assert.equal(stats.length, names.length * SCAN_FIELDS.length);
  const byName = new Map(names.map((n, i) => [n.toString("hex"), i]));
  assert.equal(names.length, 4);
  for (const n of names) {
    const i = byName.get(n.toString("hex"))!;
    const st = fs.lstatSync(Buffer.concat([Buffer.from(d + "/"), n]), { bigint: true });
    const got = Object.fromEntries(SCAN_FIELDS.map((k, j) => [k, stats[i * SCAN_FIELDS.length + j]]));
    assert.equal(got.mode, st.mode);
    assert.equal(got.size, st.size);
    assert.equal(got.mtimeNs, st.mtimeNs);
    assert.equal(got.ctimeNs, st.ctimeNs);
    assert.equal(BigInt.asUintN(64, got.ino!), st.ino);
    assert.equal(got.nlink, st.nlink);
  }
  await assert.rejects(scanDir(path.join(d, "missing")), (e: SysError) => e.code === "ENOENT" && e.syscall === "scandir");
  // a symlink to a directory is not followed
  fs.symlinkSync("sub", path.join(d, "sublink"));
  await assert.rejects(scanDir(path.join(d, "sublink")), (e: SysError) => e.code === "ENOTDIR" || e.code === "ELOOP");
});

void test("dataExtents finds the data of a sparse file", () => {
  const f = path.join(dir, "sparse");
  fs.writeFileSync(f, "");
  fs.truncateSync(f, 64 * 1024 * 1024);
  const fd = fs.openSync(f, "r+");
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 16 * 1024 * 1024);
  const ext = dataExtents(fd, 64 * 1024 * 1024);
  fs.closeSync(fd);
  const covered = ext.reduce((n, [a, b]) => n + b - a, 0);
  assert.ok(ext.some(([a, b]) => a <= 16 * 1024 * 1024 && b >= 16 * 1024 * 1024 + 4096), JSON.stringify(ext));
  assert.ok(covered < 8 * 1024 * 1024, `only the written part is data (${covered} bytes)`);
});
