import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { randomBytes } from "node:crypto";
import { Datastore } from "../datastore/datastore.ts";
import { lsetxattr, lutimes, mknod } from "../sys/posix.ts";
import { describeTree, isRoot, tempDir } from "../../test/helpers.ts";
import { backup } from "./backup.ts";
import { listArchive, openLocalReader, readArchiveFile, restore } from "./restore.ts";

/** The kernel's binary form of a POSIX ACL (system.posix_acl_*). */
function acl(entries: [tag: number, perm: number, id: number][]): Buffer {
  const b = Buffer.alloc(4 + entries.length * 8);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + i * 8);
    b.writeUInt16LE(perm, 6 + i * 8);
    b.writeUInt32LE(id, 8 + i * 8);
  });
  return b;
}
const NO_ID = 0xffffffff;

function buildTree(src: string): void {
  fs.mkdirSync(path.join(src, "dir/sub"), { recursive: true });
  fs.writeFileSync(path.join(src, "empty"), "");
  fs.writeFileSync(path.join(src, "small.txt"), "hello\n");
  fs.writeFileSync(path.join(src, "dir/big.bin"), randomBytes(5 * 1024 * 1024 + 123));
  // sparse: a hole in the middle
  const fd = fs.openSync(path.join(src, "dir/sparse"), "w");
  fs.writeSync(fd, Buffer.from("start"), 0, 5, 0);
  fs.writeSync(fd, Buffer.from("end"), 0, 3, 9 * 1024 * 1024);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(src, "dir/sub/linked"), "same inode\n");
  fs.linkSync(path.join(src, "dir/sub/linked"), path.join(src, "hardlink"));
  fs.symlinkSync("dir/sub/linked", path.join(src, "symlink"));
  fs.symlinkSync("/nonexistent/target", path.join(src, "dangling"));
  // a name that is not UTF-8
  const odd = Buffer.concat([Buffer.from(src + "/"), Buffer.from([0x66, 0xff, 0xfe, 0x0a, 0x6f])]);
  fs.writeFileSync(odd, "odd name");
  fs.chmodSync(path.join(src, "small.txt"), 0o4751);
  fs.chmodSync(path.join(src, "dir/sub"), 0o1777);
  lsetxattr(path.join(src, "small.txt"), "user.note", Buffer.from([0, 1, 2, 255]));
  lsetxattr(path.join(src, "dir"), "user.dir", Buffer.from("on a directory"));
  lsetxattr(path.join(src, "dir/big.bin"), "system.posix_acl_access", acl([[1, 6, NO_ID], [2, 4, 1234], [4, 4, NO_ID], [0x10, 4, NO_ID], [0x20, 0, NO_ID]]));
  lsetxattr(path.join(src, "dir"), "system.posix_acl_default", acl([[1, 7, NO_ID], [2, 5, 4321], [4, 5, NO_ID], [0x10, 5, NO_ID], [0x20, 5, NO_ID]]));
  mknod(path.join(src, "fifo"), 0o010640, 0n);
  mknod(path.join(src, "socket"), 0o140755, 0n);
  if (isRoot) {
    mknod(path.join(src, "null"), 0o020666, BigInt((1 << 8) | 3));
    mknod(path.join(src, "blk"), 0o060600, BigInt((7 << 8) | 0));
    fs.lchownSync(path.join(src, "small.txt"), 1001, 1002);
    fs.lchownSync(path.join(src, "symlink"), 1003, 1004);
  }
  // odd nanoseconds everywhere, including a symlink's own time and a time before 1970
  let n = 1n;
  for (const p of ["empty", "small.txt", "dir/big.bin", "dir/sparse", "hardlink", "symlink", "fifo", "socket", "dir/sub", "dir", "."]) {
    lutimes(path.join(src, p), 0n, 1_700_000_000_123_456_789n + n++ * 1_000_000_007n);
  }
  lutimes(path.join(src, "dangling"), 0n, -12_345_678_901n);
}

