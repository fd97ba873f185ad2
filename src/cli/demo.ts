// `gorde demo`: the story on this machine, step by step, checking each step.
// Today it is the backup engine's story on a local datastore: a disk image and a
// directory backed up twice (the second incremental), dedup shown, retention applied,
// garbage collected, verified and restored bit for bit.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { backup } from "../client/backup.ts";
import { restore } from "../client/restore.ts";
import { Datastore } from "../datastore/datastore.ts";
import { garbageCollect } from "../datastore/gc.ts";
import { computePrune } from "../datastore/prune.ts";
import { verifyAll } from "../datastore/verify.ts";
import { formatSnapshot } from "../format/names.ts";
import { formatBytes } from "./progress-bar.ts";

export interface DemoOptions {
  keep: boolean;
  out(s: string): void;
  signal: AbortSignal;
}

const IMAGE_SIZE = 256 * 1024 * 1024;

export async function runDemo(opts: DemoOptions): Promise<number> {
  const say = (s: string): void => opts.out(s + "\n");
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-demo-"));
  let step = 0;
  const check = (ok: boolean, what: string): void => {
    if (!ok) throw new Error(`demo step failed: ${what}`);
  };
  const title = (s: string): void => say(`\n${++step}. ${s}`);
  try {
    say(`gorde demo — working in ${work}`);
    const img = path.join(work, "vm-100-disk0.raw");
    const tree = path.join(work, "ct-101-rootfs");
    title("Guest data: a raw ext4 disk image and a container root file system");
    makeTree(tree);
    makeImage(img, tree, work);
    say(`   disk image ${formatBytes(IMAGE_SIZE)} (ext4), directory of ${countFiles(tree)} entries`);

    const store = await Datastore.init(path.join(work, "datastore"));
    try {
      const day = 86_400;
      const t0 = Math.floor(Date.now() / 1000) - 4 * day;
      const run = async (time: number) => {
        const vm = await backup(store, { group: { type: "vm", id: "100" }, sources: [{ archive: "disk0.img", source: img }], time, signal: opts.signal });
        const ct = await backup(store, { group: { type: "ct", id: "101" }, sources: [{ archive: "root.tree", source: tree }], time, signal: opts.signal });
        for (const r of [vm, ct]) {
          const s = r.stats;
          say(
            `   ${r.snapshot}: ${formatBytes(s.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s — ` +
              `new ${formatBytes(s.newBytes)} (${formatBytes(s.storedBytes)} after compression), reused ${formatBytes(s.reusedBytes)}` +
              (r.base ? `, incremental from ${r.base.split("/").at(-1)}` : ", full"),
          );
        }
        return [vm, ct] as const;
      };

      title("First backup: full");
      const [vm1] = await run(t0);
      check(vm1.base === null, "the first backup is full");

      title("The guests change: 200 scattered 4 KiB writes to the disk, a few files edited");
      scatterWrites(img, 200);
      editFiles(tree, 5);

      title("Second backup: incremental, only changed chunks are stored");
      const [vm2, ct2] = await run(t0 + day);
      check(vm2.base !== null && ct2.base !== null, "the second backup is incremental");
      check(vm2.stats.newBytes < IMAGE_SIZE / 4, "an incremental image backup stores a small part of the image");

      title("Three more days of backups");
      for (let d = 2; d <= 4; d++) {
        scatterWrites(img, 50);
        editFiles(tree, 2);
        await run(t0 + d * day);
      }

      title("Retention: keep-last 3 (PBS semantics)");
      for (const g of [{ type: "vm", id: "100" }, { type: "ct", id: "101" }] as const) {
        const plan = computePrune(await store.listSnapshots([], g), { keepLast: 3 });
        for (const p of plan) {
          say(`   ${formatSnapshot(p.snapshot)}  ${p.action}`);
          if (p.action === "remove") await store.forget(p.snapshot);
        }
        check((await store.listSnapshots([], g)).length === 3, "three snapshots remain");
      }

      title("Garbage collection: chunks no snapshot uses any more are removed");
      const gc = await garbageCollect(store, { cutoffMs: 0 });
      say(
        `   removed ${gc.removedChunks} chunks (${formatBytes(gc.removedBytes)}); ` +
          `${formatBytes(gc.logicalBytes)} of snapshots stored in ${formatBytes(gc.keptBytes)}: dedup factor ${gc.dedupFactor.toFixed(1)}`,
      );
      check(gc.missingChunks === 0, "no chunk is missing");

      title("Verify: CRC and digest of every chunk");
      const v = await verifyAll(store);
      say(`   ${v.snapshots.length} snapshots, ${v.chunksChecked} chunks checked: ${v.ok ? "all good" : "DAMAGE"}`);
      check(v.ok, "verify finds no damage");

      title("Restore the newest snapshots and compare with the originals");
      const rimg = path.join(work, "restored.raw");
      const rtree = path.join(work, "restored-rootfs");
      const r1 = await restore(store, { snapshot: { type: "vm", id: "100", time: "latest" }, archive: "disk0.img", target: rimg });
      const r2 = await restore(store, { snapshot: { type: "ct", id: "101", time: "latest" }, archive: "root.tree", target: rtree });
      const same = hashFile(rimg) === hashFile(img);
      say(`   disk image: ${formatBytes(r1.bytes)} in ${(r1.durationMs / 1000).toFixed(2)} s, ${same ? "identical" : "DIFFERENT"}`);
      check(same, "the restored image is identical");
      const treeSame = hashTree(rtree) === hashTree(tree);
      say(`   directory: ${r2.entries} entries in ${(r2.durationMs / 1000).toFixed(2)} s, ${treeSame ? "identical" : "DIFFERENT"}`);
      check(treeSame, "the restored directory is identical");
    } finally {
      store.close();
    }
    say("\ndemo finished: every step worked");
    if (opts.keep) {
      say(`--keep: the datastore stays at ${work}/datastore until Ctrl-C`);
      await new Promise<void>((resolve) => opts.signal.addEventListener("abort", () => resolve(), { once: true }));
    }
    return 0;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function makeTree(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const src = "/usr/share/doc";
  if (fs.existsSync(src)) fs.cpSync(src, path.join(dir, "usr/share/doc"), { recursive: true, verbatimSymlinks: true });
  fs.mkdirSync(path.join(dir, "srv/www"), { recursive: true });
  fs.mkdirSync(path.join(dir, "etc"), { recursive: true });
  fs.writeFileSync(path.join(dir, "etc/hostname"), "ct101\n");
  fs.writeFileSync(path.join(dir, "srv/www/index.html"), "<p>counter: 0</p>\n");
  fs.writeFileSync(path.join(dir, "srv/www/blob.bin"), randomBytes(8 * 1024 * 1024));
}

function makeImage(img: string, content: string, work: string): void {
  fs.writeFileSync(img, "");
  fs.truncateSync(img, IMAGE_SIZE);
  try {
    execFileSync("mkfs.ext4", ["-q", "-F", "-d", content, img], { stdio: "ignore" });
  } catch {
    // No mkfs.ext4: fill part of the image with the tree's bytes instead.
    const fd = fs.openSync(img, "r+");
    let pos = 0;
    for (const f of fs.readdirSync(content, { recursive: true, encoding: "utf8" })) {
      const p = path.join(content, f);
      if (!fs.lstatSync(p).isFile() || pos > IMAGE_SIZE / 2) continue;
      const data = fs.readFileSync(p);
      fs.writeSync(fd, data, 0, data.length, pos);
      pos += data.length;
    }
    fs.closeSync(fd);
    void work;
  }
}

function scatterWrites(img: string, n: number): void {
  const fd = fs.openSync(img, "r+");
  for (let i = 0; i < n; i++) {
    const block = Math.floor(Math.random() * (IMAGE_SIZE / 4096));
    fs.writeSync(fd, randomBytes(4096), 0, 4096, block * 4096);
  }
  fs.closeSync(fd);
}

function editFiles(tree: string, n: number): void {
  const page = path.join(tree, "srv/www/index.html");
  const count = Number(/counter: (\d+)/.exec(fs.readFileSync(page, "utf8"))?.[1] ?? 0) + 1;
  fs.writeFileSync(page, `<p>counter: ${count}</p>\n`);
  for (let i = 1; i < n; i++) fs.writeFileSync(path.join(tree, `srv/www/note-${count}-${i}.txt`), `note ${count}/${i}\n`);
}

function countFiles(dir: string): number {
  return fs.readdirSync(dir, { recursive: true }).length;
}

function hashFile(file: string): string {
  const h = createHash("sha256");
  const fd = fs.openSync(file, "r");
  const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
  let n: number;
  let pos = 0;
  while ((n = fs.readSync(fd, buf, 0, buf.length, pos)) > 0) {
    h.update(buf.subarray(0, n));
    pos += n;
  }
  fs.closeSync(fd);
  return h.digest("hex");
}

/** Names, types, modes, times and contents of a tree, as one digest. */
function hashTree(root: string): string {
  const h = createHash("sha256");
  for (const rel of fs.readdirSync(root, { recursive: true, encoding: "utf8" }).sort()) {
    const p = path.join(root, rel);
    const st = fs.lstatSync(p, { bigint: true });
    h.update(`${rel}\0${st.mode}\0${st.mtimeNs}\0${st.isDirectory() ? "" : st.size}\0`);
    if (st.isFile()) h.update(fs.readFileSync(p));
    if (st.isSymbolicLink()) h.update(fs.readlinkSync(p));
  }
  return h.digest("hex");
}
