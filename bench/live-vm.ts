// `node bench/live-vm.ts`: live backups of the running demo VM (2 GiB disk) into a local
// datastore: a full one, then, after the guest wrote ~1% of its disk as new files, an
// incremental one that reads only the chunks its dirty bitmap marks. The guest's service
// is asked every 100 ms throughout: the longest gap between answers is reported.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { backup } from "../src/client/backup.ts";
import { Datastore } from "../src/datastore/datastore.ts";
import { buildVmDisk, ensureGuestKit } from "../src/node/guest-kit.ts";
import { openLiveView } from "../src/node/live-view.ts";
import { openNbdSource } from "../src/node/nbd-source.ts";
import { freePort, startVm } from "../src/node/qemu.ts";

const DISK = 2 * 1024 ** 3;
/** MiB of files the guest holds before the first backup (GORDE_BENCH_USED_MIB; default: half the disk) */
const USED_MIB = Number(process.env.GORDE_BENCH_USED_MIB ?? 1024);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-live-bench-"));

async function get(port: number, p: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(120_000) });
      if (r.ok) return await r.text();
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${p}`);
    await sleep(200);
  }
}

/** Asks the service every 100 ms until stopped; returns the longest gap between answers. */
function watch(port: number): { stop(): Promise<number> } {
  let running = true;
  let last = Date.now();
  let worst = 0;
  const loop = (async () => {
    while (running) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/index.html`, { signal: AbortSignal.timeout(5000) });
        if (r.ok) {
          await r.text();
          const now = Date.now();
          worst = Math.max(worst, now - last);
          last = now;
        }
      } catch {
        // a failed request is part of the gap
      }
      await sleep(100);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return Math.max(worst, Date.now() - last);
    },
  };
}

const kit = await ensureGuestKit();
const disk = path.join(work, "vm-100-disk-0.raw");
await buildVmDisk(disk, DISK, "vm100");
const port = await freePort();
const vm = await startVm({ id: 100, memoryMiB: 512, cpus: 1, disks: [disk], httpPort: port }, kit, path.join(work, "run"));
const store = await Datastore.init(path.join(work, "store"));
try {
  await get(port, "/index.html");
  console.log(`accelerator: ${vm.accelWhy}`);
  // The guest's data before the first backup, written in pieces (one request would time out under TCG).
  for (let left = USED_MIB; left > 0; left -= 128) await get(port, `/cgi-bin/fill?${Math.min(128, left)}`);
  let last: string | undefined;
  const live = async (n: number, base?: string) => {
    const view = await openLiveView(vm.qmp, {
      node: "disk0",
      device: "vblk0",
      size: DISK,
      fleeceFile: path.join(work, `fleece-${n}.qcow2`),
      socket: path.join(work, `view-${n}.sock`),
      bitmaps: { base, next: `gorde-${n}` },
    });
    const w = watch(port);
    const started = Date.now();
    const src = await openNbdSource({ socket: view.socket, exportName: view.exportName, dirtyBitmap: view.exportedBitmap, changedSince: last });
    let ok = false;
    try {
      const r = await backup(store, { group: { type: "vm", id: "100" }, sources: [{ archive: "disk0.img", source: src }] });
      ok = true;
      last = r.snapshot;
      return { ms: Date.now() - started, read: r.archives[0]!.readChunks!, newBytes: r.stats.newBytes, gap: await w.stop() };
    } finally {
      await src.close();
      await view.close(ok);
      await w.stop();
    }
  };
  const full = await live(1);
  const written = await get(port, `/cgi-bin/fill?${Math.round(DISK / 100 / 1024 ** 2)}`);
  const incr = await live(2, "gorde-1");
  const chunks = DISK / (256 * 1024);
  const lines = [
    `# Live backups of the running demo VM (${new Date().toISOString()})`,
    "",
    `- ${vm.accelWhy}; disk 2 GiB raw ext4, ${USED_MIB} MiB of files before the first backup; between backups the guest wrote ${(Number(written) / 1024 ** 2).toFixed(0)} MiB (1% of the disk) as a new file`,
    "- the service (/index.html) asked every 100 ms during each backup; gap = longest time between two answers",
    "",
    "| backup | time | chunks read (of " + chunks + ") | new data | longest service gap |",
    "|---|--:|--:|--:|--:|",
    `| full (live view, holes skipped by block status) | ${(full.ms / 1000).toFixed(2)} s | ${full.read} | ${(full.newBytes / 1024 ** 2).toFixed(1)} MiB | ${full.gap} ms |`,
    `| incremental (dirty bitmap) | ${(incr.ms / 1000).toFixed(2)} s | ${incr.read} | ${(incr.newBytes / 1024 ** 2).toFixed(1)} MiB | ${incr.gap} ms |`,
    "",
    `Incremental / full: ${(full.ms / incr.ms).toFixed(1)}× faster, ${((incr.read / full.read) * 100).toFixed(1)}% of the chunks read.`,
  ];
  fs.writeFileSync(new URL("./live-vm.md", import.meta.url), lines.join("\n") + "\n");
  console.log(lines.join("\n"));
} finally {
  store.close();
  await vm.stop();
  fs.rmSync(work, { recursive: true, force: true });
}
