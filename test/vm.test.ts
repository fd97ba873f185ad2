// A real demo VM under QEMU: the kit is built from Debian packages (cached), the disk
// holds the service's data, the guest boots and its HTTP service answers from that data
// through a 127.0.0.1 forward.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { buildVmDisk, ensureGuestKit } from "../src/node/guest-kit.ts";
import { QEMU, type VmProcess, startVm } from "../src/node/qemu.ts";
import { tempDir } from "./helpers.ts";

const haveQemu = spawnSync(QEMU, ["--version"]).status === 0;
if (!haveQemu) console.error(`\n*** SKIPPED: ${QEMU} is not installed; scripts/setup.sh installs it as root (qemu-system-x86). ***\n`);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** The service's answer, polled until the guest is up (at most `ms`). */
async function get(port: number, p: string, ms = 60_000, init?: RequestInit): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${p}`, { ...init, signal: AbortSignal.timeout(2000) });
      if (r.ok) return await r.text();
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from 127.0.0.1:${port}${p} within ${ms} ms`);
    await sleep(200);
  }
}

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
    if (dump.status === 0) assert.equal(dump.stdout.trim(), "2");
  });

  void it("refuses a missing disk before starting anything", async () => {
    const kit = await ensureGuestKit();
    await assert.rejects(startVm({ id: 101, memoryMiB: 128, cpus: 1, disks: [path.join(tmp.dir, "nope.raw")], httpPort: 1 }, kit, path.join(tmp.dir, "run2")), /does not exist/);
  });
});
