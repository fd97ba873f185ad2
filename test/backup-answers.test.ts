// Answers captured at backup time, end to end: a backup server and a `gorde node`; the demo
// container and VM are backed up live, and each snapshot's manifest holds its note's answer
// (the SHA-256 of the note's text) as `captured`, while a probe on the counter, which
// changes on every read, is recorded `unstable`. Stop mode reads the answer again once the
// guest runs again; a guest that was stopped already answers nothing, so nothing is captured.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { GuestConfig } from "../src/api/guest-config.ts";
import type { GuestBackupResult } from "../src/api/node-routes.ts";
import type { SnapshotJson } from "../src/api/routes.ts";
import type { Manifest } from "../src/format/manifest.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import { QEMU } from "../src/node/qemu.ts";
import { serviceGet } from "./guest-fixture.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const lxc = lxcAvailable();
const haveQemu = spawnSync(QEMU, ["--version"]).status === 0;
const why = !lxc.ok ? lxc.why : undefined;
if (why) console.error(`\n*** SKIPPED: answers captured at backup time: ${why}. ***\n`);
if (!haveQemu) console.error(`\n*** SKIPPED: the VM's answers captured at backup time: ${QEMU} is not installed. ***\n`);

const sha256 = (s: string): string => createHash("sha256").update(s).digest("hex");

void describe("answers captured at backup time", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-answers-");
  const store = path.join(tmp.dir, "store");
  let server: ServerProcess;
  let node: NodeProcess;

  const guest = (args: string[]) => gorde(["guest", ...args, "--node", node.url(), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: "node-admin-1" }, 240_000);
  const json = async <T>(args: string[]): Promise<T> => {
    const r = await guest([...args, "--json"]);
    assert.equal(r.code, 0, `gorde guest ${args.join(" ")}: ${r.err}`);
    return JSON.parse(r.out) as T;
  };
  const manifestOf = (snap: string): Manifest => JSON.parse(fs.readFileSync(path.join(store, snap, "manifest.json"), "utf8")) as Manifest;

  /** A demo guest whose health checks also mark the counter `expect: snapshot`, started, with a note posted. */
  async function demoGuest(kind: "vm" | "ct", id: number, note: string): Promise<number> {
    const port = await freePort();
    await json(["create", String(id), "--demo", kind, "--port", String(port), ...(kind === "vm" ? ["--disk-size", "256"] : [])]);
    const config = await json<GuestConfig>(["config", String(id)]);
    config.healthChecks!.probes.push({ type: "http", name: "counter", method: "GET", path: "/cgi-bin/counter", status: 200, expect: "snapshot", timeoutSeconds: 30 });
    const file = path.join(tmp.dir, `${id}.json`);
    fs.writeFileSync(file, JSON.stringify(config));
    await json(["config", String(id), "--set", file]);
    await json(["start", String(id)]);
    await serviceGet(port, "/cgi-bin/note", 120_000, { method: "POST", body: note });
    return port;
  }

  function assertCaptured(m: Manifest, note: string): void {
    console.log(`${m.type}/${m.id}: ${m.log!.filter((l) => / answer of probe /.test(l)).join("; ")}`);
    assert.equal(m.format, 3, "sealed (a checksum), with captures");
    const byProbe = new Map(m.captures?.map((c) => [c.probe, c]));
    assert.deepEqual(byProbe.get("note"), { probe: "note", path: "/cgi-bin/note", state: "captured", time: byProbe.get("note")!.time, status: 200, digest: sha256(note), excerpt: note });
    assert.ok(Math.abs(byProbe.get("note")!.time - m.time) < 120, "captured at the backup");
    const counter = byProbe.get("counter")!;
    assert.equal(counter.state, "unstable");
    assert.equal(counter.digest, undefined);
    assert.match(counter.message!, /the answers before and after the view differed: status 200, "\d+\\n"; then status 200, "\d+\\n"/);
    assert.equal(m.log!.filter((l) => / answer of probe (note|counter) /.test(l)).length, 2, "one log line per capture");
  }

  before(async () => {
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store } });
    node = await startNodeProcess({ name: "node1", dataDir: path.join(tmp.dir, "node1"), serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
  });

  after(async () => {
    await node?.stop();
    await server?.stop();
    tmp.cleanup();
  });

  void it("stores the container's note as captured and its counter as unstable, live, in stop mode, and not when stopped", async () => {
    const note = "Backups of the shop's container run at 02:30; ask Ane before changing them.\n";
    const port = await demoGuest("ct", 110, note);
    const live = await json<GuestBackupResult>(["backup", "110"]);
    const m = manifestOf(live.snapshot);
    assertCaptured(m, note);
    // The first read comes before the freeze (it logs nothing), the second once the container runs again.
    const log = m.log!.join("\n");
    assert.match(log, /container frozen[^]*container thawed[^]*answer of probe note \(GET \/cgi-bin\/note\): captured, status 200, sha256 [0-9a-f]{64}/);
    assert.equal(await serviceGet(port, "/cgi-bin/note", 5000), note, "the service runs on");

    // The listing shows the answers' states.
    const r = await gorde(["snapshots", server.url("store"), "ct/110", "--json"], { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint });
    assert.equal(r.code, 0, r.err);
    const listed = (JSON.parse(r.out) as SnapshotJson[]).find((s) => s.snapshot === live.snapshot)!;
    assert.deepEqual(listed.captures, [
      { probe: "note", state: "captured" },
      { probe: "counter", state: "unstable" },
    ]);

    // Stop mode: read before the stop and again once the guest runs again, before the manifest.
    const stopMode = await json<GuestBackupResult>(["backup", "110", "--mode", "stop"]);
    assertCaptured(manifestOf(stopMode.snapshot), note);
    assert.match(stopMode.log.join("\n"), /stopping the guest[^]*guest 110 started again[^]*answer of probe note \(GET \/cgi-bin\/note\): captured/);

    // A stopped guest answers nothing: no captures.
    await json(["stop", "110"]);
    const stopped = await json<GuestBackupResult>(["backup", "110"]);
    const ms = manifestOf(stopped.snapshot);
    assert.equal(ms.captures, undefined);
    assert.equal(ms.format, 3);
    assert.match(stopped.log.join("\n"), /the guest is stopped, its service does not answer: nothing captured for probes note, counter/);
  });

  void it("stores the VM's note as captured and its counter as unstable", { skip: haveQemu ? false : `${QEMU} is not installed` }, async () => {
    const note = "Invoices for November are in /srv/invoices/2026-11; Mikel signs them off.\n";
    const port = await demoGuest("vm", 120, note);
    const snap = await json<GuestBackupResult>(["backup", "120"]);
    const m = manifestOf(snap.snapshot);
    assertCaptured(m, note);
    assert.match(m.log!.join("\n"), /file systems frozen[^]*file systems thawed[^]*answer of probe note \(GET \/cgi-bin\/note\): captured/);
    // Suspend mode: the second read once the VM runs again after the read.
    const suspend = await json<GuestBackupResult>(["backup", "120", "--mode", "suspend"]);
    assertCaptured(manifestOf(suspend.snapshot), note);
    assert.match(suspend.log.join("\n"), /VM paused for the backup[^]*VM running again after the read \(suspend mode\)[^]*answer of probe note \(GET \/cgi-bin\/note\): captured/);
    assert.equal(await serviceGet(port, "/cgi-bin/note", 5000), note);
    await json(["stop", "120"]);
  });
});
