// gorde's NBD client against a real NBD server: qemu-nbd exporting a sparse raw image.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { NbdClient } from "./nbd-client.ts";

const haveQemuNbd = spawnSync("qemu-nbd", ["--version"]).status === 0;
if (!haveQemuNbd) console.error("\n*** SKIPPED: qemu-nbd is not installed; scripts/setup.sh installs it as root (qemu-utils). ***\n");

const MiB = 1024 * 1024;

void describe("NbdClient", { skip: haveQemuNbd ? false : "qemu-nbd missing" }, () => {
  const tmp = tempDir("gorde-nbd-");
  const image = path.join(tmp.dir, "disk.raw");
  const sock = path.join(tmp.dir, "nbd.sock");
  let server: ChildProcess;
  const content = Buffer.alloc(16 * MiB);

  before(async () => {
    const fd = fs.openSync(image, "w");
    for (const [at, len] of [
      [1 * MiB, 2 * MiB],
      [8 * MiB + 4096, 12288],
    ] as const) {
      const data = randomBytes(len);
      data.copy(content, at);
      fs.writeSync(fd, data, 0, len, at);
    }
    fs.ftruncateSync(fd, 16 * MiB);
    fs.closeSync(fd);
    server = spawn("qemu-nbd", ["--read-only", "--persistent", `--socket=${sock}`, "--format=raw", "--export-name=disk0", image], { stdio: "ignore" });
    for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await sleep(50);
  });
  after(() => {
    server.kill();
    tmp.cleanup();
  });

  void it("reads any range exactly, holes as zeros", async () => {
    const c = await NbdClient.connect({ socket: sock, exportName: "disk0" });
    try {
      assert.equal(c.size, 16 * MiB);
      for (const [at, len] of [
        [0, 4096],
        [1 * MiB - 100, 300],
        [1 * MiB, 2 * MiB],
        [8 * MiB, 256 * 1024],
        [0, 16 * MiB],
      ] as const) {
        assert.ok((await c.read(at, len)).equals(content.subarray(at, at + len)), `range ${at}+${len}`);
      }
      await assert.rejects(c.read(16 * MiB - 10, 20), /outside the export/);
    } finally {
      await c.close();
    }
  });

  void it("reports allocation extents: data where it was written, holes elsewhere", async () => {
    const c = await NbdClient.connect({ socket: sock, exportName: "disk0", metaContexts: ["base:allocation"] });
    try {
      const ext = await c.blockStatus("base:allocation", 0, c.size);
      assert.equal(
        ext.reduce((n, e) => n + e.length, 0),
        c.size,
      );
      const data = ext.filter((e) => (e.flags & 1) === 0);
      assert.ok(data.some((e) => e.offset <= 1 * MiB && e.offset + e.length >= 3 * MiB), JSON.stringify(data));
      assert.ok(data.some((e) => e.offset <= 8 * MiB + 4096 && e.offset + e.length >= 8 * MiB + 16384));
      const holeBytes = ext.filter((e) => e.flags & 1).reduce((n, e) => n + e.length, 0);
      assert.ok(holeBytes >= 12 * MiB, `hole bytes ${holeBytes}`);
    } finally {
      await c.close();
    }
  });

  void it("refuses an unknown export and an unknown meta context clearly", async () => {
    await assert.rejects(NbdClient.connect({ socket: sock, exportName: "nope" }), /refused option/);
    await assert.rejects(NbdClient.connect({ socket: sock, exportName: "disk0", metaContexts: ["qemu:dirty-bitmap:none"] }), /no meta context/);
    await assert.rejects(NbdClient.connect({ socket: path.join(tmp.dir, "missing.sock"), exportName: "disk0" }), /cannot connect/);
  });
});
