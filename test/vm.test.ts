// A real demo VM under QEMU: the kit is built from Debian packages (cached), the disk
// holds the service's data, the guest boots and its HTTP service answers from that data
// through a 127.0.0.1 forward.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { buildVmDisk, ensureGuestKit } from "../src/node/guest-kit.ts";
import { backup } from "../src/client/backup.ts";
import { restore } from "../src/client/restore.ts";
import { Datastore } from "../src/datastore/datastore.ts";
import { parseSnapshotRef } from "../src/format/names.ts";
import { RemoteRepository } from "../src/client/remote.ts";
import { backupRunningVm } from "../src/node/guest-backup.ts";
import { openLiveView } from "../src/node/live-view.ts";
import { startServer } from "../src/server/server.ts";
import { openNbdSource } from "../src/node/nbd-source.ts";
import { NbdClient } from "../src/node/nbd-client.ts";
import { QEMU, type VmProcess, startVm } from "../src/node/qemu.ts";
import { dataExtents } from "../src/sys/posix.ts";
import { tempDir } from "./helpers.ts";
import { serviceGet } from "./guest-fixture.ts";
import { freePort } from "./server-fixture.ts";

const haveQemu = spawnSync(QEMU, ["--version"]).status === 0;
if (!haveQemu) console.error(`\n*** SKIPPED: ${QEMU} is not installed; scripts/setup.sh installs it as root (qemu-system-x86). ***\n`);

const get = serviceGet;

