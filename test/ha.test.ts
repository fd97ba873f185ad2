// HA on a real cluster (three etcd members on 127.0.0.1: two `gorde node` processes and the
// backup server as witness) with a real container: ids are the cluster's, `gorde ha`
// refuses what it cannot do; node1's agent killed and started again at once adopts its
// running container under its fence helper's deadline, and nothing moves; killed and not
// back, its fence helper kills the container before the lease lapses and it comes back on
// node2 from its backup, answering the snapshot's data, with RPO and RTO
// recorded; node1 back starts nothing and keeps its old copy aside, and the cluster's plan
// backs the container up on node2, which owns it now. Then node2's agent is
// stopped (SIGSTOP, stuck): its fence helper kills the container before its lease lapses,
// node1 takes it back, and node2, continued, starts nothing. A watcher samples which node
// runs a copy every 50 ms: never both. Quorum lost, links cut and the backup server
// unreachable are the partition tests' (test/partitions/). The HA page of the web interface
// is checked in Chromium after the first failover.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import type { HaResource, Recovery } from "../src/api/ha-routes.ts";
import { type JobRun, ROUTES } from "../src/api/routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { etcdAvailable } from "../src/cluster/etcd-member.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import en from "../ui/src/locales/en.json" with { type: "json" };
import eu from "../ui/src/locales/eu.json" with { type: "json" };
import { assertAccessible, browserMissing, englishIn, launchBrowser, logIn, openPage } from "./browser-fixture.ts";
import { serviceGet } from "./guest-fixture.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const etcd = etcdAvailable();
const lxc = lxcAvailable();
const why = !etcd.ok ? etcd.why : !lxc.ok ? lxc.why : undefined;
if (why) console.error(`\n*** SKIPPED: HA tests: ${why}. ***\n`);
const noBrowser = browserMissing();

