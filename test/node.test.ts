// Nodes end to end: a backup server and two `gorde node` processes; the demo VM (QEMU) and
// the demo container (LXC) run on the first, are backed up live (full, then incremental
// with only dirty chunks read), and their first snapshots come back as new guests on the
// second node with the data of that snapshot. Then bad input and failures mid-backup.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { GuestBackupResult, GuestStatus } from "../src/api/node-routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { decodeDynamicIndex } from "../src/format/dynamic-index.ts";
import { SHARD_HEX } from "../src/format/magic.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import { QEMU } from "../src/node/qemu.ts";
import { serviceGet } from "./guest-fixture.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const haveQemu = spawnSync(QEMU, ["--version"]).status === 0;
const lxc = lxcAvailable();
const why = !haveQemu ? `${QEMU} is not installed (scripts/setup.sh installs it as root)` : !lxc.ok ? lxc.why : undefined;
if (why) console.error(`\n*** SKIPPED: node end-to-end tests: ${why}. ***\n`);

void describe("nodes and guests", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-node-");
  let server: ServerProcess;
  let node1: NodeProcess;
  let node2: NodeProcess;
  const CLUSTER_SECRET = "cluster-pass-1";
  let node1Opts: Parameters<typeof startNodeProcess>[0];

  const guest = (node: NodeProcess, args: string[], user = "admin", password = "node-admin-1") =>
    gorde(["guest", ...args, "--node", node.url(user), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: password }, 240_000);
  const json = async <T>(node: NodeProcess, args: string[]): Promise<T> => {
    const r = await guest(node, [...args, "--json"]);
    assert.equal(r.code, 0, `gorde guest ${args.join(" ")}: ${r.err}`);
    return JSON.parse(r.out) as T;
  };

  before(async () => {
    const store = path.join(tmp.dir, "store");
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store } });
    const admin = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint, GORDE_NEW_PASSWORD: CLUSTER_SECRET };
    const srv = `https://admin@127.0.0.1:${server.port}`;
    // One identity for every node of the cluster, allowed to back up, read and prune its groups.
    assert.equal((await gorde(["user", "add", srv, "cluster"], admin)).code, 0);
    assert.equal((await gorde(["acl", "set", srv, "/datastore/store", "cluster", "DatastorePowerUser"], admin)).code, 0);
    const common = { serverUrl: server.url("store", "cluster"), serverFingerprint: server.fingerprint, serverSecret: CLUSTER_SECRET };
    node1Opts = { name: "node1", dataDir: path.join(tmp.dir, "node1"), ...common };
    node1 = await startNodeProcess(node1Opts);
    node2 = await startNodeProcess({ name: "node2", dataDir: path.join(tmp.dir, "node2"), ...common });
  });

  after(async () => {
    await node1?.stop();
    await node2?.stop();
    await server?.stop();
    // Stopping a node stops its guests: no QEMU or container of this test is left.
    const left = spawnSync("pgrep", ["-af", tmp.dir]).stdout.toString().trim();
    if (left) console.error(`node1's log:\n${node1?.stderr()}\nnode2's log:\n${node2?.stderr()}`);
    tmp.cleanup();
    assert.equal(left, "", "no process of the test's guests is left");
  });

  void it("backs up a running VM and container live and restores their first snapshots as new guests on a second node", async () => {
    const [vmPort, ctPort] = [await freePort(), await freePort()];
    await json(node1, ["create", "100", "--demo", "vm", "--port", String(vmPort), "--disk-size", "256"]);
    await json(node1, ["create", "101", "--demo", "ct", "--port", String(ctPort)]);
    await json(node1, ["start", "100"]);
    await json(node1, ["start", "101"]);
    for (const port of [vmPort, ctPort]) {
      await serviceGet(port, "/index.html");
      assert.equal(await serviceGet(port, "/cgi-bin/counter"), "1\n");
      await serviceGet(port, "/cgi-bin/note", 10_000, { method: "POST", body: "note at the first backup" });
      await serviceGet(port, "/cgi-bin/fill?4");
    }
    const vmFull = await json<GuestBackupResult>(node1, ["backup", "100"]);
    const ctFull = await json<GuestBackupResult>(node1, ["backup", "101"]);
    assert.match(vmFull.log.join("\n"), /no dirty bitmap/);
    assert.match(vmFull.log.join("\n"), /file systems frozen by the guest agent for the instant[^]*file systems thawed/);
    assert.equal(vmFull.archives[0]!.dirtyChunks ?? null, null);
    // The guests ran on through their backups.
    assert.equal((await json<GuestStatus>(node1, ["status", "100"])).state, "running");
    assert.equal((await json<GuestStatus>(node1, ["status", "101"])).state, "running");

    for (const port of [vmPort, ctPort]) {
      await serviceGet(port, "/cgi-bin/note", 10_000, { method: "POST", body: "note at the second backup" });
      await serviceGet(port, "/cgi-bin/fill?1");
    }
    const vmIncr = await json<GuestBackupResult>(node1, ["backup", "100"]);
    const ctIncr = await json<GuestBackupResult>(node1, ["backup", "101"]);
    const full = vmFull.archives[0]!;
    const incr = vmIncr.archives[0]!;
    console.log(`VM: full read ${full.readChunks} chunks; incremental ${incr.dirtyChunks} dirty, ${incr.readChunks} read`);
    assert.ok(incr.dirtyChunks !== null && incr.dirtyChunks !== undefined && incr.dirtyChunks > 0, "the incremental used the dirty bitmap");
    assert.ok(incr.readChunks! <= incr.dirtyChunks && incr.readChunks! < full.readChunks! / 2, "only dirty chunks were read");
    assert.match(vmIncr.log.join("\n"), /chunks dirty since vm\/100\//);
    assert.ok(ctIncr.reusedBytes > 0, "the container's unchanged files were reused");

    // The snapshot holds the guest's config and the backup's log.
    const manifestOf = (snap: string) => JSON.parse(fs.readFileSync(path.join(tmp.dir, "store", snap, "manifest.json"), "utf8")) as { config: { id: number; kind: string }; log: string[] };
    assert.deepEqual([manifestOf(vmFull.snapshot).config.id, manifestOf(vmFull.snapshot).config.kind], [100, "vm"]);
    assert.ok(manifestOf(ctIncr.snapshot).log.some((l) => l.includes("container frozen")));

    for (const port of [vmPort, ctPort]) await serviceGet(port, "/cgi-bin/note", 10_000, { method: "POST", body: "note after the backups" });

    // The first snapshots, restored on the second node as new guests and started.
    const vmCopy = await json<GuestStatus>(node2, ["restore", vmFull.snapshot, "--id", "200", "--start"]);
    const ctCopy = await json<GuestStatus>(node2, ["restore", ctFull.snapshot, "--id", "201", "--start"]);
    assert.equal(vmCopy.state, "running");
    assert.equal(ctCopy.state, "running");
    for (const [copy, original] of [
      [vmCopy, vmPort],
      [ctCopy, ctPort],
    ] as const) {
      assert.notEqual(copy.httpPort, original, "a restored copy never takes its original's port");
      assert.equal(await serviceGet(copy.httpPort, "/cgi-bin/note"), "note at the first backup");
      assert.equal(await serviceGet(original, "/cgi-bin/note"), "note after the backups");
    }
    const cfg = await json<{ disks: Record<string, string>; name: string }>(node2, ["config", "200"]);
    assert.ok(cfg.disks.disk0!.startsWith(path.join(tmp.dir, "node2")), "the restored disk lives on the second node");

    // An existing id is refused without --force; with it, the guest is replaced.
    const again = await guest(node2, ["restore", vmFull.snapshot, "--id", "200"]);
    assert.equal(again.code, 3);
    assert.match(again.err, /guest 200 exists and running on node node2; give another --id or --force/);
    // A replacement whose restore fails midway (a chunk of the snapshot is missing) leaves the
    // old guest as it was: its data, its configuration, running.
    const snapDir = path.join(tmp.dir, "store", ctIncr.snapshot);
    const digests = fs
      .readdirSync(snapDir)
      .filter((f) => f.endsWith(".didx"))
      .flatMap((f) => {
        const idx = decodeDynamicIndex(fs.readFileSync(path.join(snapDir, f)));
        return Array.from({ length: idx.count }, (_, i) => idx.digest(i).toString("hex"));
      });
    const chunk = path.join(tmp.dir, "store", ".chunks", digests.at(-1)!.slice(0, SHARD_HEX), digests.at(-1)!);
    const configBefore = await json<unknown>(node2, ["config", "201"]);
    fs.renameSync(chunk, `${chunk}.aside`);
    try {
      const failed = await guest(node2, ["restore", ctIncr.snapshot, "--id", "201", "--force", "--start"]);
      assert.notEqual(failed.code, 0, failed.err);
      // The task's log, then the client's own word.
      assert.match(failed.err.trim().split("\n").at(-1)!, /^gorde guest: chunk [0-9a-f]{64} is missing from the datastore; run verify\.$/, failed.err);
    } finally {
      fs.renameSync(`${chunk}.aside`, chunk);
    }
    assert.deepEqual(await json<unknown>(node2, ["config", "201"]), configBefore);
    const kept = await json<GuestStatus>(node2, ["status", "201"]);
    assert.equal(kept.state, "running");
    assert.equal(await serviceGet(kept.httpPort, "/cgi-bin/note"), "note at the first backup");
    const replaced = await json<GuestStatus>(node2, ["restore", ctIncr.snapshot, "--id", "201", "--force", "--start"]);
    assert.equal(await serviceGet(replaced.httpPort, "/cgi-bin/note"), "note at the second backup");
    await json(node2, ["stop", "200"]);
    await json(node2, ["stop", "201"]);
  });

  void it("a node killed leaves its guests running; started again, it adopts them and backs them up from where it was", async () => {
    const was = { vm: await json<GuestStatus>(node1, ["status", "100"]), ct: await json<GuestStatus>(node1, ["status", "101"]) };
    assert.equal(was.vm.state, "running");
    assert.equal(was.ct.state, "running");
    await node1.stop("SIGKILL");
    const alive = (pid: number): boolean => {
      try {
        return !/^State:\s+[ZX]/m.test(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
      } catch {
        return false;
      }
    };
    await sleep(1000);
    assert.ok(alive(was.vm.pid!), "QEMU outlived the node");
    assert.ok(alive(was.ct.pid!), "the container's init outlived the node");
    // QEMU forwards the VM's port itself: its service answers with no node running.
    assert.equal(await serviceGet(was.vm.httpPort, "/cgi-bin/note"), "note after the backups");

    node1 = await startNodeProcess(node1Opts);
    assert.match(node1.stderr(), new RegExp(`VM 100 was running \\(QEMU pid ${was.vm.pid}\\): adopted, its monitor connected again; its dirty bitmaps since vm/100/\\S+ go on`));
    assert.match(node1.stderr(), new RegExp(`container 101 was running \\(init pid ${was.ct.pid}\\): adopted`));
    const vm = await json<GuestStatus>(node1, ["status", "100"]);
    const ct = await json<GuestStatus>(node1, ["status", "101"]);
    assert.deepEqual([vm.state, vm.pid, ct.state, ct.pid], ["running", was.vm.pid, "running", was.ct.pid]);
    assert.ok(vm.uptimeSeconds! >= was.vm.uptimeSeconds!, "its uptime counts from QEMU's start");
    // The container's service is forwarded again; its data is the one it had.
    assert.equal(await serviceGet(ct.httpPort, "/cgi-bin/note"), "note after the backups");
    // The VM's next backup goes on from the bitmaps of the last one: only dirty chunks are read.
    await serviceGet(vm.httpPort, "/cgi-bin/note", 10_000, { method: "POST", body: "note after the adoption" });
    const incr = await json<GuestBackupResult>(node1, ["backup", "100"]);
    assert.match(incr.log.join("\n"), /chunks dirty since vm\/100\//);
    // That snapshot forgotten on the server (a prune between two backups): the bitmaps count
    // from a snapshot no backup can build on, so the next backup drops them and reads the
    // disk whole; the one after it is incremental again.
    const adminEnv = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint };
    const forgotten = await gorde(["forget", server.url("store"), incr.snapshot], adminEnv);
    assert.equal(forgotten.code, 0, forgotten.err);
    await serviceGet(vm.httpPort, "/cgi-bin/note", 10_000, { method: "POST", body: "note after a snapshot was forgotten" });
    const whole = await json<GuestBackupResult>(node1, ["backup", "100"]);
    assert.match(whole.log.join("\n"), new RegExp(`dirty bitmaps record changes since ${incr.snapshot} on .*, but the newest snapshot there is vm/100/\\S+: every disk is read whole`));
    assert.doesNotMatch(whole.log.join("\n"), /chunks dirty since/);
    const after = await json<GuestBackupResult>(node1, ["backup", "100"]);
    assert.match(after.log.join("\n"), new RegExp(`chunks dirty since ${whole.snapshot}`));
    const ctBackup = await json<GuestBackupResult>(node1, ["backup", "101"]);
    assert.ok(ctBackup.reusedBytes > 0);
    // Stopped through the adopted monitor and LXC: gone, and started again as usual.
    await json(node1, ["stop", "101"]);
    assert.ok(!alive(was.ct.pid!), "the adopted container stopped");
    await json(node1, ["start", "101"]);
    assert.equal(await serviceGet(ct.httpPort, "/cgi-bin/note"), "note after the backups");
  });

  void it("runs backups and restores as tasks of the node: their logs followed live, aborted on request", async () => {
    // Without --json the task's log goes to stderr as it is written, the result to stdout.
    const backup = await guest(node1, ["backup", "101"]);
    assert.equal(backup.code, 0, backup.err);
    assert.match(backup.err, /backup of ct 101 \(.*\) on node node1, mode snapshot/);
    assert.match(backup.out, /^ct\/101\/\S+: [\d.]+ s, .* new, .* reused\n$/);
    const snapshot = /^(\S+): /.exec(backup.out)![1]!;
    const restore = await guest(node2, ["restore", snapshot, "--id", "202"]);
    assert.equal(restore.code, 0, restore.err);
    assert.match(restore.err, /restoring the root file system/);
    assert.match(restore.out, new RegExp(`restored ${snapshot} as ct 202`));

    const client = await NodeClient.connect(node1.url(), { secret: "node-admin-1", fingerprint: node1.fingerprint });
    try {
      const tasks = await client.call("listTasks");
      const done = tasks.find((t) => t.type === "backup" && t.target === "101" && t.state === "ok");
      assert.ok(done, "the backup is a task in the node's task list");
      assert.match((await client.call("taskLog", { params: { id: done.id } })).lines.join("\n"), /backup of ct 101/);

      // Aborted as soon as it starts: the task ends aborted, the container runs on, thawed.
      const abort = new AbortController();
      const aborted = await client
        .backup(101, {}, (e) => {
          if (e.type === "log") abort.abort();
        }, abort.signal)
        .then(() => undefined, (err: Error) => err);
      assert.ok(aborted, "the aborted backup did not succeed");
      const last = (await client.call("listTasks")).find((t) => t.type === "backup" && t.target === "101");
      assert.equal(last?.state, "aborted");
      assert.equal((await client.call("guestStatus", { params: { id: 101 } })).state, "running");
      const { httpPort } = await client.call("guestConfig", { params: { id: 101 } });
      assert.equal(await serviceGet(httpPort, "/cgi-bin/note"), "note after the backups", "the container answers after the aborted backup");
    } finally {
      client.close();
    }
    await json(node2, ["remove", "202"]);
  });

  void it("refuses bad input clearly and starts nothing half-way", async () => {
    const port = await freePort();
    await json(node1, ["create", "110", "--demo", "ct", "--port", String(port)]);
    const inUse = await guest(node1, ["create", "110", "--demo", "ct", "--port", String(await freePort())]);
    assert.equal(inUse.code, 3);
    assert.match(inUse.err, /guest id 110 is in use on node node1/);
    const samePort = await guest(node1, ["create", "111", "--demo", "ct", "--port", String(port)]);
    assert.equal(samePort.code, 3);
    assert.match(samePort.err, new RegExp(`port ${port} is already the service port of guest 110`));

    const cfg = path.join(tmp.dir, "bad.json");
    fs.writeFileSync(cfg, JSON.stringify({ kind: "vm", id: 112, name: "x", memoryMiB: 128, cpus: 1, disks: { disk0: "/nonexistent/disk.raw" }, httpPort: 20112, cpu: 2 }));
    const unknownKey = await guest(node1, ["create", "112", "--config", cfg]);
    assert.equal(unknownKey.code, 5);
    assert.match(unknownKey.err, /unknown key "cpu"/);
    fs.writeFileSync(cfg, JSON.stringify({ kind: "vm", id: 112, name: "x", memoryMiB: 128, cpus: 1, disks: { disk0: "/nonexistent/disk.raw" }, httpPort: 20112 }));
    const missingDisk = await guest(node1, ["create", "112", "--config", cfg]);
    assert.equal(missingDisk.code, 3);
    assert.match(missingDisk.err, /disk \/nonexistent\/disk.raw of VM 112 does not exist/);

    // A port taken by another program: refused at start, nothing runs.
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", r));
    try {
      const start = await guest(node1, ["start", "110"]);
      assert.notEqual(start.code, 0);
      assert.match(start.err, new RegExp(`port ${port} on 127.0.0.1 is in use`));
      assert.equal((await json<GuestStatus>(node1, ["status", "110"])).state, "stopped");
    } finally {
      blocker.close();
    }
    await json(node1, ["remove", "110"]);
    assert.ok(!fs.existsSync(path.join(tmp.dir, "node1", "rootfs", "110")));
  });

  void it("locks its API down: no credentials 401, an auditor only looks, a VM user backs up but does not create", async () => {
    const admin = { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node1.fingerprint };
    for (const [user, role] of [
      ["auditor", "PVEAuditor"],
      ["operator", "PVEVMUser"],
    ] as const) {
      assert.equal((await gorde(["user", "add", node1.url(), user], { ...admin, GORDE_NEW_PASSWORD: `${user}-pass` })).code, 0);
      assert.equal((await gorde(["acl", "set", node1.url(), "/vms", user, role], admin)).code, 0);
    }
    assert.equal((await rawRequest(node1, "/api/guests")).status, 401);
    // The node validates what reaches it, whatever the client checked before.
    const admin1 = "admin:node-admin-1";
    const unknownKey = await rawRequest(node1, "/api/guests", { method: "POST", auth: admin1, body: JSON.stringify({ demo: { kind: "ct", id: 140, httpPort: 20140, cpu: 2 } }) });
    assert.equal(unknownKey.status, 400);
    assert.match(unknownKey.body, /request body/);
    const badJson = await rawRequest(node1, "/api/guests/100/backup", { method: "POST", auth: admin1, body: "{mode:" });
    assert.equal(badJson.status, 400);
    assert.match(badJson.body, /not valid JSON/);
    const badId = await rawRequest(node1, "/api/guests/12/config", { auth: admin1 });
    assert.equal(badId.status, 400);
    const badSnap = await rawRequest(node1, "/api/restore", { method: "POST", auth: admin1, body: JSON.stringify({ snapshot: "vm/100/../../etc" }) });
    assert.equal(badSnap.status, 400);
    assert.ok(!fs.existsSync(path.join(tmp.dir, "node1", "guests", "140.json")), "nothing was created");
    const wrong = await guest(node1, ["list"], "admin", "wrong-password");
    assert.equal(wrong.code, 7);
    const list = await guest(node1, ["list"], "auditor", "auditor-pass");
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, /vm 100 vm100/);
    const stop = await guest(node1, ["stop", "101"], "auditor", "auditor-pass");
    assert.equal(stop.code, 7);
    assert.match(stop.err, /permission denied: auditor may not stop guest 101/);
    const create = await guest(node1, ["create", "120", "--demo", "ct", "--port", String(await freePort())], "operator", "operator-pass");
    assert.equal(create.code, 7);
    const backup = await guest(node1, ["backup", "101", "--json"], "operator", "operator-pass");
    assert.equal(backup.code, 0, backup.err);
  });

  void it("a guest killed mid-backup or a server gone fails the backup clearly; the next one works", async () => {
    // QEMU killed while its disk is read: the backup fails naming it; started again, the next backup works.
    const pid = (await json<GuestStatus>(node1, ["status", "100"])).pid!;
    const runDir = path.join(tmp.dir, "node1", "run", "100");
    fs.rmSync(path.join(runDir, "backup.sock"), { force: true });
    // Killed the moment its live view is exported, while the disk is being read.
    const watcher = fs.watch(runDir, (_, file) => {
      if (file === "backup.sock") process.kill(pid, "SIGKILL");
    });
    const failed = await guest(node1, ["backup", "100", "--mode", "suspend"]);
    watcher.close();
    assert.notEqual(failed.code, 0);
    console.log(`backup of a VM killed mid-read: ${failed.err.trim()}`);
    assert.match(failed.err, /QEMU of VM 100 exited during the backup|backup of guest 100 failed/);
    assert.equal((await json<GuestStatus>(node1, ["status", "100"])).state, "stopped");
    await json(node1, ["start", "100"]);
    const afterKill = await json<GuestBackupResult>(node1, ["backup", "100"]);
    assert.match(afterKill.log.join("\n"), /no dirty bitmap/);

    // The container is left running and thawed when its backup fails for a server gone.
    await server.stop();
    const gone = await guest(node1, ["backup", "101"]);
    assert.notEqual(gone.code, 0);
    assert.match(gone.err, /backup of guest 101 failed: .*(connect|server)/);
    const st = await json<GuestStatus>(node1, ["status", "101"]);
    assert.equal(st.state, "running");
    assert.equal(st.lastBackup?.ok, false);
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store: path.join(tmp.dir, "store") }, port: server.port });
    const next = await json<GuestBackupResult>(node1, ["backup", "101"]);
    assert.ok(next.snapshot.startsWith("ct/101/"));
    // A VM backup in stop mode shuts it down and starts it again.
    const stopMode = await json<GuestBackupResult>(node1, ["backup", "100", "--mode", "stop"]);
    assert.match(stopMode.log.join("\n"), /started again/);
    assert.equal((await json<GuestStatus>(node1, ["status", "100"])).state, "running");
  });
});

