// `node bench/failover.ts [runs]`: failover from backup, as `gorde demo` tells it, timed. A
// cluster of two `gorde node` processes and a `gorde server` as witness (three etcd
// members on loopback), the demo VM (1 GiB disk) and container HA on one node. Each run
// kills the node that owns them whole (agent, fence helper, etcd member; its guests die
// with the agent) and times until both guests' health checks pass on the other node; the
// killed node is started again (it starts nothing) and the guests backed up there before
// the next run, which kills the other node. Reports the median (and range) of the time
// from the kill to both guests' checks passing (issue 13's target: ≤ 60 s), and each
// guest's RTO with its split (detection, fence wait, restore, boot and checks); written to
// bench/failover.md.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Recovery } from "../src/api/ha-routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { median } from "./stats.ts";
import { killNodeWhole, waitGone } from "../src/cli/demo-cluster.ts";
import { type NodeProcess, freePort, gorde, startNodeProcess, startServerProcess } from "../test/server-fixture.ts";

const RUNS = Number(process.argv[2] ?? 5);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-failover-bench-"));

function range(xs: number[]): string {
  return `${median(xs).toFixed(1)} s (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
}

const server = await startServerProcess({ stateDir: path.join(work, "server"), datastores: { store: path.join(work, "store") } });
const common = { serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" };
const start = (name: string): Promise<NodeProcess> => startNodeProcess({ name, dataDir: path.join(work, name), ...common });
const nodes = new Map<string, NodeProcess>([
  ["node1", await start("node1")],
  ["node2", await start("node2")],
]);
const client = (n: NodeProcess): Promise<NodeClient> => NodeClient.connect(n.url(), { secret: "node-admin-1", fingerprint: n.fingerprint });
const cli = async (n: NodeProcess, args: string[], env: Record<string, string> = {}): Promise<void> => {
  const r = await gorde([...args, "--node", n.url(), "--fingerprint", n.fingerprint], { GORDE_PASSWORD: "node-admin-1", ...env }, 120_000);
  if (r.code !== 0) throw new Error(`gorde ${args.join(" ")}: ${r.err}`);
};
const listen = async (): Promise<string[]> => ["--address", "127.0.0.1", "--peer-port", String(await freePort()), "--client-port", String(await freePort())];

const lines = [`# Failover from backup (\`node bench/failover.ts ${RUNS}\`)`, "", `${os.cpus().length} CPUs, load average at the start ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}; QEMU under TCG.`, ""];
const total: number[] = [];
const perGuest = new Map<number, Recovery[]>();
try {
  const n1 = nodes.get("node1")!;
  await cli(n1, ["cluster", "create", "bench", ...(await listen())]);
  const join = async (): Promise<string[]> => ["bench", n1.url(), "--member-fingerprint", n1.fingerprint, ...(await listen())];
  await cli(nodes.get("node2")!, ["cluster", "join", ...(await join())], { GORDE_MEMBER_PASSWORD: "node-admin-1" });
  const w = await gorde(["cluster", "witness", ...(await join()), "--server", `https://admin@127.0.0.1:${server.port}`, "--fingerprint", server.fingerprint], { GORDE_PASSWORD: "admin-pass-1", GORDE_MEMBER_PASSWORD: "node-admin-1" }, 120_000);
  if (w.code !== 0) throw new Error(`gorde cluster witness: ${w.err}`);

  const api1 = await client(n1);
  for (const [kind, id] of [
    ["vm", 100],
    ["ct", 101],
  ] as const) {
    await api1.call("createGuest", { json: { demo: { kind, id, httpPort: await freePort(), diskMiB: kind === "vm" ? 1024 : undefined } } });
    await api1.call("addHa", { json: { sid: `${kind}:${id}` } });
  }
  api1.close();
  let owner = "node1";
  for (let run = 1; run <= RUNS; run++) {
    const victim = nodes.get(owner)!;
    const survivorName = owner === "node1" ? "node2" : "node1";
    const survivor = nodes.get(survivorName)!;
    const api = await client(victim);
    // Both running and answering, then a fresh backup of each on the node that has them.
    for (let i = 0; ; i++) {
      const ha = await api.call("haStatus");
      if (ha.length === 2 && ha.every((r) => r.state === "started" && r.node === owner)) break;
      if (i > 300) throw new Error(`the guests are not started on ${owner}: ${JSON.stringify(ha)}`);
      await sleep(500);
    }
    const pids: number[] = [];
    for (const id of [100, 101]) {
      const st = await api.call("guestStatus", { params: { id } });
      for (let i = 0; i < 600; i++) {
        if (await fetch(`http://127.0.0.1:${st.httpPort}/index.html`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false)) break;
        await sleep(200);
      }
      await api.backup(id, {});
      if (st.pid) pids.push(st.pid);
    }
    api.close();
    await sleep(3000);
    const killedAt = Date.now();
    killNodeWhole({ dataDir: path.join(work, owner), agent: victim.child });
    if (!(await waitGone(pids, 5000))) throw new Error(`the guests of ${owner} outlived its agent`);
    const sapi = await client(survivor);
    let seconds = 0;
    for (;;) {
      const ha = await sapi.call("haStatus").catch(() => []);
      if (ha.length === 2 && ha.every((r) => r.state === "started" && r.node === survivorName)) {
        seconds = (Date.now() - killedAt) / 1000;
        break;
      }
      if (Date.now() - killedAt > 300_000) throw new Error(`the guests did not come back on ${survivorName}: ${JSON.stringify(ha)}`);
      await sleep(250);
    }
    const recs = (await sapi.call("listRecoveries", { query: { limit: 2 } })).filter((r) => r.result === "recovered");
    for (const l of victim.stderr().split("\n").filter((x) => /lease|fenc/.test(x)).slice(-5)) console.log(`   ${owner}: ${l}`);
    sapi.close();
    total.push(seconds);
    for (const r of recs) perGuest.set(r.guest, [...(perGuest.get(r.guest) ?? []), r]);
    console.log(
      `run ${run}: ${owner} killed, both guests' checks passing on ${survivorName} after ${seconds.toFixed(1)} s; ` +
        recs.map((r) => `${r.sid} RTO ${r.rtoSeconds} s (detect ${r.detectSeconds}, fence ${r.fenceSeconds}, restore ${r.restoreSeconds}, boot ${r.bootSeconds}), RPO ${r.rpoSeconds} s`).join("; ") +
        ` (load ${os.loadavg()[0]!.toFixed(1)})`,
    );
    // The killed node comes back (starting nothing) before the next run.
    await victim.stop().catch(() => undefined);
    nodes.set(owner, await start(owner));
    owner = survivorName;
  }
  lines.push(`Kill → both guests' checks passing on the survivor: **${range(total)}** over ${RUNS} runs (target ≤ 60 s).`, "");
  lines.push("| guest | RTO | detection | fence wait | restore | boot and checks | RPO |", "|---|--:|--:|--:|--:|--:|--:|");
  for (const rs of perGuest.values()) {
    const col = (f: (r: Recovery) => number | null): string => range(rs.map((r) => f(r) ?? 0));
    lines.push(`| ${rs[0]!.sid} | ${col((r) => r.rtoSeconds)} | ${col((r) => r.detectSeconds)} | ${col((r) => r.fenceSeconds)} | ${col((r) => r.restoreSeconds)} | ${col((r) => r.bootSeconds)} | ${col((r) => r.rpoSeconds)} |`);
  }
  lines.push(
    "",
    "RTO counts from the lost node's last lease renewal; detection is until the survivor saw its lease gone (TTL 10 s), fence wait the 3 s after it, boot and checks until every health check passed. Medians over the runs; the split's medians need not add up.",
    "",
  );
  fs.writeFileSync(new URL("./failover.md", import.meta.url), lines.join("\n"));
  console.log(lines.join("\n"));
} finally {
  // Out of HA first: a node stopping would hand its guests to the other.
  const any = [...nodes.values()][0]!;
  for (const sid of ["vm:100", "ct:101"]) await gorde(["ha", "remove", sid, "--node", any.url(), "--fingerprint", any.fingerprint], { GORDE_PASSWORD: "node-admin-1" }).catch(() => undefined);
  for (const n of nodes.values()) await n.stop().catch(() => undefined);
  await server.stop();
  fs.rmSync(work, { recursive: true, force: true });
}