/** Whether a container copy of guest `id` runs from `dataDir`: its lxc-start (the monitor lives as long as the container). */
function copyRuns(dataDir: string, id: number): boolean {
  const runDir = path.join(dataDir, "run", String(id));
  for (const p of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
      const stat = fs.readFileSync(`/proc/${p}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      // A process counts until it is reaped: a zombie is gone, a stopped one runs.
      if (state !== "Z" && cmd[0]?.endsWith("lxc-start") && cmd.includes(runDir)) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

void describe("HA: a guest comes back on the other node from its backup", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-ha-");
  let server: ServerProcess;
  const nodes: Record<"node1" | "node2", NodeProcess | undefined> = { node1: undefined, node2: undefined };
  const dataDir = (n: string): string => path.join(tmp.dir, n);
  const start = async (name: "node1" | "node2"): Promise<NodeProcess> => {
    const n = await startNodeProcess({ name, dataDir: dataDir(name), serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
    nodes[name] = n;
    return n;
  };
  const node = (name: "node1" | "node2"): NodeProcess => nodes[name]!;
  const cli = (n: NodeProcess, args: string[], env: Record<string, string> = {}) => gorde([...args, "--node", n.url(), "--fingerprint", n.fingerprint], { GORDE_PASSWORD: "node-admin-1", ...env }, 120_000);
  const haStatus = async (n: NodeProcess): Promise<HaResource[]> => {
    const r = await cli(n, ["ha", "status", "--json"]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as HaResource[];
  };
  /** Polls `ha status` on `n` until `ok`; answers the states seen on the way. */
  const until = async (n: NodeProcess, ok: (r: HaResource | undefined) => boolean, seconds: number): Promise<{ last: HaResource | undefined; seen: Set<string> }> => {
    const seen = new Set<string>();
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const r = (await haStatus(n).catch(() => [] as HaResource[])).find((x) => x.sid === "ct:101");
      if (r) seen.add(`${r.state}@${r.node}`);
      if (ok(r)) return { last: r, seen };
      if (Date.now() > deadline) throw new Error(`ct:101 not as expected within ${seconds} s; states seen ${[...seen].join(", ")}; node1:\n${nodes.node1?.stderr().slice(-3000)}\nnode2:\n${nodes.node2?.stderr().slice(-3000)}`);
      await sleep(300);
    }
  };
  // Which node runs a copy of guest 101, sampled all along.
  let both = 0;
  let samples = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const a = copyRuns(dataDir("node1"), 101);
      const b = copyRuns(dataDir("node2"), 101);
      samples++;
      if (a && b) both++;
      await sleep(50);
    }
  })();

  before(async () => {
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store: path.join(tmp.dir, "store") } });
    await start("node1");
    await start("node2");
    const listen = async (): Promise<string[]> => ["--address", "127.0.0.1", "--peer-port", String(await freePort()), "--client-port", String(await freePort())];
    const member = { GORDE_MEMBER_PASSWORD: "node-admin-1" };
    const joinArgs = async (): Promise<string[]> => ["lab", node("node1").url(), "--member-fingerprint", node("node1").fingerprint, ...(await listen())];
    for (const [r, what] of [
      [await cli(node("node1"), ["cluster", "create", "lab", ...(await listen())]), "create"],
      [await cli(node("node2"), ["cluster", "join", ...(await joinArgs())], member), "join"],
      [await gorde(["cluster", "witness", ...(await joinArgs()), "--server", `https://admin@127.0.0.1:${server.port}`, "--fingerprint", server.fingerprint], { GORDE_PASSWORD: "admin-pass-1", ...member }, 120_000), "witness"],
    ] as const) {
      assert.equal(r.code, 0, `cluster ${what}: ${r.err}`);
    }
  });

  after(async () => {
    watching = false;
    await watcher;
    // Out of HA first: a node stopping would otherwise hand its guest to the other.
    for (const n of Object.values(nodes)) n?.child.kill("SIGCONT");
    if (nodes.node1) await cli(nodes.node1, ["ha", "remove", "ct:101"]).catch(() => undefined);
    for (const n of Object.values(nodes)) {
      await n?.stop();
    }
    await server?.stop();
    tmp.cleanup();
  });

  void it("keeps guest ids unique in the cluster and refuses what HA cannot do", async () => {
    const port = await freePort();
    const created = await cli(node("node1"), ["guest", "create", "101", "--demo", "ct", "--port", String(port)]);
    assert.equal(created.code, 0, created.err);
    const twice = await cli(node("node2"), ["guest", "create", "101", "--demo", "ct", "--port", String(await freePort())]);
    assert.equal(twice.code, 3);
    assert.match(twice.err, /guest id 101 is in use on node node1 of the cluster/);
    assert.equal(fs.existsSync(path.join(dataDir("node2"), "guests", "101.json")), false, "nothing made on node2");

    const unknown = await cli(node("node2"), ["ha", "add", "ct:999"]);
    assert.equal(unknown.code, 3);
    assert.match(unknown.err, /no guest 999 in the cluster/);
    const wrongKind = await cli(node("node2"), ["ha", "add", "vm:101"]);
    assert.equal(wrongKind.code, 2);
    assert.match(wrongKind.err, /guest 101 is a container: name it ct:101/);
    const bad = await cli(node("node2"), ["ha", "add", "101"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /name a guest as vm:<id> or ct:<id>/);
    const badState = await cli(node("node2"), ["ha", "add", "ct:101", "--state", "running"]);
    assert.equal(badState.code, 2);
    assert.match(badState.err, /--state is started or stopped, not "running"/);
    const notOne = await cli(node("node2"), ["ha", "remove", "ct:101"]);
    assert.equal(notOne.code, 3);
    assert.match(notOne.err, /ct:101 is not an HA resource/);
    assert.deepEqual(await haStatus(node("node1")), [], "nothing added");

    // An auditor sees the HA resources of the guests it may see, and changes nothing.
    const admin = { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node("node2").fingerprint };
    assert.equal((await gorde(["user", "add", node("node2").url(), "auditor"], { ...admin, GORDE_NEW_PASSWORD: "auditor-pass" })).code, 0);
    assert.equal((await gorde(["acl", "set", node("node2").url(), "/vms", "auditor", "PVEAuditor"], admin)).code, 0);
    const asAuditor = (args: string[]) => gorde([...args, "--node", node("node2").url("auditor"), "--fingerprint", node("node2").fingerprint], { GORDE_PASSWORD: "auditor-pass" }, 60_000);
    const looks = await asAuditor(["ha", "status", "--json"]);
    assert.equal(looks.code, 0, looks.err);
    const tries = await asAuditor(["ha", "add", "ct:101"]);
    assert.equal(tries.code, 7);
    assert.match(tries.err, /permission denied: auditor may not make ct:101 an HA resource/);

    // Started by HA, backed up with a note the recovered copy must answer.
    const added = await cli(node("node2"), ["ha", "add", "ct:101"]);
    assert.equal(added.code, 0, added.err);
    const again = await cli(node("node1"), ["ha", "add", "ct:101"]);
    assert.equal(again.code, 3);
    assert.match(again.err, /ct:101 is an HA resource already/);
    const running = await until(node("node1"), (r) => r?.state === "started" && r.node === "node1", 60);
    assert.equal(running.last?.node, "node1");
    await serviceGet(port, "/cgi-bin/note", 60_000, { method: "POST", body: "written before the failover" });
    const client = await NodeClient.connect(node("node1").url(), { secret: "node-admin-1", fingerprint: node("node1").fingerprint });
    try {
      await client.backup(101, {});
    } finally {
      client.close();
    }
    const remove = await cli(node("node1"), ["guest", "remove", "101"]);
    assert.notEqual(remove.code, 0);
    assert.match(remove.err, /guest 101 is (running|an HA resource)/);
  });

  void it("adopts the running container when node1's agent is killed and started again at once: nothing moves", async () => {
    const pid = (JSON.parse((await cli(node("node1"), ["guest", "status", "101", "--json"])).out) as { pid: number }).pid;
    await node("node1").stop("SIGKILL");
    const killedAt = Date.now();
    await start("node1");
    const back = (Date.now() - killedAt) / 1000;
    assert.match(node("node1").stderr(), new RegExp(`container 101 was running \\(init pid ${pid}\\): adopted`));
    assert.match(node("node1").stderr(), /the fence helper of the node's previous agent runs \(pid \d+\): taken over/);
    // Longer than the fence deadline: the new agent's lease renewals moved it on.
    await sleep(12_000);
    const now = JSON.parse((await cli(node("node1"), ["guest", "status", "101", "--json"])).out) as { pid: number; state: string };
    assert.deepEqual([now.state, now.pid], ["running", pid], `the same container runs on (node1's log:\n${node("node1").stderr()})`);
    const r = (await until(node("node1"), (x) => x?.state === "started", 10)).last;
    assert.equal(r?.node, "node1");
    assert.deepEqual(JSON.parse((await cli(node("node2"), ["ha", "recoveries", "--json"])).out), [], "node2 recovered nothing");
    console.log(`node1's agent killed and back in ${back.toFixed(1)} s: its container (pid ${pid}) adopted, still running 12 s later`);
  });

  void it("recovers the container on node2 from backup when node1's agent is killed; node1 back starts nothing", async () => {
    assert.ok(copyRuns(dataDir("node1"), 101));
    await node("node1").stop("SIGKILL");
    const killedAt = Date.now();
    // The container outlives the agent, until the fence helper's deadline: its lease's last renewal and 7 s.
    await sleep(1000);
    assert.ok(copyRuns(dataDir("node1"), 101), "the container outlived its agent");
    for (const deadline = Date.now() + 10_000; copyRuns(dataDir("node1"), 101) && Date.now() < deadline; ) await sleep(50);
    const fencedAfter = (Date.now() - killedAt) / 1000;
    assert.equal(copyRuns(dataDir("node1"), 101), false, "the fence helper killed node1's container");
    assert.match(fs.readFileSync(path.join(dataDir("node1"), "run", "fence-helper.log"), "utf8"), /the fence deadline passed without a renewed lease: killed/);
    const back = await until(node("node2"), (r) => r?.state === "started" && r.node === "node2", 90);
    const took = (Date.now() - killedAt) / 1000;
    assert.ok(back.seen.has("fence@node1"), `fence was shown while node1's lease lapsed: ${[...back.seen].join(", ")}`);
    const port = JSON.parse((await cli(node("node2"), ["guest", "config", "101", "--json"])).out) as { httpPort: number };
    assert.equal(await serviceGet(port.httpPort, "/cgi-bin/note", 10_000), "written before the failover", "the recovered copy answers the snapshot's data");
    const recs = JSON.parse((await cli(node("node2"), ["ha", "recoveries", "--json"])).out) as Recovery[];
    const rec = recs[0]!;
    assert.equal(rec.result, "recovered", rec.log);
    assert.equal(rec.from, "node1");
    assert.match(rec.snapshot ?? "", /^ct\/101\//);
    assert.ok(rec.rpoSeconds !== null && rec.rpoSeconds >= 0 && rec.rtoSeconds !== null && rec.rtoSeconds > 0, JSON.stringify(rec));
    console.log(`ct:101 fenced ${fencedAfter.toFixed(1)} s and recovered on node2 ${took.toFixed(1)} s after node1's agent was killed: RTO ${rec.rtoSeconds} s (detection ${rec.detectSeconds}, fence wait ${rec.fenceSeconds}, restore ${rec.restoreSeconds}, boot and checks ${rec.bootSeconds}), RPO ${rec.rpoSeconds} s`);

    // As the web interface shows it on node2: the cluster quorate without node1, the resource
    // started there, the failover with its snapshot, RPO and RTO, charted.
    if (noBrowser) console.error(`\n*** SKIPPED: the HA page in a browser: ${noBrowser}. ***\n`);
    else {
      const browser = await launchBrowser();
      try {
        const page = await openPage(browser, `https://127.0.0.1:${node("node2").port}`);
        await logIn(page, "admin", "node-admin-1");
        await page.getByText(/^Cluster lab: quorate/).waitFor();
        await page.getByRole("navigation").getByRole("link", { name: "HA", exact: true }).click();
        const resource = page.getByRole("table", { name: en.haResources }).getByRole("row").filter({ hasText: "ct:101" });
        await resource.getByRole("cell", { name: en.haName.started, exact: true }).waitFor();
        await resource.getByRole("cell", { name: "node2", exact: true }).waitFor();
        const failover = page.getByRole("table", { name: en.recoveries }).getByRole("row").filter({ hasText: rec.snapshot! });
        await failover.getByText("node1 → node2").waitFor();
        await failover.getByText(en.recoveryName.recovered, { exact: true }).waitFor();
        await page.getByRole("img", { name: en.rtoOverTime }).locator("canvas").waitFor();
        await assertAccessible(page, "HA page");
        const shots = tempDir("gorde-ha-screenshots-");
        await page.screenshot({ path: path.join(shots.dir, "ha-en.png"), fullPage: true });
        await page.getByLabel(en.language).selectOption("eu");
        await page.getByRole("table", { name: eu.haResources }).waitFor();
        assert.deepEqual(englishIn(await page.locator("body").innerText()), [], "English on the HA page in Basque");
        await page.screenshot({ path: path.join(shots.dir, "ha-eu.png"), fullPage: true });
        console.log(`screenshots of the HA page: ${shots.dir}`);
      } finally {
        await browser.close();
      }
    }

    // node1 comes back: it starts nothing, and its old copy is kept aside, not deleted.
    await start("node1");
    await sleep(4000);
    assert.equal(copyRuns(dataDir("node1"), 101), false, "node1 did not start its old copy");
    assert.equal(fs.existsSync(path.join(dataDir("node1"), "guests", "101.json")), false);
    const aside = fs.readdirSync(path.join(dataDir("node1"), "displaced"));
    assert.equal(aside.length, 1);
    assert.ok(fs.existsSync(path.join(dataDir("node1"), "displaced", aside[0]!, "rootfs")), "its root file system is kept");
    assert.match(node("node1").stderr(), /guest 101 was recovered on node node2 while this node was lost/);
    assert.equal((await until(node("node1"), (r) => r?.state === "started", 10)).last?.node, "node2");

    // The cluster's plan, applied on node1, runs on both: node2, which owns 101 now, backs it up; node1 has nothing to back up.
    const planFile = path.join(tmp.dir, "plan.yaml");
    const plan = (schedule: string): string => {
      fs.writeFileSync(planFile, `version: 1\nload: { max-load-per-cpu: 100, max-cpu-pressure: 100, max-io-pressure: 100 }\nguests:\n  "101": { rpo: 1d }\njobs:\n  - { name: often, type: backup, schedule: "${schedule}", guests: all }\n`);
      return planFile;
    };
    const applied = await cli(node("node1"), ["plan", "apply", plan("*:*:0/10")]);
    assert.equal(applied.code, 0, applied.err);
    const runs = async (n: NodeProcess): Promise<JobRun[]> => {
      const c = await NodeClient.connect(n.url(), { secret: "node-admin-1", fingerprint: n.fingerprint });
      try {
        return await c.conn.call(ROUTES, "listRuns", { query: { limit: 20 } });
      } finally {
        c.close();
      }
    };
    let done: JobRun | undefined;
    for (const deadline = Date.now() + 90_000; !done && Date.now() < deadline; await sleep(1000)) done = (await runs(node("node2"))).find((r) => r.job === "often" && r.result === "ok");
    assert.ok(done, "node2 ran the cluster's backup job");
    assert.match(done.log, /job often: guests 101/);
    assert.ok((done.bytes ?? 0) > 0, "it read the container");
    const idle = (await runs(node("node1"))).find((r) => r.job === "often" && r.result !== "running");
    if (idle) assert.match(idle.log, /no guest of this node selected/);
    const quiet = await cli(node("node2"), ["plan", "apply", plan("02:00")]);
    assert.equal(quiet.code, 0, quiet.err);
  });

  void it("fences a stuck agent's container through its fence helper; the survivor takes it, the agent continued starts nothing", async () => {
    assert.ok(copyRuns(dataDir("node2"), 101));
    node("node2").child.kill("SIGSTOP");
    const stoppedAt = Date.now();
    for (const deadline = Date.now() + 15_000; copyRuns(dataDir("node2"), 101) && Date.now() < deadline; ) await sleep(50);
    const fencedAfter = (Date.now() - stoppedAt) / 1000;
    assert.equal(copyRuns(dataDir("node2"), 101), false, "the fence helper killed the stuck node's container");
    const back = await until(node("node1"), (r) => r?.state === "started" && r.node === "node1", 90);
    console.log(`a stuck node2 fenced ${fencedAfter.toFixed(1)} s after SIGSTOP; ct:101 running on node1 ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s after it (states ${[...back.seen].join(", ")})`);
    node("node2").child.kill("SIGCONT");
    await until(node("node2"), (r) => r?.node === "node1", 30);
    await sleep(4000);
    assert.equal(copyRuns(dataDir("node2"), 101), false, "node2, continued, did not start its copy");
  });

  void it("never ran two copies of the container at once", () => {
    assert.ok(samples > 100, `the watcher sampled (${samples})`);
    assert.equal(both, 0, "never two copies of the container at once");
  });
});
