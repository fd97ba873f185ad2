// One conformance suite for every Repository (restic's shared backend tests, hono's router
// suite): a datastore directory on this machine and a datastore behind a `gorde server` on
// 127.0.0.1 answer every call alike, bad input with errors of the same code and meaning.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { runBackup } from "../src/client/backup.ts";
import { LocalRepository } from "../src/client/local-repository.ts";
import { RemoteRepository } from "../src/client/remote.ts";
import type { Repository } from "../src/client/repository.ts";
import { restoreArchive } from "../src/client/restore.ts";
import { Datastore } from "../src/datastore/datastore.ts";
import { GordeError } from "../src/errors.ts";
import { type Group, parseSnapshotRef } from "../src/format/names.ts";
import { describeTree, tempDir } from "./helpers.ts";
import { type ServerProcess, startServerProcess } from "./server-fixture.ts";
import { userBlocks, writeUserImage, writeUserTree } from "./user-data.ts";

const tmp = tempDir("gorde-repository-");
after(() => tmp.cleanup());

const T = Date.parse("2026-11-02T01:00:00Z") / 1000;
const blocks = userBlocks(7);
const img = path.join(tmp.dir, "disk0.raw");
const img2 = path.join(tmp.dir, "disk0-next.raw");
const tree = path.join(tmp.dir, "rootfs");
writeUserImage(img, blocks);
writeUserImage(img2, blocks, { variant: 5 });
writeUserTree(tree, blocks);

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/** Rejects with a GordeError of `code` whose message matches `meaning`. */
async function refused(p: Promise<unknown>, code: string, meaning: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof GordeError, `a GordeError, not ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, meaning);
    return true;
  });
}

interface Kind {
  name: string;
  open(): Promise<Repository>;
  stop(): Promise<void>;
}

const ADMIN = "repo-suite-pass-1";

function localKind(): Kind {
  const dir = path.join(tmp.dir, "local-store");
  return {
    name: "local datastore",
    async open() {
      if (!fs.existsSync(dir)) (await Datastore.init(dir)).close();
      return LocalRepository.open(dir);
    },
    stop: () => Promise.resolve(),
  };
}

function remoteKind(): Kind {
  let srv: ServerProcess | undefined;
  return {
    name: "gorde server",
    async open() {
      srv ??= await startServerProcess({ stateDir: path.join(tmp.dir, "state"), datastores: { main: path.join(tmp.dir, "remote-store") }, adminPassword: ADMIN });
      return RemoteRepository.connect(srv.url("main"), { secret: ADMIN, fingerprint: srv.fingerprint });
    },
    async stop() {
      await srv?.stop();
    },
  };
}

for (const kind of [localKind(), remoteKind()]) {
  void describe(`Repository: ${kind.name}`, () => {
    let repo: Repository;
    const backup = (group: Group, time: number, sources: { archive: string; source: string }[]) => runBackup({ group, time, sources }, (req) => repo.openBackup(req));

    before(async () => {
      repo = await kind.open();
    });
    after(async () => {
      repo.close();
      await kind.stop();
    });

    void test("a backup is listed, finished, with its archives", async () => {
      const vm = { type: "vm", id: "100" } as const;
      const first = await backup(vm, T, [{ archive: "disk0.img", source: img }]);
      assert.equal(first.snapshot, "vm/100/2026-11-02T01:00:00Z");
      assert.equal(first.base, null);
      const second = await backup(vm, T + 3600, [{ archive: "disk0.img", source: img2 }]);
      assert.equal(second.base, first.snapshot, "the second backup is incremental from the first");
      await backup({ type: "ct", id: "101" }, T, [{ archive: "root.tree", source: tree }]);
      const list = await repo.snapshots([], vm);
      assert.deepEqual(
        list.map((s) => [s.snapshot, s.finished, s.archives.map((a) => a.name)]),
        [
          [first.snapshot, true, ["disk0.img"]],
          [second.snapshot, true, ["disk0.img"]],
        ],
      );
      assert.equal(list[0]!.size, fs.statSync(img).size);
      const all = await repo.snapshots([]);
      assert.deepEqual(all.map((s) => s.snapshot).sort(), [...list.map((s) => s.snapshot), "ct/101/2026-11-02T01:00:00Z"].sort());
    });

    void test("latest names the newest finished snapshot of the group", async () => {
      assert.equal((await repo.snapshot([], "vm/100/latest")).snapshot, "vm/100/2026-11-02T02:00:00Z");
      assert.equal((await repo.snapshot([], "vm/100/2026-11-02T01:00:00Z")).snapshot, "vm/100/2026-11-02T01:00:00Z");
      const reader = await repo.openReader([], "vm/100/latest");
      try {
        assert.equal(reader.name, "vm/100/2026-11-02T02:00:00Z");
      } finally {
        await reader.close();
      }
      await refused(repo.snapshot([], "vm/999/latest"), "not-found", /vm\/999.*no finished snapshot/);
      await refused(repo.snapshot([], "vm/100/2026-11-01T00:00:00Z"), "not-found", /vm\/100\/2026-11-01T00:00:00Z does not exist/);
    });

    void test("notes are written and read back; too long notes are refused", async () => {
      assert.equal(await repo.notes([], "vm/100/latest"), "");
      await repo.setNotes([], "vm/100/latest", "before the kernel upgrade\nsecond line");
      assert.equal(await repo.notes([], "vm/100/2026-11-02T02:00:00Z"), "before the kernel upgrade\nsecond line");
      assert.equal((await repo.snapshot([], "vm/100/latest")).notes, "before the kernel upgrade\nsecond line");
      await refused(repo.setNotes([], "vm/100/latest", "x".repeat(64 * 1024 + 1)), "usage", /64 KiB/);
      await refused(repo.notes([], "vm/100/2026-11-01T00:00:00Z"), "not-found", /does not exist/);
    });

    void test("a protected snapshot cannot be forgotten until unprotected", async () => {
      assert.equal(await repo.setProtected([], "vm/100/latest", true), "vm/100/2026-11-02T02:00:00Z");
      assert.equal((await repo.snapshot([], "vm/100/latest")).protected, true);
      await refused(repo.forget([], "vm/100/latest"), "usage", /vm\/100\/2026-11-02T02:00:00Z is protected/);
      assert.equal((await repo.snapshots([], { type: "vm", id: "100" })).length, 2, "nothing was removed");
      assert.equal(await repo.setProtected([], "vm/100/2026-11-02T02:00:00Z", false), "vm/100/2026-11-02T02:00:00Z");
      assert.equal((await repo.snapshot([], "vm/100/latest")).protected, false);
    });

    void test("forget removes one snapshot and answers its name", async () => {
      assert.equal(await repo.forget([], "vm/100/latest"), "vm/100/2026-11-02T02:00:00Z");
      assert.deepEqual(
        (await repo.snapshots([], { type: "vm", id: "100" })).map((s) => s.snapshot),
        ["vm/100/2026-11-02T01:00:00Z"],
      );
      await refused(repo.forget([], "vm/100/2026-11-02T02:00:00Z"), "not-found", /does not exist/);
    });

    void test("prune keep-last previews, then removes all but the newest", async () => {
      const ct = { type: "ct", id: "101" } as const;
      for (let h = 1; h <= 3; h++) await backup(ct, T + h * 3600, [{ archive: "root.tree", source: tree }]);
      const names = (await repo.snapshots([], ct)).map((s) => s.snapshot);
      assert.equal(names.length, 4);
      const dry = await repo.prune([], ct, { keepLast: 1 }, true);
      assert.deepEqual(dry.plan, [...names].reverse().map((snapshot, i) => ({ snapshot, action: i === 0 ? "keep" : "remove" })));
      assert.equal((await repo.snapshots([], ct)).length, 4, "a dry run removes nothing");
      const done = await repo.prune([], ct, { keepLast: 1 }, false);
      assert.deepEqual(done.plan, dry.plan);
      assert.deepEqual(done.failed, []);
      assert.deepEqual((await repo.snapshots([], ct)).map((s) => s.snapshot), [names.at(-1)]);
    });

    void test("gc removes the chunks only forgotten snapshots held", async () => {
      const r = await repo.gc({ cutoffSeconds: 0 });
      assert.ok(r.removedChunks > 0, "the forgotten image's own chunks go");
      assert.equal(r.missingChunks, 0);
      assert.ok(r.keptChunks > 0);
      const again = await repo.gc({ cutoffSeconds: 0 });
      assert.equal(again.removedChunks, 0, "a second run finds nothing more");
    });

    void test("verify finds every snapshot sound", async () => {
      const all = await repo.verify([], undefined);
      assert.equal(all.ok, true);
      assert.deepEqual(all.snapshots.map((s) => s.state), ["ok", "ok"]);
      assert.ok(all.chunksChecked > 0);
      const one = await repo.verify([], "vm/100/latest");
      assert.deepEqual(one.snapshots.map((s) => [s.snapshot, s.state]), [["vm/100/2026-11-02T01:00:00Z", "ok"]]);
    });

    void test("status counts the snapshots and chunks stored", async () => {
      const s = await repo.status();
      assert.equal(s.maintenance, "none");
      assert.equal(s.snapshots, (await repo.snapshots([])).filter((x) => x.finished).length);
      assert.equal(s.groups, 2);
      assert.ok(s.chunks > 0 && s.chunkBytes > 0 && s.logicalBytes > s.chunkBytes, "repeated blocks and zeros are stored once");
      assert.ok(s.available > 0 && s.total >= s.used);
    });

    void test("a reader reads archives back bit-exact", async () => {
      const out = path.join(tmp.dir, `restored-${kind.name.replace(/\W/g, "-")}`);
      fs.mkdirSync(out);
      const reader = await repo.openReader([], "vm/100/latest");
      try {
        await restoreArchive(reader, { snapshot: parseSnapshotRef("vm/100/latest"), archive: "disk0.img", target: path.join(out, "disk0.raw") });
      } finally {
        await reader.close();
      }
      assert.equal(sha256(path.join(out, "disk0.raw")), sha256(img));
      const treeReader = await repo.openReader([], "ct/101/latest");
      try {
        await restoreArchive(treeReader, { snapshot: parseSnapshotRef("ct/101/latest"), archive: "root.tree", target: path.join(out, "rootfs") });
      } finally {
        await treeReader.close();
      }
      assert.deepEqual(describeTree(path.join(out, "rootfs")), describeTree(tree));
    });

    void test("bad input is refused alike", async () => {
      await refused(repo.openReader([], "vm/100/2026-11-01T00:00:00Z"), "not-found", /vm\/100\/2026-11-01T00:00:00Z does not exist/);
      await refused(repo.openReader([], "vm/555/latest"), "not-found", /no finished snapshot/);
      await refused(repo.setProtected([], "vm/100/2026-11-01T00:00:00Z", true), "not-found", /does not exist/);
      await refused(repo.snapshot([], "vm/100"), "usage", /not a snapshot/);
      await refused(backup({ type: "vm", id: "100" }, T, [{ archive: "disk0.img", source: img }]), "usage", /newer/);
    });
  });
}
