// `node bench/load.ts [--minutes N]` (default 5, at most 10): the backup server under load.
// Two `gorde node` processes back their guests up into one `gorde server` over and over (the
// demo VM on the first, the demo container on the second, each writing new data between
// backups), while on the server GC (no grace: it removes what prune left a moment ago), a
// verify of the whole datastore, prune and a sync to a second server run in loops of their
// own. Every backup must finish or fail in one sentence and be retried; at the end the
// datastore and its copy verify, the newest snapshot of each guest restores on a node and
// answers, and the peak RSS of every process is recorded. Written to bench/load.md.
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { GuestStatus } from "../src/api/node-routes.ts";
import { NodeClient } from "../src/client/node-client.ts";
import { serviceGet } from "../test/guest-fixture.ts";
import { MAIN, type NodeProcess, type ServerProcess, freePort, startNodeProcess, startServerProcess } from "../test/server-fixture.ts";
import { haveGnuTime, procUsage, run } from "./proc.ts";
import { median } from "./stats.ts";

let minutes: number;
try {
  const { values } = parseArgs({ options: { minutes: { type: "string" } } });
  minutes = Number(values.minutes ?? 5);
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10) throw new Error(`--minutes takes a whole number from 1 to 10, not "${values.minutes}".`);
} catch (e) {
  console.error(`bench/load: ${(e as Error).message}`);
  process.exit(2);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-load-"));
const ADMIN = "admin-pass-1";
const CLUSTER = "cluster-pass-1";
const started = Date.now();
const deadline = started + minutes * 60_000;
const stamp = (): string => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s`;

/** Peak RSS (VmHWM) of a running process, in MiB; undefined once it is gone. */
function peakRssMiB(pid: number | undefined): number | undefined {
  const u = pid === undefined ? null : procUsage(pid);
  return u?.maxRssKiB ? u.maxRssKiB / 1024 : undefined;
}

interface Loop {
  name: string;
  ok: number;
  failed: string[];
  ms: number[];
  /** peak RSS of its CLI runs (GNU time), MiB */
  rssMiB: number[];
}
const loop = (name: string): Loop => ({ name, ok: 0, failed: [], ms: [], rssMiB: [] });
/** A failure's last line must be one sentence: `gorde <cmd>: <sentence>.` or the API's. */
const oneSentence = (s: string): boolean => /^[^\n]+[.)]$/.test(s.trim()) && !/\n\s+at /.test(s);

let server: ServerProcess | undefined;
let copy: ServerProcess | undefined;
const nodes: NodeProcess[] = [];
const clients: NodeClient[] = [];
const lines: string[] = [];
try {
  server = await startServerProcess({ stateDir: path.join(work, "server"), datastores: { store: path.join(work, "store") } });
  copy = await startServerProcess({ stateDir: path.join(work, "copy-server"), datastores: { copy: path.join(work, "copy") } });
  const srv = `https://admin@127.0.0.1:${server.port}`;
  const adminEnv = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: server.fingerprint };
  const cli = async (args: string[], env: Record<string, string> = adminEnv, timeoutMs = 600_000) =>
    run({ argv: [process.execPath, MAIN, ...args], cwd: work, env: { ...process.env, ...env } as Record<string, string> }, { timeoutMs });
  const must = async (args: string[], env?: Record<string, string>): Promise<string> => {
    const r = await cli(args, env);
    if (r.code !== 0) throw new Error(`gorde ${args.join(" ")}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  await must(["user", "add", srv, "cluster"], { ...adminEnv, GORDE_NEW_PASSWORD: CLUSTER });
  await must(["acl", "set", srv, "/datastore/store", "cluster", "DatastorePowerUser"]);
  const copyEnv = { GORDE_PASSWORD: ADMIN, GORDE_FINGERPRINT: copy.fingerprint, GORDE_REMOTE_PASSWORD: ADMIN };
  const copyRepo = `https://admin@127.0.0.1:${copy.port}/copy`;
  await must(["remote", "add", `https://admin@127.0.0.1:${copy.port}`, "main", "--url", server.url("store"), "--remote-fingerprint", server.fingerprint], copyEnv);

  // Two nodes, one guest each, running and answering.
  const guests = [
    { node: "node1", kind: "vm" as const, id: 100 },
    { node: "node2", kind: "ct" as const, id: 101 },
  ];
  for (const g of guests) {
    const node = await startNodeProcess({ name: g.node, dataDir: path.join(work, g.node), serverUrl: server.url("store", "cluster"), serverFingerprint: server.fingerprint, serverSecret: CLUSTER });
    nodes.push(node);
    const api = await NodeClient.connect(node.url(), { secret: "node-admin-1", fingerprint: node.fingerprint });
    clients.push(api);
    await api.call("createGuest", { json: { demo: { kind: g.kind, id: g.id, httpPort: await freePort(), diskMiB: g.kind === "vm" ? 256 : undefined } } });
    await api.call("startGuest", { params: { id: g.id } });
    await serviceGet((await api.call("guestStatus", { params: { id: g.id } })).httpPort, "/index.html", 180_000);
  }
  console.log(`${stamp()}: two nodes, their guests answer; load for ${minutes} min`);

  const backups = guests.map((g) => ({ ...loop(`backups of ${g.kind} ${g.id} (${g.node})`), retries: 0, newMiB: [] as number[] }));
  const maintenance = { gc: loop("GC (no grace)"), prune: loop("prune (keep last 3)"), verify: loop("verify (whole datastore)"), sync: loop("sync to a second server") };
  const loadAvg: number[] = [];
  const sampler = setInterval(() => loadAvg.push(os.loadavg()[0]!), 5000);

  const backupLoop = async (i: number): Promise<void> => {
    const g = guests[i]!;
    const api = clients[i]!;
    const l = backups[i]!;
    const port = (await api.call("guestStatus", { params: { id: g.id } })).httpPort;
    while (Date.now() < deadline) {
      // A guest at work: new data between backups, and repeated blocks already stored.
      await serviceGet(port, "/cgi-bin/fill?2", 60_000);
      const t0 = Date.now();
      try {
        const r = await api.backup(g.id, {});
        l.ok++;
        l.ms.push(Date.now() - t0);
        l.newMiB.push(r.newBytes / 2 ** 20);
      } catch (e) {
        const message = (e as Error).message;
        l.failed.push(message);
        if (!oneSentence(message)) throw new Error(`a backup of guest ${g.id} failed without one sentence: ${message}`);
        l.retries++;
        console.log(`${stamp()}: backup of ${g.id} failed, retried: ${message}`);
        if (process.env.GORDE_LOAD_DEBUG) console.log(nodes[i]!.stderr().split("\n").slice(-30).join("\n"));
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  };
  const cliLoop = async (l: Loop, args: () => string[], env: Record<string, string> = adminEnv, pauseMs = 0): Promise<void> => {
    while (Date.now() < deadline) {
      const r = await cli(args(), env);
      if (r.code === 0) {
        l.ok++;
        l.ms.push(r.ms);
      } else {
        // The task's log comes first; the command's own last line is its error.
        const last = r.stderr.trim().split("\n").at(-1) ?? "";
        l.failed.push(last);
        if (!oneSentence(last) || /\n\s+at /.test(r.stderr)) throw new Error(`${l.name} failed without one sentence: ${r.stderr.trim()}`);
        console.log(`${stamp()}: ${l.name} failed: ${last}`);
      }
      if (r.maxRssKiB !== null) l.rssMiB.push(r.maxRssKiB / 1024);
      if (pauseMs) await new Promise((res) => setTimeout(res, pauseMs));
    }
  };
  const store = server.url("store");
  const peaks = new Map<string, number>();
  const samplePeaks = (): void => {
    const procs: [string, number | undefined][] = [
      ["server", server?.child.pid],
      ["second server (sync)", copy?.child.pid],
      ...nodes.map((n) => [`node agent ${n.name}`, n.child.pid] as [string, number | undefined]),
    ];
    for (const [name, pid] of procs) {
      const v = peakRssMiB(pid);
      if (v !== undefined) peaks.set(name, Math.max(peaks.get(name) ?? 0, v));
    }
  };
  const peakSampler = setInterval(samplePeaks, 2000);
  // How long each daemon takes to answer an HTTP/2 ping under the load: a stalled event loop shows here.
  const daemons: [string, number][] = [
    ["server", server.port],
    ["second server (sync)", copy.port],
    ...nodes.map((n) => [`node agent ${n.name}`, n.port] as [string, number]),
  ];
  const pings = new Map<string, number[]>(daemons.map(([name]) => [name, []]));
  const pingSessions = daemons.map(([name, port]) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    session.on("error", () => undefined);
    const timer = setInterval(() => {
      if (session.destroyed || session.connecting) return;
      session.ping((err, ms) => {
        if (!err) pings.get(name)!.push(ms);
      });
    }, 1000);
    return { session, timer };
  });
  let qemuPid: number | undefined;
  try {
    qemuPid = ((await clients[0]!.call("guestStatus", { params: { id: 100 } })) as GuestStatus).pid;
    await Promise.all([
      backupLoop(0),
      backupLoop(1),
      cliLoop(maintenance.prune, () => ["prune", store, `vm/100`, "--keep-last", "3"], adminEnv, 5000),
      cliLoop(maintenance.gc, () => ["gc", store, "--cutoff", "0"], adminEnv, 5000),
      cliLoop(maintenance.verify, () => ["verify", store], adminEnv, 5000),
      cliLoop(maintenance.sync, () => ["sync", copyRepo, "main"], copyEnv, 5000),
      (async () => {
        // the container's group is pruned too, in the same loop's rhythm
        while (Date.now() < deadline) {
          await cli(["prune", store, "ct/101", "--keep-last", "3"]);
          await new Promise((r) => setTimeout(r, 7000));
        }
      })(),
    ]);
  } finally {
    clearInterval(sampler);
    clearInterval(peakSampler);
    for (const p of pingSessions) {
      clearInterval(p.timer);
      p.session.destroy();
    }
  }
  samplePeaks();
  const qemuPeak = peakRssMiB(qemuPid);
  console.log(`${stamp()}: load over; checking`);

  // The end: both datastores verify, and each guest's newest snapshot restores and answers.
  const finalVerify = await cli(["verify", store, "--json"]);
  const finalCopy = await cli(["verify", copyRepo, "--json"], copyEnv);
  const restored: string[] = [];
  for (const [i, g] of guests.entries()) {
    const api = clients[i]!;
    const list = JSON.parse(await must(["snapshots", store, `${g.kind}/${g.id}`, "--json"])) as { snapshot: string; finished: boolean }[];
    const newest = list.filter((s) => s.finished).at(-1)!.snapshot;
    const st = await api.restore({ snapshot: newest, id: g.id + 100, start: true });
    await serviceGet(st.httpPort, "/index.html", 180_000);
    restored.push(`${newest} → guest ${g.id + 100}, answering`);
    await api.call("stopGuest", { params: { id: g.id + 100 } });
  }

  const fmt = (xs: number[], d = 1): string => (xs.length ? `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})` : "–");
  lines.push(
    `# Load: two nodes backing up into one server beside GC, verify, prune and sync (\`node bench/load.ts --minutes ${minutes}\`)`,
    "",
    `${os.cpus().length} CPUs, QEMU under TCG; load average median ${fmt(loadAvg)} during the run; ${new Date(started).toISOString().slice(0, 16)}Z.`,
    "",
    "| loop | finished | failed (retried) | median duration (range), s | new data per backup, MiB | peak RSS of its CLI, MiB |",
    "|---|--:|--:|--:|--:|--:|",
  );
  for (const l of backups) lines.push(`| ${l.name} | ${l.ok} | ${l.failed.length} (${l.retries}) | ${fmt(l.ms.map((m) => m / 1000))} | ${fmt(l.newMiB)} | (node agent, below) |`);
  for (const l of Object.values(maintenance)) lines.push(`| ${l.name} | ${l.ok} | ${l.failed.length} | ${fmt(l.ms.map((m) => m / 1000))} | | ${l.rssMiB.length ? Math.max(...l.rssMiB).toFixed(0) : haveGnuTime() ? "–" : "(no GNU time)"} |`);
  lines.push("", "| process | peak RSS, MiB | HTTP/2 ping answered in, ms: median (max) |", "|---|--:|--:|");
  for (const [name, v] of peaks) {
    const p = pings.get(name) ?? [];
    lines.push(`| ${name} | ${v.toFixed(0)} | ${p.length ? `${median(p).toFixed(1)} (${Math.max(...p).toFixed(0)})` : "–"} |`);
  }
  if (qemuPeak !== undefined) lines.push(`| QEMU of vm 100 (256 MiB guest) | ${qemuPeak.toFixed(0)} |`);
  const failures = [...backups, ...Object.values(maintenance)].flatMap((l) => l.failed.map((f) => `- ${l.name}: ${f}`));
  lines.push("", failures.length ? "Failures (each one sentence; backups retried):" : "No operation failed.", ...failures, "");
  lines.push(`At the end: verify of the datastore ${finalVerify.code === 0 ? "passed" : `FAILED: ${finalVerify.stderr.trim()}`}; of its copy ${finalCopy.code === 0 ? "passed" : `FAILED: ${finalCopy.stderr.trim()}`}.`);
  for (const r of restored) lines.push(`- restored ${r}`);
  lines.push("");
  const ok = finalVerify.code === 0 && finalCopy.code === 0 && backups.every((b) => b.ok > 0);
  if (!ok) lines.push("**The run failed** (see above).", "");
  fs.writeFileSync(new URL("./load.md", import.meta.url), lines.join("\n"));
  console.log(lines.join("\n"));
  if (!ok) process.exitCode = 1;
} finally {
  for (const c of clients) c.close();
  for (const n of nodes) await n.stop();
  await copy?.stop();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
}