void describe("a node whose datastore is full", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-node-full-");
  const mnt = path.join(tmp.dir, "small");
  let server: ServerProcess | undefined;
  let node: NodeProcess | undefined;
  after(async () => {
    await node?.stop();
    await server?.stop();
    spawnSync("umount", [mnt]);
    tmp.cleanup();
  });

  void it("fails the container's backup clearly, leaves it running and thawed, and backs up once there is room", async () => {
    fs.mkdirSync(mnt);
    // The datastore on a tmpfs too small for the guest's data (root: CI and this machine run as root).
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt]).status, 0, "mount a small tmpfs");
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { small: path.join(mnt, "store") } });
    node = await startNodeProcess({ name: "node3", dataDir: path.join(tmp.dir, "node3"), serverUrl: server.url("small"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
    const run = (args: string[]) => gorde(["guest", ...args, "--node", node!.url(), "--fingerprint", node!.fingerprint], { GORDE_PASSWORD: "node-admin-1" }, 120_000);
    const port = await freePort();
    assert.equal((await run(["create", "130", "--demo", "ct", "--port", String(port)])).code, 0);
    assert.equal((await run(["start", "130"])).code, 0);
    await serviceGet(port, "/cgi-bin/fill?12");
    const full = await run(["backup", "130"]);
    assert.notEqual(full.code, 0);
    assert.match(full.err, /backup of guest 130 failed: the datastore is (full|out of space)/);
    const st = JSON.parse((await run(["status", "130", "--json"])).out) as GuestStatus;
    assert.equal(st.state, "running", "the container was thawed");
    assert.equal(await serviceGet(port, "/cgi-bin/counter", 5000), "1\n");
    assert.equal(spawnSync("mount", ["-o", "remount,size=64m", mnt]).status, 0);
    const next = await run(["backup", "130", "--json"]);
    assert.equal(next.code, 0, next.err);
    assert.match((JSON.parse(next.out) as GuestBackupResult).snapshot, /^ct\/130\//);
    assert.equal((await run(["stop", "130"])).code, 0);
  });
});

/** One raw request to a node's API (no pinning: the test only reads statuses and errors). */
async function rawRequest(node: NodeProcess, p: string, opts: { method?: string; body?: string; auth?: string } = {}): Promise<{ status: number; body: string }> {
  const http2 = await import("node:http2");
  return new Promise((resolve, reject) => {
    const c = http2.connect(`https://127.0.0.1:${node.port}`, { rejectUnauthorized: false });
    c.on("error", reject);
    const headers: Record<string, string> = { ":path": p, ":method": opts.method ?? "GET" };
    if (opts.auth) headers.authorization = `Basic ${Buffer.from(opts.auth).toString("base64")}`;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    const req = c.request(headers);
    let status = 0;
    let body = "";
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (b: Buffer) => (body += b.toString()));
    req.on("end", () => {
      resolve({ status, body });
      c.close();
    });
    req.end(opts.body);
  });
}
