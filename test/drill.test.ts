// Restore drills end to end: a backup server and a `gorde node` with the demo VM (QEMU) and
// container (LXC) running and backed up; drills of both pass while the production guests
// keep answering and their disks stay untouched; a corrupted chunk fails a drill at verify
// before anything boots; a guest that never boots fails on its boot check within its
// timeout; a node killed mid-drill leaves a sandbox its next start removes; bad input is
// refused in one sentence with nothing started.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import type { GuestConfig } from "../src/api/guest-config.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { decodeDynamicIndex } from "../src/format/dynamic-index.ts";
import { DIGEST_SIZE, SHARD_HEX } from "../src/format/magic.ts";
import { type Manifest, encodeManifest, sealManifest } from "../src/format/manifest.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import { QEMU } from "../src/node/qemu.ts";
import { serviceGet } from "./guest-fixture.ts";
import { describeTree, tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const haveQemu = spawnSync(QEMU, ["--version"]).status === 0;
const lxc = lxcAvailable();
const why = !haveQemu ? `${QEMU} is not installed (scripts/setup.sh installs it as root)` : !lxc.ok ? lxc.why : undefined;
if (why) console.error(`\n*** SKIPPED: drill end-to-end tests: ${why}. ***\n`);

/** `gorde drill show --json` */
type Shown = DrillJson & { restored_s: number; booted_s: number; bytes_restored: number; sandbox: number; log: string };

interface DrillJson {
  id: number;
  guest: number;
  snapshot: string;
  result: "passed" | "failed" | "error";
  rpo_s: number;
  rto_s: number | null;
  checks: { name: string; ok: boolean; seconds: number; message: string }[];
}

/** Asks a guest's service every 200 ms until stopped: how many answers, which failed, the longest gap. */
function keepAsking(port: number, p: string): { stop(): Promise<{ answers: number; failures: string[]; maxGapMs: number }> } {
  let on = true;
  const failures: string[] = [];
  let answers = 0;
  let last = Date.now();
  let maxGapMs = 0;
  const loop = (async () => {
    while (on) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(3000) });
        await r.text();
        if (r.ok) {
          answers++;
          maxGapMs = Math.max(maxGapMs, Date.now() - last);
          last = Date.now();
        } else failures.push(`status ${r.status}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
      await sleep(200);
    }
  })();
  return {
    async stop() {
      on = false;
      await loop;
      return { answers, failures, maxGapMs };
    },
  };
}

function sha256File(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

void describe("restore drills", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-drill-");
  const CLUSTER_SECRET = "cluster-pass-1";
  let server: ServerProcess;
  let node: NodeProcess;
  const dataDir = path.join(tmp.dir, "node1");
  const store = path.join(tmp.dir, "store");
  const script = path.join(tmp.dir, "scripts", "note-check");
  let nodeOpts: Parameters<typeof startNodeProcess>[0];
  const ports = { vm: 0, ct: 0 };
  const snaps = { vm: "", ct: "" };

  // The command line where its contract is tested; the API (in this process) for the rest: a CLI start costs seconds on a loaded machine.
  let api: NodeClient;
  const connect = async (): Promise<void> => {
    api = await NodeClient.connect(node.url(), { secret: "node-admin-1", fingerprint: node.fingerprint });
  };
  const cli = (args: string[], password = "node-admin-1") => gorde([...args, "--node", node.url(), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: password }, 240_000);
  const json = async <T>(args: string[]): Promise<T> => {
    const r = await cli([...args, "--json"]);
    assert.equal(r.code, 0, `gorde ${args.join(" ")}: ${r.err}`);
    return JSON.parse(r.out) as T;
  };
  const createDemo = (kind: "vm" | "ct", id: number, port: number, diskMiB?: number) => api.call("createGuest", { json: { demo: { kind, id, httpPort: port, diskMiB } } });
  const backupOf = async (id: number): Promise<string> => (await api.backup(id, {})).snapshot;
  const drill = async (args: string[]): Promise<{ code: number; d: DrillJson; err: string }> => {
    const r = await cli(["drill", "run", ...args, "--json"]);
    assert.ok(r.out, `gorde drill run ${args.join(" ")} printed no JSON: ${r.err}`);
    return { code: r.code, d: JSON.parse(r.out) as DrillJson, err: r.err };
  };
  const manifestOf = (snap: string) => JSON.parse(fs.readFileSync(path.join(store, snap, "manifest.json"), "utf8")) as { archives: { name: string; indexes: { file: string }[] }[]; unprotected: { drill?: { result: string; rtoSeconds?: number; check?: string; message?: string; node?: string } } };
  /** nothing of a sandbox on the node: no guest in the drill range, no files, no marker */
  const noSandbox = async (): Promise<void> => {
    const list = await api.call("listGuests");
    assert.deepEqual(list.filter((g) => g.id >= 9900), [], "no sandbox guest is left");
    for (const d of ["images", "rootfs", "run", "drills"]) {
      const left = fs.existsSync(path.join(dataDir, d)) ? fs.readdirSync(path.join(dataDir, d)).filter((f) => /^99\d\d/.test(f) || f.startsWith(".restore-99")) : [];
      assert.deepEqual(left, [], `nothing of a sandbox in ${d}`);
    }
  };

  before(async () => {
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store } });
    const admin = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint, GORDE_NEW_PASSWORD: CLUSTER_SECRET };
    const srv = `https://admin@127.0.0.1:${server.port}`;
    assert.equal((await gorde(["user", "add", srv, "cluster"], admin)).code, 0);
    assert.equal((await gorde(["acl", "set", srv, "/datastore/store", "cluster", "DatastorePowerUser"], admin)).code, 0);
    // A health check script of the node's own, as PVE's hookscripts: root's, writable by no one else.
    fs.mkdirSync(path.dirname(script), { mode: 0o755 });
    fs.writeFileSync(script, '#!/bin/sh\nnote=$(curl -fsS --max-time 5 "http://$GORDE_SANDBOX_ADDRESS:$GORDE_SANDBOX_PORT/cgi-bin/note") || exit 1\necho "note: $note"\n', { mode: 0o755 });
    nodeOpts = {
      name: "node1",
      dataDir,
      serverUrl: server.url("store", "cluster"),
      serverFingerprint: server.fingerprint,
      serverSecret: CLUSTER_SECRET,
      extra: { scripts: { "note-check": script }, drill: { ids: { first: 9900, last: 9909 } } },
    };
    node = await startNodeProcess(nodeOpts);
    await connect();
    ports.vm = await freePort();
    ports.ct = await freePort();
    await createDemo("vm", 100, ports.vm, 256);
    await createDemo("ct", 101, ports.ct);
    await api.call("startGuest", { params: { id: 100 } });
    await api.call("startGuest", { params: { id: 101 } });
    for (const port of [ports.vm, ports.ct]) {
      await serviceGet(port, "/index.html", 120_000);
      await serviceGet(port, "/cgi-bin/note", 10_000, { method: "POST", body: "the note of the backup" });
    }
    snaps.vm = await backupOf(100);
    snaps.ct = await backupOf(101);
  });

  after(async () => {
    api?.close();
    await node?.stop();
    await server?.stop();
    const left = spawnSync("pgrep", ["-af", tmp.dir]).stdout.toString().trim();
    if (left) console.error(`the node's log:\n${node?.stderr()}`);
    tmp.cleanup();
    assert.equal(left, "", "no process of the test's guests or sandboxes is left");
  });

  void it("drills of the VM and the container pass while the production guests answer and their disks stay untouched", async () => {
    for (const [kind, id] of [
      ["vm", 100],
      ["ct", 101],
    ] as const) {
      const disk = kind === "vm" ? path.join(dataDir, "images", "100", "disk0.raw") : path.join(dataDir, "rootfs", "101", "data");
      const before = kind === "vm" ? sha256File(disk) : JSON.stringify([...describeTree(disk)]);
      const asking = keepAsking(ports[kind], "/index.html");
      const { code, d, err } = await drill([String(id)]);
      const answering = await asking.stop();
      assert.equal(code, 0, `drill of guest ${id}: ${err}`);
      assert.equal(d.result, "passed");
      assert.equal(d.guest, id);
      assert.equal(d.snapshot, snaps[kind], "the newest snapshot by default");
      assert.deepEqual(Object.keys(d).sort(), ["checks", "guest", "id", "result", "rpo_s", "rto_s", "snapshot"]);
      assert.deepEqual(d.checks.map((c) => [c.name, c.ok]), [["verify", true], ["restore", true], ["boot", true], ["port", true], ["note", true]]);
      for (const c of d.checks) assert.deepEqual(Object.keys(c).sort(), ["message", "name", "ok", "seconds"]);
      assert.ok(d.rpo_s >= 0 && d.rto_s !== null && d.rto_s > 0);
      assert.match(d.checks[0]!.message, /chunks of .* read through the backup server, CRC and digest checked/);
      assert.match(d.checks[2]!.message, kind === "vm" ? /"gorde-guest: up" on the serial console/ : /init \(pid \d+\) running/);
      const rec = await json<Shown>(["drill", "show", String(d.id)]);
      console.log(`${kind} drill: RPO ${d.rpo_s} s, restored at ${rec.restored_s} s, booted at ${rec.booted_s} s, RTO ${d.rto_s} s (${d.checks.map((c) => `${c.name} ${c.seconds} s`).join(", ")}); production answered ${answering.answers} times, longest gap ${answering.maxGapMs} ms`);
      assert.deepEqual(answering.failures, [], "the production guest answered through the drill");
      assert.ok(answering.answers > 5);
      assert.equal((await api.call("guestStatus", { params: { id } })).state, "running");
      assert.equal(kind === "vm" ? sha256File(disk) : JSON.stringify([...describeTree(disk)]), before, "the production guest's disk is untouched");
      assert.equal(await serviceGet(ports[kind], "/cgi-bin/note"), "the note of the backup");
      // Recorded on the node and in the snapshot on the server.
      assert.ok(rec.bytes_restored > 0 && rec.restored_s <= rec.booted_s && rec.booted_s <= rec.rto_s!);
      assert.ok(rec.sandbox >= 9900 && rec.sandbox <= 9909);
      assert.match(rec.log, /sandbox \d+ stopped and removed/);
      const onServer = manifestOf(d.snapshot).unprotected.drill;
      assert.equal(onServer?.result, "passed");
      assert.equal(onServer.rtoSeconds, d.rto_s);
      assert.equal(onServer.node, "node1");
      await noSandbox();
    }
    const list = await json<{ id: number; guest: number; result: string }[]>(["drill", "list", "--guest", "101"]);
    assert.deepEqual(list.map((x) => [x.guest, x.result]), [[101, "passed"]]);
  });

  void it("a snapshot with a corrupted chunk fails at verify, before anything is restored or booted", async () => {
    const m = manifestOf(snaps.ct);
    const payload = m.archives.find((a) => a.name === "root.tree")!.indexes[1]!.file;
    const idx = decodeDynamicIndex(fs.readFileSync(path.join(store, snaps.ct, payload)), payload);
    const hex = idx.entries.toString("hex", 8, 8 + DIGEST_SIZE);
    const file = path.join(store, ".chunks", hex.slice(0, SHARD_HEX), hex);
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length >> 1]! ^= 0x55;
    fs.writeFileSync(file, bad);
    try {
      const { code, d } = await drill(["101", "--snapshot", snaps.ct]);
      assert.equal(code, 1);
      assert.equal(d.result, "failed");
      assert.deepEqual(d.checks.map((c) => [c.name, c.ok]), [["verify", false]], "nothing was restored or booted");
      assert.match(d.checks[0]!.message, new RegExp(`chunk ${hex} of ${snaps.ct} is damaged`));
      assert.equal(d.rto_s, null);
      const onServer = manifestOf(snaps.ct).unprotected.drill;
      assert.deepEqual([onServer?.result, onServer?.check], ["failed", "verify"]);
      await noSandbox();
    } finally {
      fs.writeFileSync(file, good);
    }
  });

  void it("a snapshot whose service answers other data than it did at backup time fails on that probe", async () => {
    // What a backup that missed the service's data looks like (an answer held in memory,
    // never written to the disk): the note captured at backup time is not on the disk.
    const file = path.join(store, snaps.ct, "manifest.json");
    const original = fs.readFileSync(file);
    const m = JSON.parse(original.toString("utf8")) as { captures: { probe: string; state: string; digest?: string; excerpt?: string }[] };
    const note = m.captures.find((c) => c.probe === "note");
    assert.equal(note?.state, "captured", "the backup captured the note");
    const other = "a note the service held only in memory";
    Object.assign(note, { digest: createHash("sha256").update(other).digest("hex"), excerpt: other });
    // Sealed again, as that backup would have written it (an edit alone fails the manifest's checksum).
    fs.writeFileSync(file, encodeManifest(sealManifest(m as unknown as Manifest)));
    try {
      const { code, d } = await drill(["101", "--snapshot", snaps.ct]);
      assert.equal(code, 1);
      assert.equal(d.result, "failed");
      assert.deepEqual(d.checks.map((c) => [c.name, c.ok]), [["verify", true], ["restore", true], ["boot", true], ["port", true], ["note", false]]);
      assert.match(d.checks[4]!.message, /GET \/cgi-bin\/note answered "the note of the backup".*not the answer captured at backup time \("a note the service held only in memory/);
      assert.equal(d.rto_s, null);
      const onServer = manifestOf(snaps.ct).unprotected.drill;
      assert.deepEqual([onServer?.result, onServer?.check], ["failed", "note"]);
      await noSandbox();
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  void it("a guest that never boots fails on its boot check within its timeout", async () => {
    // A VM whose disk is blank: its kernel starts, finds no file system and never serves.
    const disk = path.join(tmp.dir, "blank.raw");
    fs.writeFileSync(disk, "");
    fs.truncateSync(disk, 64 * 1024 * 1024);
    const cfg = path.join(tmp.dir, "blank.json");
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        kind: "vm",
        id: 130,
        name: "blank",
        memoryMiB: 128,
        cpus: 1,
        disks: { disk0: disk },
        httpPort: await freePort(),
        healthChecks: { boot: { type: "serial", marker: "gorde-guest: up", timeoutSeconds: 5 }, probes: [{ type: "tcp", name: "port", timeoutSeconds: 5 }] },
      }),
    );
    assert.equal((await cli(["guest", "create", "130", "--config", cfg])).code, 0);
    await backupOf(130);
    const { code, d } = await drill(["130"]);
    assert.equal(code, 1);
    assert.equal(d.result, "failed");
    assert.deepEqual(d.checks.map((c) => [c.name, c.ok]), [["verify", true], ["restore", true], ["boot", false]]);
    const boot = d.checks[2]!;
    assert.match(boot.message, /no "gorde-guest: up" on the serial console within 5 s/);
    // Its time counts from QEMU's start, which itself takes seconds on a loaded machine.
    assert.ok(boot.seconds >= 5 && boot.seconds < 15, `the boot check gave up after ${boot.seconds} s`);
    await noSandbox();
  });

  void it("refuses bad input in one sentence and starts nothing", async () => {
    const before = (await api.listDrills()).length;
    const refused = async (args: string[], exit: number, message: RegExp): Promise<void> => {
      const r = await cli(["drill", "run", ...args]);
      assert.equal(r.code, exit, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, message);
      assert.equal(r.err.trim().split("\n").length, 1, `one sentence: ${r.err}`);
      assert.equal(r.out, "");
    };
    await refused(["555"], 3, /^gorde drill: no guest 555 on node node1\.$/m);
    await refused(["100", "--snapshot", snaps.ct], 2, new RegExp(`snapshot ${snaps.ct} is not of guest 100 \\(its backups are vm/100/…\\)\\.`));
    /** refused through the API: one sentence, nothing started */
    const refusedApi = async (req: { guest: number; snapshot?: string }, message: RegExp): Promise<void> => {
      const err = await api.startDrill(req).then(
        () => assert.fail(`drill of ${JSON.stringify(req)} was started`),
        (e: Error) => e,
      );
      assert.match(err.message, message);
      assert.match(err.message, /^[^\n]+\.$/);
    };
    await refusedApi({ guest: 100, snapshot: "vm/100/2020-01-01T00:00:00Z" }, /^snapshot vm\/100\/2020-01-01T00:00:00Z does not exist on the backup server\.$/);
    await refused(["abc"], 2, /"abc" is not a guest id/);

    // A malformed check in a guest's configuration is refused when it is set.
    await createDemo("ct", 140, await freePort());
    const cfg = await api.call("guestConfig", { params: { id: 140 } });
    assert.ok(cfg.kind === "ct");
    const file = path.join(tmp.dir, "ct140.json");
    fs.writeFileSync(file, JSON.stringify({ ...cfg, healthChecks: { boot: { type: "init" }, probes: [{ type: "http", name: "note", path: "cgi-bin/note" }] } }));
    const malformed = await cli(["guest", "config", "140", "--set", file]);
    assert.equal(malformed.code, 5);
    assert.match(malformed.err, /healthChecks\.probes\.0\.path is invalid: an absolute path of printable characters\.$/m);
    const reserved = await api.call("setGuestConfig", { params: { id: 140 }, json: { ...cfg, healthChecks: { boot: { type: "init" }, probes: [{ type: "tcp", name: "verify" }] } } }).catch((e: Error) => e);
    assert.match((reserved as Error).message, /healthChecks\.probes\.0\.name.*a name other than verify, restore and boot/);

    // A script the node does not define, then one that others may write: refused before anything starts.
    const withScript = (name: string): GuestConfig => ({ ...cfg, healthChecks: { boot: { type: "init", timeoutSeconds: 10 }, probes: [{ type: "tcp", name: "port", timeoutSeconds: 20 }, { type: "script", name: "note-script", script: name, timeoutSeconds: 20 }] } });
    await api.call("setGuestConfig", { params: { id: 140 }, json: withScript("not-defined") });
    await backupOf(140);
    await refusedApi({ guest: 140 }, /^script "not-defined" is not defined in the node's configuration \(scripts\)\.$/);
    await api.call("setGuestConfig", { params: { id: 140 }, json: withScript("note-check") });
    await backupOf(140);
    fs.chmodSync(script, 0o777);
    try {
      await refused(["140"], 2, /script note-check \(.*\) is writable by others than its owner\./);
    } finally {
      fs.chmodSync(script, 0o755);
    }
    assert.equal((await api.listDrills()).length, before, "no refused drill was recorded");
    assert.deepEqual((await api.call("listTasks")).filter((t) => t.type === "drill").length, (await api.listDrills()).length, "nor any task started");
    await noSandbox();

    // With its script safe again, the drill runs it against the sandbox.
    const { code, d } = await drill(["140"]);
    assert.equal(code, 0, JSON.stringify(d));
    assert.deepEqual(d.checks.map((c) => c.name), ["verify", "restore", "boot", "port", "note-script"]);
    assert.match(d.checks[4]!.message, /exited 0: note: first note of ct140/);
  });

  void it("a node killed during a drill leaves a sandbox that its next start removes", async () => {
    // The production guests stop first: a killed node would leave them running too.
    await api.call("stopGuest", { params: { id: 100 } });
    await api.call("stopGuest", { params: { id: 101 } });
    // The command follows the drill until the node is gone.
    const following = cli(["drill", "run", "100"]);
    // Wait until the sandbox's QEMU runs (its pid is in the drill's marker).
    const marker = path.join(dataDir, "drills", "9900.json");
    let qemuPid: number | undefined;
    for (let i = 0; i < 600 && qemuPid === undefined; i++) {
      await sleep(100);
      try {
        qemuPid = (JSON.parse(fs.readFileSync(marker, "utf8")) as { qemuPid?: number }).qemuPid;
      } catch {
        // not yet
      }
    }
    assert.ok(qemuPid, "the sandbox started");
    await node.stop("SIGKILL");
    assert.ok(fs.existsSync(`/proc/${qemuPid}`), "the sandbox's QEMU outlived the node");
    assert.ok(fs.existsSync(path.join(dataDir, "guests", "9900.json")));
    assert.notEqual((await following).code, 0, "the drill did not pass");
    api.close();
    node = await startNodeProcess(nodeOpts);
    await connect();
    assert.ok(!fs.existsSync(`/proc/${qemuPid}`) || /^State:\s+Z/m.test(fs.readFileSync(`/proc/${qemuPid}/status`, "utf8")), "the sandbox's QEMU was killed");
    await noSandbox();
    assert.match(node.stderr(), /removed sandbox 9900 of drill \d+ \(guest 100\), left by a node that stopped during the drill/);
    const last = (await json<{ guest: number; result: string; error: string }[]>(["drill", "list", "--guest", "100"]))[0]!;
    assert.deepEqual([last.result, last.error], ["error", "interrupted: the node stopped during the drill."]);
  });
});