void describe("file archive round trip", () => {
  const tmp = tempDir();
  const src = path.join(tmp.dir, "src");
  let store: Datastore;

  before(async () => {
    fs.mkdirSync(src);
    buildTree(src);
    store = await Datastore.init(path.join(tmp.dir, "repo"));
  });
  after(() => {
    store.close();
    tmp.cleanup();
  });

  void it("restores every type, mode, owner, time, xattr, ACL, link and name exactly", async () => {
    const r = await backup(store, { group: { type: "ct", id: "101" }, sources: [{ archive: "root.tree", source: src }] });
    assert.equal(r.base, null);
    const target = path.join(tmp.dir, "restored");
    await restore(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", target });
    assert.deepEqual(describeTree(target), describeTree(src));
    // holes stay holes
    assert.ok(fs.statSync(path.join(target, "dir/sparse")).blocks * 512 < 1024 * 1024);
  });

  void it("an unchanged file is not read again; a changed one is, and both restore", async () => {
    fs.appendFileSync(path.join(src, "small.txt"), "more\n");
    lutimes(path.join(src, "small.txt"), 0n, 1_800_000_000_000_000_001n);
    const r = await backup(store, { group: { type: "ct", id: "101" }, sources: [{ archive: "root.tree", source: src }] });
    assert.ok(r.base, "second backup is incremental");
    // the 5 MiB file is reused by reference: far less than its size is read and stored
    assert.ok(r.stats.newBytes < 1024 * 1024, `new bytes ${r.stats.newBytes}`);
    assert.ok(r.stats.reusedBytes >= 5 * 1024 * 1024);
    const target = path.join(tmp.dir, "restored2");
    await restore(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", target });
    assert.deepEqual(describeTree(target), describeTree(src));
  });

  void it("restores a single file or subtree with --path and lists entries", async () => {
    const target = path.join(tmp.dir, "partial");
    await restore(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", target, path: "dir/sub" });
    assert.equal(fs.readFileSync(path.join(target, "dir/sub/linked"), "utf8"), "same inode\n");
    assert.equal(fs.existsSync(path.join(target, "small.txt")), false);
    assert.equal(fs.existsSync(path.join(target, "dir/big.bin")), false);
    const names = (await listArchive(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", path: "dir" })).map((e) =>
      e.path.toString(),
    );
    assert.deepEqual(names, ["dir/big.bin", "dir/sparse", "dir/sub"]);
    const one = await listArchive(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", path: "small.txt" });
    assert.equal(one.length, 1);
    assert.equal(one[0]!.size, 11);
  });

  void it("reads one file whole for a download: many chunks, a hole, a hard link; refuses what is not a file or too large", async () => {
    const reader = await openLocalReader(store, [], { type: "ct", id: "101", time: "latest" });
    try {
      for (const p of ["dir/big.bin", "dir/sparse", "small.txt", "empty", "hardlink"]) {
        const { data } = await readArchiveFile(reader, { archive: "root.tree", path: p, maxBytes: 64 << 20 });
        assert.ok(data.equals(fs.readFileSync(path.join(src, p))), p);
      }
      await assert.rejects(readArchiveFile(reader, { archive: "root.tree", path: "dir", maxBytes: 1 << 20 }), /dir in root.tree is a dir, not a file/);
      await assert.rejects(readArchiveFile(reader, { archive: "root.tree", path: "nope", maxBytes: 1 << 20 }), { code: "not-found" });
      await assert.rejects(readArchiveFile(reader, { archive: "root.tree", path: "dir/big.bin", maxBytes: 1 << 20 }), /more than the 1048576 a download takes/);
    } finally {
      await reader.close();
    }
  });

  void it("honours excludes and refuses a path that is not in the archive", async () => {
    await backup(store, {
      group: { type: "host", id: "ex" },
      sources: [{ archive: "x.tree", source: src }],
      excludes: ["*.bin", "dir/sub"],
    });
    const all = await listArchive(store, { snapshot: { type: "host", id: "ex", time: "latest" }, archive: "x.tree", recursive: true });
    const paths = all.map((e) => e.path.toString());
    assert.ok(paths.includes("dir/sparse"));
    assert.ok(!paths.includes("dir/big.bin"));
    assert.ok(!paths.some((p) => p.startsWith("dir/sub")));
    await assert.rejects(
      restore(store, { snapshot: { type: "host", id: "ex", time: "latest" }, archive: "x.tree", target: path.join(tmp.dir, "nope"), path: "dir/big.bin" }),
      /has no entry/,
    );
  });
});

void describe("incremental file archives stay exact over many rounds", () => {
  void it("changed files among many unchanged ones restore exactly each time", async () => {
    const tmp = tempDir();
    try {
      const src = path.join(tmp.dir, "src");
      // many small files share payload chunks, so reused and re-read files interleave
      for (let d = 0; d < 20; d++) {
        fs.mkdirSync(path.join(src, `d${d}`), { recursive: true });
        for (let f = 0; f < 60; f++) {
          fs.writeFileSync(path.join(src, `d${d}/f${f}`), randomBytes(Math.floor(Math.random() * 20000)));
        }
      }
      fs.writeFileSync(path.join(src, "d3/large"), randomBytes(3 * 1024 * 1024));
      const store = await Datastore.init(path.join(tmp.dir, "repo"));
      try {
        for (let round = 0; round < 5; round++) {
          if (round > 0) {
            for (let k = 0; k < 25; k++) {
              const p = path.join(src, `d${Math.floor(Math.random() * 20)}/f${Math.floor(Math.random() * 60)}`);
              fs.writeFileSync(p, randomBytes(Math.floor(Math.random() * 20000)));
            }
            fs.writeFileSync(path.join(src, `d7/new${round}`), randomBytes(1000));
          }
          await backup(store, { group: { type: "ct", id: "7" }, sources: [{ archive: "r.tree", source: src }] });
          const target = path.join(tmp.dir, `out${round}`);
          await restore(store, { snapshot: { type: "ct", id: "7", time: "latest" }, archive: "r.tree", target });
          assert.deepEqual(describeTree(target), describeTree(src), `round ${round}`);
        }
      } finally {
        store.close();
      }
    } finally {
      tmp.cleanup();
    }
  });
});

void describe("--one-file-system", () => {
  void it("keeps a mount point but not what is mounted on it", async (t) => {
    if (!isRoot) {
      t.skip("SKIPPED: mounting a tmpfs needs root");
      return;
    }
    const tmp = tempDir();
    const src = path.join(tmp.dir, "src");
    const mnt = path.join(src, "mnt");
    fs.mkdirSync(mnt, { recursive: true });
    fs.writeFileSync(path.join(src, "here"), "on the source file system");
    const { spawnSync } = await import("node:child_process");
    const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4m", "gorde-test", mnt]);
    if (mount.status !== 0) {
      t.skip(`SKIPPED: cannot mount a tmpfs here: ${mount.stderr.toString().trim()}`);
      tmp.cleanup();
      return;
    }
    const store = await Datastore.init(path.join(tmp.dir, "repo"));
    try {
      fs.writeFileSync(path.join(mnt, "elsewhere"), "on another file system");
      const group = { type: "host", id: "x" } as const;
      await backup(store, { group, sources: [{ archive: "a.tree", source: src }], oneFileSystem: true });
      await backup(store, { group: { type: "host", id: "y" }, sources: [{ archive: "a.tree", source: src }] });
      const one = await listArchive(store, { snapshot: { ...group, time: "latest" }, archive: "a.tree", recursive: true });
      assert.deepEqual(one.map((e) => e.path.toString()), ["here", "mnt"]);
      const all = await listArchive(store, { snapshot: { type: "host", id: "y", time: "latest" }, archive: "a.tree", recursive: true });
      assert.deepEqual(all.map((e) => e.path.toString()), ["here", "mnt", "mnt/elsewhere"]);
    } finally {
      store.close();
      spawnSync("umount", [mnt]);
      tmp.cleanup();
    }
  });
});

