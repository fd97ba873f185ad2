// Real LXC containers from a busybox root file system the project builds: the service
// answers through the 127.0.0.1 forward from data in the root file system, freezing stops
// it answering, and stopping leaves no container, port or forwarder behind.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { tempDir } from "../../test/helpers.ts";
import { buildCtRootfs } from "./guest-kit.ts";
import { type CtProcess, type CtRuntimeConfig, lxcAvailable, startCt } from "./lxc.ts";

const avail = lxcAvailable();
const skipWhy = avail.ok ? undefined : `LXC containers cannot run here: ${avail.why}`;
if (skipWhy) console.error(`\n*** SKIPPED: ${skipWhy} ***\n`);

/** A test that skips, loudly, where LXC cannot run. */
function ctTest(name: string, fn: () => Promise<void>): void {
  void it(name, async (t) => {
    if (skipWhy) return t.skip(skipWhy);
    await fn();
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function get(port: number, p: string, init?: RequestInit, ms = 2000): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`, { ...init, signal: AbortSignal.timeout(ms) });
  assert.equal(r.status, 200);
  return await r.text();
}

/** The static page, polled until the service answers (a counter poll cut off by its timeout could still count). */
async function waitUp(port: number, ms = 5000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await get(port, "/index.html", undefined, 500);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

/** Host pids whose command line mentions `text`. */
function processesWith(text: string): number[] {
  const pids: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, "utf8").includes(text)) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function timed<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  console.log(`${what}: ${(performance.now() - t0).toFixed(0)} ms`);
  return r;
}

void describe("LXC containers", () => {
  const tmp = tempDir("gorde-lxc-");
  const runDir = path.join(tmp.dir, "run");
  const started: CtProcess[] = [];
  const ct = (id: number, port: number, rootfs = path.join(tmp.dir, `ct${id}`)): CtRuntimeConfig => ({ id, name: `web${id}`, rootfs, init: "/init", memoryMiB: 64, cpus: 1, httpPort: port });
  let a: CtProcess;
  let aPort: number;

  before(async () => {
    if (skipWhy) return;
    for (const id of [100, 101]) await buildCtRootfs(path.join(tmp.dir, `ct${id}`), `web${id}`);
  });
  after(async () => {
    for (const c of started) await c.stop();
    tmp.cleanup();
  });

  ctTest("serves its data from the root file system through the forwarded port", async () => {
    aPort = await freePort();
    a = await timed("container start (startCt)", () => startCt(ct(100, aPort), runDir));
    started.push(a);
    assert.equal(await a.state(), "RUNNING");
    assert.match(await timed("service answering after start", () => waitUp(aPort)), /web100: a gorde demo guest/);
    assert.equal(await get(aPort, "/cgi-bin/counter"), "1\n");
    assert.equal(await get(aPort, "/cgi-bin/counter"), "2\n");
    assert.equal(fs.readFileSync(path.join(tmp.dir, "ct100/data/counter"), "utf8"), "2\n");
    assert.equal(await get(aPort, "/cgi-bin/note", { method: "POST", body: "written through the forward" }), "written through the forward");
    assert.equal(await get(aPort, "/cgi-bin/note"), "written through the forward");
    assert.match(fs.readFileSync(a.consoleLog, "utf8"), /gorde-guest: up/);
  });

  ctTest("stops answering while frozen and answers again when thawed", async () => {
    await timed("freeze", () => a.freeze());
    assert.equal(await a.state(), "FROZEN");
    await assert.rejects(get(aPort, "/index.html", undefined, 300), { name: "TimeoutError" });
    await timed("thaw", () => a.thaw());
    assert.equal(await a.state(), "RUNNING");
    assert.equal(await get(aPort, "/cgi-bin/counter"), "3\n");
  });

  ctTest("runs a second container with the same port inside on another host port", async () => {
    const port = await freePort();
    const b = await startCt(ct(101, port), runDir);
    started.push(b);
    assert.match(await waitUp(port), /web101/);
    assert.equal(await get(port, "/cgi-bin/counter"), "1\n");
    assert.equal(await get(aPort, "/cgi-bin/counter"), "4\n");
    // Stopped from outside, the container takes its forwarding with it.
    await timed("lxc-stop -k", async () => {
      const stop = spawn("lxc-stop", ["-P", runDir, "-n", "ct101", "-k"]);
      await once(stop, "exit");
      await b.exited;
    });
    assert.equal(await b.state(), "STOPPED");
    assert.ok(await refused(port), `port ${port} still accepts`);
    assert.deepEqual(processesWith(path.join(runDir, "ct101", "http.sock")), []);
  });

  ctTest("refuses to start on a taken port, without a root file system or init, or twice; names why LXC fails; starts nothing", async () => {
    const taken = net.createServer().listen(0, "127.0.0.1");
    await once(taken, "listening");
    const takenPort = (taken.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startCt(ct(102, takenPort, path.join(tmp.dir, "ct101")), runDir), { code: "exists", message: new RegExp(`port ${takenPort} on 127\\.0\\.0\\.1 is in use`) });
    } finally {
      taken.close();
    }
    const port = await freePort();
    await assert.rejects(startCt(ct(102, port, path.join(tmp.dir, "missing")), runDir), { code: "not-found", message: /root file system .*missing of container ct102 does not exist/ });
    await assert.rejects(startCt({ ...ct(102, port, path.join(tmp.dir, "ct101")), init: "/sbin/init" }, runDir), { code: "not-found", message: /no init \/sbin\/init/ });
    await assert.rejects(startCt(ct(100, port), runDir), { code: "exists", message: /ct100 is already running/ });
    // LXC's own refusal (a CPU quota of 0) and an init that exits at once are named too.
    await assert.rejects(startCt({ ...ct(102, port, path.join(tmp.dir, "ct101")), cpus: 0 }, runDir), { code: "io", message: /LXC could not start container ct102: .*cpu/ });
    await assert.rejects(startCt({ ...ct(102, port, path.join(tmp.dir, "ct101")), init: "/bin/busybox echo bye" }, runDir), { code: "io", message: /ct102 stopped at once; the last line on its console: bye/ });
    await assert.rejects(buildCtRootfs(path.join(tmp.dir, "ct100"), "again"), { code: "exists" });
    assert.deepEqual(processesWith("ct102"), []);
    assert.ok(await refused(port));
  });

  ctTest("stops: the port closes, the container is STOPPED, no forwarder is left", async () => {
    const forwarders = processesWith(path.join(runDir, "ct100", "http.sock"));
    assert.equal(forwarders.length, 1);
    await timed("stop", () => a.stop());
    await a.stop();
    await a.exited;
    assert.equal(await a.state(), "STOPPED");
    await assert.rejects(a.freeze(), { message: /ct100 is stopped; it cannot be frozen/ });
    assert.ok(await refused(aPort), `port ${aPort} still accepts`);
    assert.deepEqual(processesWith(path.join(runDir, "ct100", "http.sock")), []);
    assert.ok(!fs.existsSync(`/proc/${forwarders[0]}`));
    assert.equal(fs.readFileSync(path.join(tmp.dir, "ct100/data/counter"), "utf8"), "4\n");
  });

  void it("the forwarder exits when its stdin closes (its parent is gone)", async () => {
    const sock = path.join(tmp.dir, "fwd.sock");
    const fwd = spawn(process.execPath, [fileURLToPath(new URL("./ct-forwarder.ts", import.meta.url)), sock, "80"], { stdio: ["pipe", "pipe", "inherit"] });
    await once(fwd.stdout, "data");
    assert.ok(fs.existsSync(sock));
    fwd.stdin.end();
    const [code] = (await once(fwd, "exit")) as [number | null];
    assert.equal(code, 0);
  });
});
