// The plan carried out by the scheduler itself, in real time: a backup server, a node with
// the demo container, a plan with a job every 10 seconds applied with `gorde plan apply`;
// two runs done by the node's scheduler (the second incremental), retention applied after
// each, and every run told to a local SMTP server and a webhook.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { ROUTES } from "../src/api/routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { RemoteRepository } from "../src/client/remote.ts";
import type { TaskRun } from "../src/jobs/task-history.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import { tempDir } from "./helpers.ts";
import { type Arrived, smtpServer } from "./mail-fixture.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const lxc = lxcAvailable();
if (!lxc.ok) console.error(`\n*** SKIPPED: the scheduler's end-to-end test needs the demo container: ${lxc.why}. ***\n`);

void describe("a plan carried out by the node's scheduler", { skip: lxc.ok ? false : lxc.why }, () => {
  const tmp = tempDir("gorde-plan-");
  let server: ServerProcess;
  let offsite: ServerProcess;
  let node: NodeProcess;
  let mail: { port: number; mails: Arrived[]; close(): Promise<void> };
  const hooks: { job: string; result: string; newBytes?: number; message?: string }[] = [];
  const webhook = http.createServer((req, res) => {
    let body = "";
    req.on("data", (b: Buffer) => (body += b.toString()));
    req.on("end", () => {
      hooks.push(JSON.parse(body) as { job: string; result: string });
      res.end("ok");
    });
  });

  before(async () => {
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store: path.join(tmp.dir, "store") } });
    offsite = await startServerProcess({ stateDir: path.join(tmp.dir, "offsite"), datastores: { copy: path.join(tmp.dir, "copy") } });
    node = await startNodeProcess({ name: "node1", dataDir: path.join(tmp.dir, "node1"), serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
    mail = await smtpServer();
    await new Promise<void>((resolve) => webhook.listen(0, "127.0.0.1", resolve));
  });

  after(async () => {
    await node?.stop();
    await server?.stop();
    await offsite?.stop();
    await mail?.close();
    webhook.close();
    tmp.cleanup();
  });

  void it("runs a job every 10 seconds: full, then incremental, retention applied, SMTP and webhook told", async () => {
    const env = { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node.fingerprint };
    const port = await freePort();
    assert.equal((await gorde(["guest", "create", "101", "--demo", "ct", "--port", String(port), "--node", node.url()], env)).code, 0);
    assert.equal((await gorde(["guest", "start", "101", "--node", node.url()], env)).code, 0);
    const planFile = path.join(tmp.dir, "plan.yaml");
    // This test is about the schedule, not the machine's load (other tests may just have ended).
    const plan = `version: 1
load: { max-load-per-cpu: 1000, max-cpu-pressure: 100, max-io-pressure: 100 }
guests:
  101: { rpo: 1h }
jobs:
  - name: every10
    type: backup
    schedule: "*:*:0/10"
    guests: [101]
    keep: { last: 1 }
    rate: 64M
    notes: "{{job}} on {{node}}"
  - { name: verify10, type: verify, schedule: "*:*:5/10" }
  - { name: drill10, type: drill, schedule: "*:*:5/20", guests: [101] }
notifications:
  targets:
    - { type: webhook, name: hook, url: "http://127.0.0.1:${(webhook.address() as AddressInfo).port}/gorde" }
    - { type: smtp, name: mail, host: 127.0.0.1, port: ${mail.port}, starttls: false, from: gorde@node1.test, to: [ops@example.test] }
`;
    fs.writeFileSync(planFile, plan);
    // A bad plan is refused with its line and changes nothing.
    fs.writeFileSync(path.join(tmp.dir, "bad.yaml"), plan.replace("guests: [101]", "guests: [101, 102]"));
    const bad = await gorde(["plan", "apply", path.join(tmp.dir, "bad.yaml"), "--node", node.url()], env);
    assert.equal(bad.code, 5);
    assert.match(bad.err, /line 9: job every10 names guest 102/);
    fs.writeFileSync(path.join(tmp.dir, "bad.yaml"), plan.replace("rate: 64M", "rate: 10"));
    const badRate = await gorde(["plan", "apply", path.join(tmp.dir, "bad.yaml"), "--node", node.url()], env);
    assert.match(badRate.err, /line 11: jobs.0.rate is invalid: a rate like 500K, 20M or 1G, at least 1K/);
    const applied = await gorde(["plan", "apply", planFile, "--node", node.url()], env);
    assert.equal(applied.code, 0, applied.err);
    assert.match(applied.out, /\+ job every10/);
    const again = await gorde(["plan", "apply", planFile, "--node", node.url()], env);
    assert.match(again.out, /no change/, "applied twice, the second changes nothing");
    const serverEnv = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint };
    const onServer = await gorde(["plan", "apply", planFile, "--server", `https://admin@127.0.0.1:${server.port}`], serverEnv);
    assert.equal(onServer.code, 0, onServer.err);
    assert.match(onServer.out, /jobs verify10 scheduled there/);

    const client = await NodeClient.connect(node.url(), { secret: "node-admin-1", fingerprint: node.fingerprint });
    try {
      let runs: TaskRun[] = [];
      // Two backups and a drill after the first of them, one job at a time on the node.
      const deadline = Date.now() + 90_000;
      while (Date.now() < deadline) {
        runs = (await client.call("listRuns")).filter((r) => r.job === "every10" && r.result !== "running");
        const drilled = hooks.some((h) => h.job === "drill10" && h.result === "ok");
        if (runs.length >= 2 && drilled && hooks.filter((h) => h.job === "every10").length >= 2 && mail.mails.length >= 2) break;
        await sleep(500);
      }
      const [second, first] = [runs[0]!, runs[1]!];
      assert.deepEqual([first.result, second.result], ["ok", "ok"], `runs: ${JSON.stringify(runs.map((r) => [r.result, r.error]))}`);
      // One run per elapse: the second is for the elapse 10 s after the first's. Their starts
      // tell less: each waits for a scheduler tick (up to a second) on a busy machine.
      const due = (r: TaskRun): number => Date.parse(/ due (\S+Z)$/m.exec(r.log)?.[1] ?? "");
      assert.equal(due(second) - due(first), 10_000, `one run per elapse: ${first.log} / ${second.log}`);
      assert.ok(first.start < second.start);
      assert.ok(first.newBytes! > 0 && first.reusedBytes === 0, "the first backup is full");
      assert.ok(second.reusedBytes! > 0 && second.newBytes! < first.newBytes!, "the second is incremental");
      assert.match(second.log, /retention on ct\/101: \d+ removed, 1 kept/);
      assert.match(second.log, /bandwidth limited to 67108864 bytes\/s/);
      assert.match(second.log, /I\/O priority best-effort 7/);
      // The drill job restored the container's newest backup in a sandbox, booted and checked it
      // (one run may have come before the first backup: it failed for want of a snapshot).
      const drill = (await client.call("listRuns")).find((r) => r.job === "drill10" && r.result === "ok");
      assert.match(drill?.log ?? "", /guest 101: check note: ok/);
      assert.ok(hooks.some((h) => h.job === "drill10" && h.result === "ok" && /^1 drill passed: guest 101 RTO [\d.]+ s$/.test(h.message ?? "")), "the drill job notifies");
      assert.doesNotMatch(second.log, /could not lower the I\/O priority/);
    } finally {
      client.close();
    }
    // An offsite server pulls what the main server has, by a sync job of its own plan, from a remote its administrator added.
    const offsiteEnv = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: offsite.fingerprint };
    const remote = await gorde(["remote", "add", `https://admin@127.0.0.1:${offsite.port}`, "main", "--url", server.url("store"), "--remote-fingerprint", server.fingerprint], {
      ...offsiteEnv,
      GORDE_REMOTE_PASSWORD: "admin-pass-1",
    });
    assert.equal(remote.code, 0, remote.err);
    const offsitePlan = path.join(tmp.dir, "offsite.yaml");
    fs.writeFileSync(offsitePlan, `version: 1\nload: { max-load-per-cpu: 1000, max-cpu-pressure: 100, max-io-pressure: 100 }\nguests: {}\njobs:\n  - name: offsite\n    type: sync\n    schedule: "*:*:0/10"\n    remote: main\n`);
    const synced = await gorde(["plan", "apply", offsitePlan, "--server", `https://admin@127.0.0.1:${offsite.port}`], offsiteEnv);
    assert.equal(synced.code, 0, synced.err);
    let copied: { snapshot: string }[] = [];
    for (const deadline = Date.now() + 30_000; !copied.length && Date.now() < deadline; await sleep(500)) {
      const r = await gorde(["snapshots", `https://admin@127.0.0.1:${offsite.port}/copy`, "--json", "--fingerprint", offsite.fingerprint], { GORDE_PASSWORD: "admin-pass-1" });
      copied = JSON.parse(r.out || "[]") as { snapshot: string }[];
    }
    assert.ok(copied.some((c) => c.snapshot.startsWith("ct/101/")), "the offsite server pulled the container's backup");
    // While a sync reads a snapshot, the server refuses to remove it and the node's retention
    // waits for its next run (logged): with the offsite server stopped, the next run's applies.
    await offsite.stop();
    const syncStopped = Date.now();

    // The server ran the verify job as a task of its own.
    const admin = await RemoteRepository.connect(`https://admin@127.0.0.1:${server.port}`, { secret: "admin-pass-1", fingerprint: server.fingerprint }, true);
    try {
      let verified: TaskRun | undefined;
      for (const deadline = Date.now() + 30_000; !verified && Date.now() < deadline; await sleep(500)) {
        verified = (await admin.conn.call(ROUTES, "listRuns")).find((r) => r.job === "verify10" && r.result === "ok");
      }
      assert.ok(verified, "the server's scheduler ran the verify job");
      assert.match(verified.log, /task UPID-/);
    } finally {
      admin.close();
    }
    const status = await gorde(["plan", "status", "--node", node.url(), "--json"], env);
    const rows = JSON.parse(status.out) as { job: string; last: { result: string } | null; next: string | null }[];
    assert.deepEqual(rows.map((r) => r.job), ["every10", "drill10"]);
    // (Once under CI load the last run had failed: its error is in the message, to find why.)
    assert.equal(rows[0]!.last?.result, "ok", `the last run of every10: ${JSON.stringify(rows[0])}`);
    assert.ok(rows[0]!.next && Date.parse(rows[0]!.next) > Date.now() - 1000);
    // Stopped, the node starts no more runs: the datastore shows what retention left.
    const told = await NodeClient.connect(node.url(), { secret: "node-admin-1", fingerprint: node.fingerprint });
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(500)) {
      const runs = await told.call("listRuns");
      if (runs.some((r) => r.job === "every10" && r.start > syncStopped && /retention on ct\/101: \d+ removed, 1 kept/.test(r.log))) break;
    }
    const story = (await told.call("listRuns").finally(() => told.close())).map((r) => `${r.job} ${r.result} ${r.error ?? ""}\n${r.log}`).join("\n");
    await node.stop();
    const snaps = await gorde(["snapshots", server.url("store"), "ct/101", "--json", "--fingerprint", server.fingerprint], { GORDE_PASSWORD: "admin-pass-1" });
    const finished = (JSON.parse(snaps.out) as { finished: boolean; notes: string | null }[]).filter((s) => s.finished);
    assert.equal(finished.length, 1, `keep last 1; the runs before the stop:\n${story}\nthe node:\n${node.stderr()}`);
    assert.equal(finished[0]!.notes, "every10 on node1");
    const told10 = hooks.filter((h) => h.job === "every10");
    assert.ok(told10.length > 0, "the webhook was told of every10's runs");
    assert.ok(told10.every((h) => h.result === "ok"), `every10 told: ${JSON.stringify(told10)}`);
    assert.ok(hooks.some((h) => h.job === "verify10" && h.result === "ok" && (h as { node?: string }).node === "backup server"), "the server's job notifies too");
    assert.ok(mail.mails.some((m) => /Subject: .*every10/.test(m.raw.toString())));
  });
});