void describe("demo VM", { skip: haveQemu ? false : `${QEMU} missing` }, () => {
  const tmp = tempDir("gorde-vm-");
  let vm: VmProcess | undefined;
  after(async () => {
    await vm?.stop();
    tmp.cleanup();
  });

  void it("boots from a disk the project built and serves data from that disk", async () => {
    const kit = await ensureGuestKit();
    const disk = path.join(tmp.dir, "vm-100-disk-0.raw");
    await buildVmDisk(disk, 2 * 1024 ** 3, "vm100");
    assert.equal(fs.statSync(disk).size, 2 * 1024 ** 3);
    const port = await freePort();
    const started = Date.now();
    vm = await startVm({ id: 100, memoryMiB: 256, cpus: 1, disks: [disk], httpPort: port }, kit, path.join(tmp.dir, "run"));
    console.log(`accelerator: ${vm.accelWhy}`);
    // Readiness on the static page: a counter request cut off by the poll's timeout may still count.
    assert.match(await get(port, "/index.html"), /vm100: a gorde demo guest/);
    console.log(`service answered ${Date.now() - started} ms after QEMU started`);
    assert.equal(await get(port, "/cgi-bin/counter"), "1\n");
    assert.equal(await get(port, "/cgi-bin/counter"), "2\n");
    assert.equal(await get(port, "/cgi-bin/note", 10_000, { method: "POST", body: "written through the service" }), "written through the service");
    const status = await vm.qmp.execute<{ status: string }>("query-status");
    assert.equal(status.status, "running");
    const blocks = await vm.qmp.execute<{ "node-name": string }[]>("query-named-block-nodes");
    assert.ok(blocks.some((b) => b["node-name"] === "disk0"));
    await vm.stop();
    vm = undefined;
    // The data is on the disk: the ext4 image holds the counter the service wrote.
    const dump = spawnSync("debugfs", ["-R", "cat /data/counter", disk], { encoding: "utf8" });
    if ((dump.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") console.error("\n*** SKIPPED: the on-disk counter check: debugfs (e2fsprogs) is not installed. ***\n");
    else {
      assert.equal(dump.status, 0, `debugfs reads the guest's disk: ${dump.stderr}`);
      assert.equal(dump.stdout.trim(), "2");
    }
  });

  void it("a live view over NBD holds the instant it was opened while the guest writes on", async () => {
    const kit = await ensureGuestKit();
    const disk = path.join(tmp.dir, "vm-102-disk-0.raw");
    await buildVmDisk(disk, 256 * 1024 * 1024, "vm102");
    const port = await freePort();
    vm = await startVm({ id: 102, memoryMiB: 256, cpus: 1, disks: [disk], httpPort: port }, kit, path.join(tmp.dir, "run3"));
    await get(port, "/index.html");
    assert.equal(await get(port, "/cgi-bin/counter"), "1\n");
    // Paused for a moment, so a copy of the disk file is exactly the instant of the view.
    await vm.qmp.execute("stop");
    const copy = path.join(tmp.dir, "instant.raw");
    spawnSync("cp", ["--sparse=always", disk, copy]);
    const view = await openLiveView(vm.qmp, { node: "disk0", device: "vblk0", size: fs.statSync(disk).size, fleeceFile: path.join(tmp.dir, "fleece.qcow2"), socket: path.join(tmp.dir, "view.sock") });
    await vm.qmp.execute("cont");
    // The guest goes on writing: the view must not see it.
    assert.equal(await get(port, "/cgi-bin/counter"), "2\n");
    assert.equal(await get(port, "/cgi-bin/note", 10_000, { method: "POST", body: "after the instant".repeat(1000) }), "after the instant".repeat(1000));
    const nbd = await NbdClient.connect({ socket: view.socket, exportName: view.exportName });
    const instant = fs.openSync(copy, "r");
    const live = fs.openSync(disk, "r");
    try {
      // Everywhere the disk holds data now (the instant's data and what came after), the
      // view equals the copy of the instant, and the live disk has moved on somewhere.
      let compared = 0;
      let changedSince = 0;
      const extents = [...dataExtents(instant, nbd.size), ...dataExtents(live, nbd.size)];
      for (const [start, end] of extents) {
        for (let at = start; at < end; at += 1024 * 1024) {
          const len = Math.min(1024 * 1024, end - at);
          const want = Buffer.alloc(len);
          fs.readSync(instant, want, 0, len, at);
          assert.ok((await nbd.read(at, len)).equals(want), `view differs from the instant at ${at}`);
          const now = Buffer.alloc(len);
          fs.readSync(live, now, 0, len, at);
          if (!now.equals(want)) changedSince++;
          compared += len;
        }
      }
      assert.ok(compared > 64 * 1024, `compared ${compared} bytes`);
      assert.ok(changedSince > 0, "the guest's writes after the instant reached the live disk");
    } finally {
      fs.closeSync(instant);
      fs.closeSync(live);
      await nbd.close();
    }
    await view.close();
    // The guest kept its disk: still running, still answering, its data intact.
    assert.equal((await vm.qmp.execute<{ status: string }>("query-status")).status, "running");
    assert.equal(await get(port, "/cgi-bin/counter"), "3\n");
    assert.ok(!fs.existsSync(path.join(tmp.dir, "fleece.qcow2")));
    await vm.stop();
    vm = undefined;
  });

  void it("backs up a running VM live: full, then only the chunks its dirty bitmap marks", async () => {
    const kit = await ensureGuestKit();
    const disk = path.join(tmp.dir, "vm-103-disk-0.raw");
    await buildVmDisk(disk, 256 * 1024 * 1024, "vm103");
    const port = await freePort();
    vm = await startVm({ id: 103, memoryMiB: 256, cpus: 1, disks: [disk], httpPort: port }, kit, path.join(tmp.dir, "run4"));
    await get(port, "/index.html");
    assert.equal(await get(port, "/cgi-bin/counter"), "1\n");
    const store = await Datastore.init(path.join(tmp.dir, "store"));
    let last: string | undefined;
    const live = async (n: number, base?: string) => {
      await vm!.qmp.execute("stop");
      const instant = path.join(tmp.dir, `instant-${n}.raw`);
      spawnSync("cp", ["--sparse=always", disk, instant]);
      const view = await openLiveView(vm!.qmp, {
        node: "disk0",
        device: "vblk0",
        size: fs.statSync(disk).size,
        fleeceFile: path.join(tmp.dir, `fleece-${n}.qcow2`),
        socket: path.join(tmp.dir, `view-${n}.sock`),
        bitmaps: { base, next: `gorde-${n}` },
      });
      await vm!.qmp.execute("cont");
      // The guest writes on during the backup; the snapshot is the instant.
      const during = get(port, "/cgi-bin/counter");
      const src = await openNbdSource({ socket: view.socket, exportName: view.exportName, dirtyBitmap: view.exportedBitmap, changedSince: last });
      let ok = false;
      try {
        const r = await backup(store, { group: { type: "vm", id: "103" }, sources: [{ archive: "disk0.img", source: src }] });
        ok = true;
        last = r.snapshot;
        return { r, instant };
      } finally {
        await src.close();
        await view.close(ok);
        await during;
      }
    };
    const first = await live(1);
    const chunks = Math.ceil(fs.statSync(disk).size / (256 * 1024));
    assert.equal(first.r.base, null);
    await get(port, "/cgi-bin/note", 10_000, { method: "POST", body: "changed between backups ".repeat(500) });
    const second = await live(2, "gorde-1");
    const read1 = first.r.archives[0]!.readChunks!;
    const read2 = second.r.archives[0]!.readChunks!;
    console.log(`full backup read ${read1} of ${chunks} chunks (the rest are holes); the incremental read ${read2} (dirty since the first)`);
    assert.ok(read2 > 0 && read2 < read1 / 2, `incremental read ${read2} chunks, full ${read1}`);
    // Only dirty chunks are read (a dirty chunk that became a hole is not).
    const dirty2 = second.r.archives[0]!.dirtyChunks!;
    assert.ok(read2 <= dirty2 && dirty2 < read1 / 2, `dirty ${dirty2}, read ${read2}`);
    assert.equal(second.r.base, first.r.snapshot);
    const nodes = await vm.qmp.execute<{ "node-name": string; "dirty-bitmaps"?: { name: string }[] }[]>("query-named-block-nodes");
    const bitmaps = nodes.filter((n) => n["node-name"] === "disk0").flatMap((n) => n["dirty-bitmaps"] ?? []);
    assert.deepEqual(
      bitmaps.map((b) => b.name),
      ["gorde-2"],
    );
    // A backup that fails after its instant: the changes it would have covered stay in
    // the base bitmap, and the next backup still gets them.
    const failed = await openLiveView(vm.qmp, {
      node: "disk0",
      device: "vblk0",
      size: fs.statSync(disk).size,
      fleeceFile: path.join(tmp.dir, "fleece-3.qcow2"),
      socket: path.join(tmp.dir, "view-3.sock"),
      bitmaps: { base: "gorde-2", next: "gorde-3" },
    });
    await get(port, "/cgi-bin/note", 10_000, { method: "POST", body: "while a backup failed ".repeat(400) });
    await failed.close(false);
    const afterFail = await vm.qmp.execute<{ "node-name": string; "dirty-bitmaps"?: { name: string; recording: boolean }[] }[]>("query-named-block-nodes");
    assert.deepEqual(
      afterFail.filter((n) => n["node-name"] === "disk0").flatMap((n) => (n["dirty-bitmaps"] ?? []).map((b) => `${b.name}:${b.recording}`)),
      ["gorde-2:true"],
    );
    const fourth = await live(4, "gorde-2");
    assert.ok(fourth.r.archives[0]!.readChunks! > 0);
    // The snapshot the bitmap counts from is forgotten (a prune between two backups): its
    // changes are in no snapshot the next backup could build on. The next one, based on the
    // newest left (the second), must read the disk whole, not only what changed since the
    // fourth, or it would silently miss what changed between the second and the fourth.
    await store.forget(await store.findSnapshot([], parseSnapshotRef(fourth.r.snapshot)));
    await get(port, "/cgi-bin/note", 10_000, { method: "POST", body: "after a snapshot was forgotten ".repeat(300) });
    const fifth = await live(5, "gorde-4");
    assert.equal(fifth.r.base, second.r.snapshot);
    assert.equal(fifth.r.archives[0]!.dirtyChunks, null, "the bitmap since a forgotten snapshot is not used");
    assert.ok(fifth.r.archives[0]!.readChunks! >= read1 - 2, `read whole: ${fifth.r.archives[0]!.readChunks} chunks, the full backup read ${read1}`);
    for (const [snap, instant] of [
      [first.r.snapshot, first.instant],
      [second.r.snapshot, second.instant],
      [fifth.r.snapshot, fifth.instant],
    ] as const) {
      const out = path.join(tmp.dir, `restored-${snap.replaceAll("/", "_")}.raw`);
      await restore(store, { snapshot: parseSnapshotRef(snap), archive: "disk0.img", target: out });
      assert.ok(spawnSync("cmp", [out, instant]).status === 0, `${snap} restores to the instant it was taken`);
    }
    store.close();
    assert.equal((await vm.qmp.execute<{ status: string }>("query-status")).status, "running");
    await vm.stop();
    vm = undefined;
  });

  void it("backs up the disks of a VM at one instant while the guest writes to them one after the other", async () => {
    const kit = await ensureGuestKit();
    const disks = [path.join(tmp.dir, "vm-105-disk-0.raw"), path.join(tmp.dir, "vm-105-disk-1.raw"), path.join(tmp.dir, "vm-105-disk-2.raw")];
    await buildVmDisk(disks[0]!, 256 * 1024 * 1024, "vm105");
    for (const d of disks.slice(1)) {
      fs.writeFileSync(d, "");
      fs.truncateSync(d, 16 * 1024 * 1024);
    }
    const port = await freePort();
    const run = path.join(tmp.dir, "run6");
    const config = { kind: "vm" as const, id: 105, name: "vm105", memoryMiB: 256, cpus: 1, disks: { disk0: disks[0]!, disk1: disks[1]!, disk2: disks[2]! }, httpPort: port };
    vm = await startVm({ id: 105, memoryMiB: 256, cpus: 1, disks, httpPort: port }, kit, run);
    await get(port, "/index.html");
    // No guest agent: nothing freezes the writer; only the instant shared by all disks keeps
    // vdb's count at most one ahead of vdc's.
    await get(port, "/cgi-bin/ticker?start");
    const count = async (): Promise<number> => Number((await get(port, "/cgi-bin/ticker")).trim());
    for (const deadline = Date.now() + 30_000; (await count()) < 20 && Date.now() < deadline; ) await sleep(200);
    const server = await startServer({ stateDir: path.join(tmp.dir, "server6"), host: "127.0.0.1", port: 0, datastores: { main: path.join(tmp.dir, "store6") }, adminPassword: "admin-pass-1", authFailureDelayMs: 0 });
    const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${server.port}/main`, { secret: "admin-pass-1", fingerprint: server.fingerprint });
    try {
      for (let n = 0; n < 3; n++) {
        const before = await count();
        const log: string[] = [];
        const r = await backupRunningVm(vm, { repo, mode: "snapshot", config, runDir: run, log, state: {} });
        assert.ok((await count()) > before, "the guest wrote on during the backup");
        assert.match(log.join("\n"), /VM paused while the views of its disks are taken/);
        const store = await Datastore.open(path.join(tmp.dir, "store6"));
        const onDisk: number[] = [];
        try {
          for (const archive of ["disk1.img", "disk2.img"]) {
            const out = path.join(tmp.dir, `ticks-${n}-${archive}`);
            await restore(store, { snapshot: parseSnapshotRef(r.snapshot), archive, target: out });
            onDisk.push(Number(fs.readFileSync(out).subarray(0, 512).toString("latin1").split("\n")[0]));
          }
        } finally {
          store.close();
        }
        const [b, c] = onDisk as [number, number];
        assert.ok(b > 0 && (b === c || b === c + 1), `backup ${n}: vdb holds ${b}, vdc ${c}: not one instant`);
      }
    } finally {
      repo.close();
      await server.close();
      await vm.stop();
      vm = undefined;
    }
  });

  void it("refuses a missing disk before starting anything", async () => {
    const kit = await ensureGuestKit();
    await assert.rejects(startVm({ id: 101, memoryMiB: 128, cpus: 1, disks: [path.join(tmp.dir, "nope.raw")], httpPort: 1 }, kit, path.join(tmp.dir, "run2")), /does not exist/);
    // A port in use: refused before QEMU starts (no QEMU process, no monitor socket).
    const disk = path.join(tmp.dir, "vm-104.raw");
    await buildVmDisk(disk, 64 * 1024 * 1024, "vm104");
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const taken = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startVm({ id: 104, memoryMiB: 128, cpus: 1, disks: [disk], httpPort: taken }, kit, path.join(tmp.dir, "run5")), /port \d+ on 127.0.0.1 is in use/);
      assert.ok(!fs.existsSync(path.join(tmp.dir, "run5", "qmp.sock")));
    } finally {
      blocker.close();
    }
  });
});
