// `node bench/drill.ts [runs]`: restore drills of the demo VM (256 MiB disk) and the demo
// container on a `gorde node` backed by a `gorde server` on loopback, each drilled `runs`
// times (default 5) from its newest snapshot while the production guest runs. Reports the
// median (and range) of the RTO and of its split: verify + restore, boot, probes; written to
// bench/drill.md.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { DrillRecord } from "../src/api/node-routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { median } from "./stats.ts";
import { freePort, gorde, startNodeProcess, startServerProcess } from "../test/server-fixture.ts";

const RUNS = Number(process.argv[2] ?? 5);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-drill-bench-"));

const server = await startServerProcess({ stateDir: path.join(work, "server"), datastores: { store: path.join(work, "store") } });
const admin = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint, GORDE_NEW_PASSWORD: "cluster-pass-1" };
await gorde(["user", "add", `https://admin@127.0.0.1:${server.port}`, "cluster"], admin);
await gorde(["acl", "set", `https://admin@127.0.0.1:${server.port}`, "/datastore/store", "cluster", "DatastorePowerUser"], admin);
const node = await startNodeProcess({ name: "bench", dataDir: path.join(work, "node"), serverUrl: server.url("store", "cluster"), serverFingerprint: server.fingerprint, serverSecret: "cluster-pass-1" });
const api = await NodeClient.connect(node.url(), { secret: "node-admin-1", fingerprint: node.fingerprint });
const lines = [`# Restore drills (\`node bench/drill.ts ${RUNS}\`)`, "", `${os.cpus().length} CPUs, load average at the start ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}; QEMU under TCG.`, ""];
lines.push("| guest | runs | RTO median (range) | verify + restore | boot | probes |", "|---|--:|--:|--:|--:|--:|");
try {
  for (const [kind, id] of [
    ["vm", 100],
    ["ct", 101],
  ] as const) {
    await api.call("createGuest", { json: { demo: { kind, id, httpPort: await freePort(), diskMiB: kind === "vm" ? 256 : undefined } } });
    await api.call("startGuest", { params: { id } });
    // Backed up once its service answers (the backup does not wait for it).
    const port = (await api.call("guestStatus", { params: { id } })).httpPort;
    for (let i = 0; i < 600; i++) {
      const ok = await fetch(`http://127.0.0.1:${port}/index.html`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await api.backup(id, {});
    const drills: DrillRecord[] = [];
    for (let i = 0; i < RUNS; i++) {
      const d = await api.runDrill({ guest: id });
      if (d.result !== "passed") throw new Error(`drill ${d.id} of guest ${id} ${d.result}: ${d.error}`);
      console.log(`${kind} drill ${i + 1}: restored ${d.restoredSeconds} s, booted ${d.bootedSeconds} s, RTO ${d.rtoSeconds} s (load ${os.loadavg()[0]!.toFixed(1)})`);
      drills.push(d);
    }
    const rto = drills.map((d) => d.rtoSeconds!);
    const restore = median(drills.map((d) => d.restoredSeconds!));
    const boot = median(drills.map((d) => d.bootedSeconds! - d.restoredSeconds!));
    const probes = median(drills.map((d) => d.rtoSeconds! - d.bootedSeconds!));
    lines.push(`| ${kind} ${id} | ${RUNS} | ${median(rto).toFixed(1)} s (${Math.min(...rto).toFixed(1)}–${Math.max(...rto).toFixed(1)}) | ${restore.toFixed(1)} s | ${boot.toFixed(1)} s | ${probes.toFixed(1)} s |`);
    await api.call("stopGuest", { params: { id } });
  }
  lines.push("", "Each column is the median over the runs; the split's medians need not add up to the RTO's.", "");
  fs.writeFileSync(new URL("./drill.md", import.meta.url), lines.join("\n"));
  console.log(lines.join("\n"));
} finally {
  api.close();
  await node.stop();
  await server.stop();
  fs.rmSync(work, { recursive: true, force: true });
}
