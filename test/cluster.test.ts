// A cluster end to end: a backup server and two `gorde node` processes form a cluster with
// the gorde command line (create on node1, join node2, the server as witness), three real
// etcd members on 127.0.0.1. Bad input changes nothing; the status shows each member as the
// others see it: a witness gone leaves the cluster quorate, a node gone shows offline once
// its lease lapses, and both come back. The plan is the cluster's: applied on either node, it
// runs on both, and a plan that ties guests to nodes is refused.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import type { ClusterStatus } from "../src/api/cluster-routes.ts";
import { etcdAvailable } from "../src/cluster/etcd-member.ts";
import { LEASE_TTL_S as NODE_LEASE_TTL_S } from "../src/cluster/ha-timing.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const avail = etcdAvailable();
const why = avail.ok ? undefined : avail.why;
if (why) console.error(`\n*** SKIPPED: cluster tests: ${why}. ***\n`);

void describe("a cluster of two nodes and a witness", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-cluster-");
  let server: ServerProcess;
  let node1: NodeProcess;
  let node2: NodeProcess;
  const serverPort = { port: 0 };
  const common = () => ({ serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
  const startServer = async (): Promise<ServerProcess> =>
    startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store: path.join(tmp.dir, "store") }, port: serverPort.port || undefined });

  before(async () => {
    server = await startServer();
    serverPort.port = server.port;
    node1 = await startNodeProcess({ name: "node1", dataDir: path.join(tmp.dir, "node1"), ...common() });
    node2 = await startNodeProcess({ name: "node2", dataDir: path.join(tmp.dir, "node2"), ...common() });
  });
  after(async () => {
    await node1?.stop();
    await node2?.stop();
    await server?.stop();
    tmp.cleanup();
  });

  const onNode = (node: NodeProcess, args: string[], env: Record<string, string> = {}) =>
    gorde(["cluster", ...args, "--node", node.url(), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: "node-admin-1", ...env }, 120_000);
  const onServer = (args: string[], env: Record<string, string> = {}) =>
    gorde(["cluster", ...args, "--server", `https://admin@127.0.0.1:${server.port}`, "--fingerprint", server.fingerprint], { GORDE_PASSWORD: "admin-pass-1", ...env }, 120_000);
  const status = async (node: NodeProcess): Promise<ClusterStatus> => {
    const r = await onNode(node, ["status", "--json"]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as ClusterStatus;
  };
  const planFile = (job: string, extra = ""): string => {
    const file = path.join(tmp.dir, `plan-${job}.yaml`);
    fs.writeFileSync(file, `version: 1\nguests:\n  "101": { rpo: 1d${extra} }\njobs:\n  - { name: ${job}, type: backup, schedule: "02:00", guests: all }\n`);
    return file;
  };
  const onNodePlan = (node: NodeProcess, args: string[]) => gorde(["plan", ...args, "--node", node.url(), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: "node-admin-1" }, 60_000);
  const listen = async (): Promise<string[]> => ["--address", "127.0.0.1", "--peer-port", String(await freePort()), "--client-port", String(await freePort())];
  const joinArgs = async (cluster: string): Promise<string[]> => [cluster, node1.url(), "--member-fingerprint", node1.fingerprint, ...(await listen())];
  const member = { GORDE_MEMBER_PASSWORD: "node-admin-1" };
  /** Polls a node's status until `ok` holds (a lease lapses, a member comes back). */
  const until = async (node: NodeProcess, ok: (s: ClusterStatus) => boolean, seconds: number): Promise<ClusterStatus> => {
    let s = await status(node);
    for (const deadline = Date.now() + seconds * 1000; !ok(s) && Date.now() < deadline; s = await status(node)) await sleep(500);
    return s;
  };

  void it("is formed from the command line: create, join, witness; each step checked", async () => {
    assert.deepEqual(await status(node1), { cluster: null, quorate: false, nodes: [], witness: { online: false } });
    // Each node has a plan of its own before: node1's becomes the cluster's, node2's is kept aside.
    for (const [node, job] of [
      [node1, "first"],
      [node2, "second"],
    ] as const) {
      const r = await onNodePlan(node, ["apply", planFile(job)]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`applied on https://127\\.0\\.0\\.1:\\d+: jobs ${job} scheduled there`));
    }
    const created = await onNode(node1, ["create", "lab", ...(await listen())]);
    assert.equal(created.code, 0, created.err);
    assert.match(created.out, /cluster lab: quorate\n {2}node1 {2}online/);

    // Bad input: one sentence, nothing changed.
    const again = await onNode(node1, ["create", "lab2", ...(await listen())]);
    assert.equal(again.code, 3);
    assert.match(again.err, /node1 is in cluster lab already/);
    const wrongName = await onNode(node2, ["join", ...(await joinArgs("other"))], member);
    assert.equal(wrongName.code, 2);
    assert.match(wrongName.err, /is in cluster lab, not other/);
    const wrongSecret = await onNode(node2, ["join", ...(await joinArgs("lab"))], { GORDE_MEMBER_PASSWORD: "wrong-password" });
    assert.notEqual(wrongSecret.code, 0);
    assert.match(wrongSecret.err, /authentication failed|denied|password/i);
    const noAddress = await onNode(node2, ["join", "lab", node1.url(), "--member-fingerprint", node1.fingerprint], member);
    assert.equal(noAddress.code, 2);
    assert.match(noAddress.err, /--address/);
    assert.equal((await status(node2)).cluster, null, "node2 is still in no cluster");
    assert.deepEqual((await status(node1)).nodes.map((n) => n.name), ["node1"], "nobody was added");

    const joined = await onNode(node2, ["join", ...(await joinArgs("lab"))], member);
    assert.equal(joined.code, 0, joined.err);
    const witness = await onServer(["witness", ...(await joinArgs("lab"))], member);
    assert.equal(witness.code, 0, witness.err);
    const s = await status(node2);
    assert.equal(s.cluster, "lab");
    assert.equal(s.quorate, true);
    assert.deepEqual(
      s.nodes.map((n) => [n.name, n.online]),
      [
        ["node1", true],
        ["node2", true],
      ],
    );
    assert.equal(s.witness.online, true);
    const seenByWitness = await onServer(["status", "--json"]);
    assert.equal((JSON.parse(seenByWitness.out) as ClusterStatus).quorate, true);
    const twice = await onServer(["witness", ...(await joinArgs("lab"))], member);
    assert.equal(twice.code, 3);
    assert.match(twice.err, /witness is in cluster lab already/);
  });

  void it("runs one plan on both nodes: applied on either, it is the cluster's; a plan that ties guests to nodes is refused", async () => {
    const jobsOn = async (node: NodeProcess): Promise<string[]> => {
      const r = await onNodePlan(node, ["status", "--json"]);
      assert.equal(r.code, 0, r.err);
      return (JSON.parse(r.out) as { job: string }[]).map((j) => j.job);
    };
    const untilJobs = async (node: NodeProcess, want: string[]): Promise<string[]> => {
      let got = await jobsOn(node);
      for (const deadline = Date.now() + 15_000; JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline; got = await jobsOn(node)) await sleep(500);
      return got;
    };

    assert.deepEqual(await untilJobs(node2, ["first"]), ["first"], "node2 runs the plan node1 brought into the cluster");
    assert.match(fs.readFileSync(path.join(tmp.dir, "node2", "plan.yaml.local"), "utf8"), /name: second/, "node2's own plan is kept aside");
    assert.match(node1.stderr(), /this node's plan is now the plan of cluster lab/);

    const applied = await onNodePlan(node1, ["apply", planFile("nightly")]);
    assert.equal(applied.code, 0, applied.err);
    assert.match(applied.out, /applied to cluster lab through https:\/\/127\.0\.0\.1:\d+: its nodes run it, each for the guests it owns \(jobs nightly\)/);
    assert.deepEqual(await untilJobs(node2, ["nightly"]), ["nightly"], "node2 runs the plan applied on node1");

    const pinned = await onNodePlan(node2, ["apply", planFile("pinned", ", node: node1")]);
    assert.equal(pinned.code, 2);
    assert.match(pinned.err, /on cluster lab each guest is backed up by the node that owns it, so the plan may not tie guests to nodes: remove guests\.101\.node \(node1\)\./);
    await sleep(4000);
    assert.deepEqual(await jobsOn(node1), ["nightly"], "nothing changed on node1");
    assert.deepEqual(await jobsOn(node2), ["nightly"], "nothing changed on node2");

    const again = await onNodePlan(node2, ["apply", planFile("evening")]);
    assert.equal(again.code, 0, again.err);
    assert.deepEqual(await untilJobs(node1, ["evening"]), ["evening"], "node1 runs the plan applied on node2");
    assert.match(node1.stderr(), /the plan of cluster lab runs here: jobs evening scheduled here/);
  });

  void it("stays quorate without the witness; shows a node offline when stopped, or killed once its lease lapses; all come back", async () => {
    await server.stop();
    const noWitness = await until(node1, (s) => !s.witness.online, 10);
    assert.equal(noWitness.quorate, true, "two of three members are a majority");
    assert.equal(noWitness.witness.online, false);
    server = await startServer();
    assert.equal((await until(node1, (s) => s.witness.online, 30)).witness.online, true, "the witness's member starts with the server");

    // Stopped, a node says so at once (its lease revoked).
    await node2.stop();
    const stopped = await until(node1, (x) => x.nodes.find((n) => n.name === "node2")?.online === false, 10);
    assert.equal(stopped.nodes.find((n) => n.name === "node2")?.online, false);
    node2 = await startNodeProcess({ name: "node2", dataDir: path.join(tmp.dir, "node2"), ...common() });
    assert.ok((await until(node1, (x) => x.nodes.every((n) => n.online), 30)).nodes.every((n) => n.online), "node2 is back");

    // Killed, it shows offline once its lease lapses; started again, its member (left
    // running by the killed agent) is taken over and the node is back.
    await node2.stop("SIGKILL");
    const killedAt = Date.now();
    const gone = await until(node1, (x) => x.nodes.find((n) => n.name === "node2")?.online === false, NODE_LEASE_TTL_S * 3);
    assert.equal(gone.nodes.find((n) => n.name === "node2")?.online, false);
    assert.equal(gone.quorate, true);
    console.log(`a killed node2 shown offline ${((Date.now() - killedAt) / 1000).toFixed(1)} s after it was killed (lease ${NODE_LEASE_TTL_S} s)`);
    node2 = await startNodeProcess({ name: "node2", dataDir: path.join(tmp.dir, "node2"), ...common() });
    const back = await until(node1, (x) => x.nodes.every((n) => n.online), 30);
    assert.ok(back.nodes.every((n) => n.online), "node2 is online again with its member");
    assert.match(node2.stderr(), /etcd member node2 was running \(pid \d+\): taken over/);
  });

  void it("a node starts again with the others down: it runs, says it has no majority, and is online once they are back", async () => {
    await server.stop();
    await node2.stop();
    await node1.stop();
    node1 = await startNodeProcess({ name: "node1", dataDir: path.join(tmp.dir, "node1"), ...common() });
    const alone = await status(node1);
    assert.equal(alone.quorate, false);
    assert.deepEqual(alone.nodes.map((n) => n.name), ["node1"], "only itself is known to be up");
    assert.match((await onNode(node1, ["status"])).out, /NOT QUORATE/);
    server = await startServer();
    node2 = await startNodeProcess({ name: "node2", dataDir: path.join(tmp.dir, "node2"), ...common() });
    const back = await until(node1, (x) => x.quorate && x.witness.online && x.nodes.length === 2 && x.nodes.every((n) => n.online), 60);
    assert.equal(back.quorate, true);
    assert.ok(back.witness.online && back.nodes.every((n) => n.online), JSON.stringify(back));
  });
});
