// What a node finds in its data directory at start: damaged guest configurations, and a
// restore or replacement it was killed in. No guest runs here (no QEMU or LXC needed).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import type { GuestConfig } from "../api/guest-config.ts";
import { GordeError } from "../errors.ts";
import { tempDir } from "../../test/helpers.ts";
import { GuestManager } from "./guests.ts";

const dirs: { cleanup(): void }[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.cleanup();
});

function nodeDir(): string {
  const t = tempDir("gorde-guests-");
  dirs.push(t);
  for (const d of ["guests", "images", "rootfs", "run"]) fs.mkdirSync(path.join(t.dir, d));
  return t.dir;
}

function ct(dir: string, id: number, name: string): GuestConfig {
  return { kind: "ct", id, name, memoryMiB: 64, cpus: 1, rootfs: path.join(dir, "rootfs", String(id)), init: "/init", httpPort: 18000 + (id % 1000) };
}

/** A container's configuration and a root file system whose /etc/hostname says `marker`. */
function writeCt(dir: string, c: GuestConfig, marker: string, rootfs = path.join(dir, "rootfs", String(c.id))): void {
  fs.mkdirSync(path.join(rootfs, "etc"), { recursive: true });
  fs.writeFileSync(path.join(rootfs, "etc", "hostname"), marker);
  fs.writeFileSync(path.join(dir, "guests", `${c.id}.json`), JSON.stringify(c));
}

async function open(dir: string, log: string[] = []): Promise<GuestManager> {
  return GuestManager.open({
    dataDir: dir,
    nodeName: "node1",
    repository: () => Promise.reject(new Error("no backup server in this test")),
    log: (l) => log.push(l),
  });
}

const hostname = (dir: string, id: number): string => fs.readFileSync(path.join(dir, "rootfs", String(id), "etc", "hostname"), "utf8");

void describe("GuestManager at start", () => {
  void it("leaves out a guest whose configuration is damaged, keeps its id taken, and starts the others", async () => {
    const dir = nodeDir();
    writeCt(dir, ct(dir, 100, "good"), "good");
    writeCt(dir, ct(dir, 101, "flipped"), "flipped");
    // One digit flipped into a letter: not JSON any more.
    const file = path.join(dir, "guests", "101.json");
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace('"id":101', '"id":1O1'));
    fs.writeFileSync(path.join(dir, "guests", "102.json"), JSON.stringify({ ...ct(dir, 102, "odd"), memoryMiB: -1 }));
    fs.writeFileSync(path.join(dir, "guests", "100.last-backup"), "{cut sh");
    const log: string[] = [];
    const m = await open(dir, log);
    try {
      assert.deepEqual(m.ids(), [100]);
      assert.ok(log.some((l) => /^guest 101 is left out: its configuration \S+101\.json is damaged \(it is not JSON\); restore it from a backup with --force/.test(l)), log.join("\n"));
      assert.ok(log.some((l) => /^guest 102 is left out: .*memoryMiB/.test(l)), log.join("\n"));
      await assert.rejects(m.create({ config: ct(dir, 101, "again") }), /guest id 101 is in use on node node1\./);
      assert.throws(() => m.refuseOverwrite(101, false), (e: GordeError) => e.code === "exists" && /guest 101's configuration on node node1 is damaged \(it is not JSON\); give --force/.test(e.message));
      m.refuseOverwrite(101, true);
      // The damaged file is not touched.
      assert.match(fs.readFileSync(file, "utf8"), /"id":1O1/);
    } finally {
      await m.close();
    }
  });

  void it("undoes a replacement killed before the restored data was in place: the old guest is whole", async () => {
    const dir = nodeDir();
    const old = ct(dir, 100, "old");
    writeCt(dir, old, "old data");
    // Killed after the old root file system was moved aside, before the new one was moved in.
    fs.writeFileSync(path.join(dir, "guests", "100.replacing"), JSON.stringify(ct(dir, 100, "new")));
    fs.mkdirSync(path.join(dir, "images", ".replaced-100"));
    fs.renameSync(path.join(dir, "rootfs", "100"), path.join(dir, "images", ".replaced-100", "rootfs"));
    fs.mkdirSync(path.join(dir, "images", ".restore-100-4242", "rootfs"), { recursive: true });
    const log: string[] = [];
    const m = await open(dir, log);
    try {
      assert.equal(m.config(100).name, "old");
      assert.equal(hostname(dir, 100), "old data");
      assert.deepEqual(fs.readdirSync(path.join(dir, "images")), [], "the staging and the moved-aside data are gone");
      assert.ok(!fs.existsSync(path.join(dir, "guests", "100.replacing")));
      assert.ok(log.some((l) => /undid its replacement/.test(l)));
    } finally {
      await m.close();
    }
  });

  void it("finishes a replacement killed after the restored data was in place: the new guest is whole", async () => {
    const dir = nodeDir();
    writeCt(dir, ct(dir, 100, "old"), "old data");
    fs.writeFileSync(path.join(dir, "guests", "100.replacing"), JSON.stringify(ct(dir, 100, "new")));
    fs.mkdirSync(path.join(dir, "images", ".replaced-100"));
    fs.renameSync(path.join(dir, "rootfs", "100"), path.join(dir, "images", ".replaced-100", "rootfs"));
    // The new root file system moved in; the configuration not yet saved.
    fs.mkdirSync(path.join(dir, "rootfs", "100", "etc"), { recursive: true });
    fs.writeFileSync(path.join(dir, "rootfs", "100", "etc", "hostname"), "new data");
    const m = await open(dir);
    try {
      assert.equal(m.config(100).name, "new");
      assert.equal(hostname(dir, 100), "new data");
      assert.deepEqual(fs.readdirSync(path.join(dir, "images")), []);
      assert.ok(!fs.existsSync(path.join(dir, "guests", "100.replacing")));
    } finally {
      await m.close();
    }
  });

  void it("a replacement killed before anything moved leaves the old guest as it was", async () => {
    const dir = nodeDir();
    writeCt(dir, ct(dir, 100, "old"), "old data");
    fs.writeFileSync(path.join(dir, "guests", "100.replacing"), JSON.stringify(ct(dir, 100, "new")));
    const m = await open(dir);
    try {
      assert.equal(m.config(100).name, "old");
      assert.equal(hostname(dir, 100), "old data");
      assert.ok(!fs.existsSync(path.join(dir, "guests", "100.replacing")));
    } finally {
      await m.close();
    }
  });
});
