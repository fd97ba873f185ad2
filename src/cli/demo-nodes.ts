// The nodes' part of `gorde demo`: two `gorde node` processes, the demo VM (QEMU) and the
// demo container (LXC) on the first, data written through their services, a full and a
// live incremental backup while they run, and the first snapshot restored as new guests
// on the second node whose services answer with that snapshot's data; restore drills of
// both guests on the first node (and of a container snapshot whose service cannot start,
// which must fail); then a plan applied to the first node, whose scheduler backs the guests
// up every 10 seconds by itself.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DrillRecord, GuestBackupResult } from "../api/node-routes.ts";
import { NodeClient } from "../client/node-client.ts";
import { lxcAvailable } from "../node/lxc.ts";
import { freePort } from "../node/qemu.ts";
import type { DemoDrill } from "./demo-report.ts";
import { formatBytes } from "./progress-bar.ts";

export interface NodeStoryContext {
  work: string;
  serverUrl: string;
  serverFingerprint: string;
  serverSecret: string;
  say(s: string): void;
  title(s: string): void;
  check(ok: boolean, what: string): void;
  /** registers a cleanup, run last-registered first */
  onStop(stop: () => Promise<void>): void;
  /** where the drills' results go (the --json document's `drills`) */
  drills: DemoDrill[];
}

export interface RunningNode {
  name: string;
  port: number;
  fingerprint: string;
  adminPassword: string;
  client: NodeClient;
  dataDir: string;
  /** the agent's process */
  child: ChildProcess;
  /** what the agent wrote on stderr (its log) */
  log(): string;
}

const MAIN = new URL("./main.ts", import.meta.url).pathname;

/**
 * Starts `gorde node` as its own process; resolves once it printed its fingerprint. Started
 * again (`adminPassword` of its first start), it keeps its data directory and users.
 */
export async function startNodeProcess(ctx: NodeStoryContext, name: string, adminPassword = randomBytes(12).toString("base64url")): Promise<RunningNode> {
  const dataDir = path.join(ctx.work, name);
  fs.mkdirSync(dataDir, { recursive: true });
  const secretFile = path.join(dataDir, "server-secret");
  fs.writeFileSync(secretFile, ctx.serverSecret, { mode: 0o600 });
  const port = await freePort();
  const config = path.join(dataDir, "node.json");
  fs.writeFileSync(config, JSON.stringify({ name, dataDir, listen: `127.0.0.1:${port}`, server: { url: ctx.serverUrl, fingerprint: ctx.serverFingerprint, secretFile } }, null, 2));
  const child: ChildProcess = spawn(process.execPath, [MAIN, "node", "--config", config], { env: { ...process.env, GORDE_ADMIN_PASSWORD: adminPassword }, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  ctx.onStop(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 30_000);
    await exited;
    clearTimeout(t);
  });
  let err = "";
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const fingerprint = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /^fingerprint: (\S+)$/m.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then(() => reject(new Error(`node ${name} exited: ${err.trim().split("\n").at(-1)}`)));
  });
  const client = await NodeClient.connect(`https://admin@127.0.0.1:${port}`, { secret: adminPassword, fingerprint });
  ctx.onStop(() => Promise.resolve(client.close()));
  return { name, port, fingerprint, adminPassword, client, dataDir, child, log: () => err };
}

/** A demo guest's service, asked until it answers (the VM boots in seconds under TCG). */
export async function service(port: number, p: string, init?: RequestInit, ms = 90_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${p}`, { ...init, signal: AbortSignal.timeout(5000) });
      if (r.ok) return await r.text();
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`demo step failed: no answer from 127.0.0.1:${port}${p}`);
    await sleep(200);
  }
}

export interface DemoGuest {
  id: number;
  kind: "vm" | "ct";
  port: number;
}

export async function nodeStory(ctx: NodeStoryContext): Promise<{ nodes: [RunningNode, RunningNode]; guests: DemoGuest[] }> {
  const { say, title, check } = ctx;
  const lxc = lxcAvailable();
  title("Two nodes: `gorde node` processes, each with its own HTTPS API, certificate and users");
  const node1 = await startNodeProcess(ctx, "node1");
  const node2 = await startNodeProcess(ctx, "node2");
  for (const n of [node1, node2]) say(`   ${n.name} on https://127.0.0.1:${n.port}, fingerprint ${n.fingerprint.slice(0, 23)}…`);
  say("   both back up to the server with one identity (the cluster's token, role DatastorePowerUser)");

  title("The demo VM (QEMU) and container (LXC) on node1, built from Debian packages");
  const guests: DemoGuest[] = [{ id: 100, kind: "vm", port: await freePort() }];
  if (lxc.ok) guests.push({ id: 101, kind: "ct", port: await freePort() });
  else say(`   SKIPPED the container: ${lxc.why}`);
  for (const g of guests) {
    const started = Date.now();
    await node1.client.call("createGuest", { json: { demo: { kind: g.kind, id: g.id, httpPort: g.port, diskMiB: 1024 } } });
    const st = await node1.client.call("startGuest", { params: { id: g.id } });
    await service(g.port, "/index.html");
    say(`   ${g.kind} ${g.id}: service on 127.0.0.1:${g.port} answers after ${((Date.now() - started) / 1000).toFixed(1)} s${st.accel ? ` (${st.accel})` : ""}`);
  }

  title("Data written through the guests' services");
  for (const g of guests) {
    await service(g.port, "/cgi-bin/note", { method: "POST", body: `written on ${g.kind} ${g.id} before the first backup` });
    await service(g.port, "/cgi-bin/fill?8");
    say(`   ${g.kind} ${g.id}: note written, counter at ${(await service(g.port, "/cgi-bin/counter")).trim()}, 8 MiB of files`);
  }

  const backupAll = async (): Promise<Map<number, GuestBackupResult>> => {
    const out = new Map<number, GuestBackupResult>();
    for (const g of guests) {
      const r = await node1.client.backup(g.id, {});
      const a = r.archives[0]!;
      const read = a.readChunks !== undefined ? `, ${a.readChunks} chunks read${a.dirtyChunks != null ? ` (${a.dirtyChunks} dirty since the last backup)` : ""}` : "";
      say(`   ${r.snapshot}: ${(r.durationMs / 1000).toFixed(2)} s${read}, ${formatBytes(r.newBytes)} new, ${formatBytes(r.reusedBytes)} reused`);
      const st = await node1.client.call("guestStatus", { params: { id: g.id } });
      check(st.state === "running", `${g.kind} ${g.id} runs on after its backup`);
      out.set(g.id, r);
    }
    return out;
  };
  title("First backup, live: the VM from a point-in-time view of its disk, the container frozen for the read");
  const first = await backupAll();

  title("The guests change: a new note and 1% of the VM's disk written as a new file");
  for (const g of guests) {
    await service(g.port, "/cgi-bin/note", { method: "POST", body: `written on ${g.kind} ${g.id} after the first backup` });
    await service(g.port, "/cgi-bin/fill?10");
  }

  title("Second backup, live and incremental: only the chunks the dirty bitmap marks are read");
  const second = await backupAll();
  const vmIncr = second.get(100)!.archives[0]!;
  const chunks = vmIncr.size / (256 * 1024);
  say(`   (the VM's disk has ${chunks} chunks; the guest changed about ${vmIncr.dirtyChunks} of them)`);
  check(vmIncr.dirtyChunks != null && vmIncr.readChunks! <= vmIncr.dirtyChunks && vmIncr.dirtyChunks < chunks / 20, "the incremental reads only dirty chunks");

  for (const g of guests) await service(g.port, "/cgi-bin/note", { method: "POST", body: `written on ${g.kind} ${g.id} after both backups` });

  title("node2 restores the first snapshots as guests and starts them");
  for (const g of guests) {
    const snap = first.get(g.id)!.snapshot;
    const started = Date.now();
    const st = await node2.client.restore({ snapshot: snap, start: true });
    const note = await service(st.httpPort, "/cgi-bin/note");
    const original = await service(g.port, "/cgi-bin/note");
    say(`   ${snap} → ${st.kind} ${st.id} on node2, service on 127.0.0.1:${st.httpPort} after ${((Date.now() - started) / 1000).toFixed(1)} s: "${note.trim()}"`);
    check(note === `written on ${g.kind} ${g.id} before the first backup`, `the restored ${g.kind} answers with the data of its snapshot`);
    check(original === `written on ${g.kind} ${g.id} after both backups`, `the original ${g.kind} still answers with its newest data`);
  }
  await drillStory(ctx, node1, guests);
  await planStory(ctx, node1, guests.map((g) => g.id));
  return { nodes: [node1, node2], guests };
}

function drillLine(d: DrillRecord): string {
  const checks = d.checks.map((c) => `${c.name} ${c.ok ? "ok" : "FAILED"}`).join(", ");
  const outcome =
    d.result === "passed"
      ? `passed, RTO ${d.rtoSeconds} s (restored at ${d.restoredSeconds} s, booted at ${d.bootedSeconds} s), RPO ${d.rpoSeconds} s`
      : `${d.result}${d.failedCheck ? ` at check ${d.failedCheck}` : ""}: ${d.error ?? "no reason given"}`;
  return `drill ${d.id} of ${d.snapshot ?? "no snapshot"}: ${outcome} [${checks}]`;
}

/**
 * Restore drills on node1 through its API, as `gorde drill run` does: each guest's newest
 * snapshot restored into a sandbox, booted and probed (the note checked against the answer
 * captured at backup time) while the production guest keeps serving. Then a drill that must
 * fail: the container's service script is made to exit at once (in its root file system,
 * as an administrator's mistake would), a backup taken, the script put back, and the drill
 * of that snapshot has to fail and name its check.
 */
async function drillStory(ctx: NodeStoryContext, node: RunningNode, guests: { id: number; kind: "vm" | "ct"; port: number }[]): Promise<void> {
  const { say, title, check } = ctx;
  title("Restore drills on node1: each guest's newest snapshot booted in a sandbox, its service's data checked");
  for (const g of guests) {
    const d = await node.client.runDrill({ guest: g.id });
    ctx.drills.push({ guest: g.id, result: d.result, rto_s: d.rtoSeconds });
    say(`   ${g.kind} ${g.id}: ${drillLine(d)}`);
    check(d.result === "passed", `the drill of ${g.kind} ${g.id} passes`);
    const note = await service(g.port, "/cgi-bin/note");
    check(note === `written on ${g.kind} ${g.id} after both backups`, `the production ${g.kind} answers on with its own data`);
  }
  const ct = guests.find((g) => g.kind === "ct");
  if (!ct) {
    say("   SKIPPED the drill of a broken snapshot: it is made from the container, skipped above");
    return;
  }
  title("A drill that must fail: a container snapshot taken after its service script was made to exit at once");
  const run = path.join(ctx.work, node.name, "rootfs", String(ct.id), "service", "run");
  const script = fs.readFileSync(run);
  let broken: GuestBackupResult;
  try {
    fs.writeFileSync(run, "#!/bin/sh\n# broken on purpose by gorde demo: the service exits at once\nexit 1\n");
    // The running httpd was started before: the production container serves on.
    broken = await node.client.backup(ct.id, {});
  } finally {
    fs.writeFileSync(run, script);
  }
  say(`   ${broken.snapshot}: /service/run exits 1; the script is put back in the container`);
  const d = await node.client.runDrill({ guest: ct.id, snapshot: broken.snapshot });
  ctx.drills.push({ guest: ct.id, result: d.result, rto_s: d.rtoSeconds });
  say(`   ct ${ct.id}: ${drillLine(d)}`);
  check(d.result === "failed" && d.failedCheck !== null, "the drill of the broken snapshot fails and names its check");
  check((await service(ct.port, "/index.html")).length > 0, "the production container answers on");
}

/**
 * The plan: a backup job every 10 seconds for node1's guests (retention keep-last 2, told
 * to a webhook), applied with the scheduler doing the rest; two scheduled runs watched.
 */
async function planStory(ctx: NodeStoryContext, node: RunningNode, ids: number[]): Promise<void> {
  const { say, title, check } = ctx;
  title("A plan: the node's scheduler backs its guests up every 10 seconds, keeps the last 2, tells a webhook");
  const told: { job: string; result: string }[] = [];
  const hook = http.createServer((req, res) => {
    let body = "";
    req.on("data", (b: Buffer) => (body += b.toString()));
    req.on("end", () => {
      told.push(JSON.parse(body) as { job: string; result: string });
      res.end();
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, "127.0.0.1", resolve));
  ctx.onStop(() => new Promise<void>((resolve) => hook.close(() => resolve())));
  const text = [
    "version: 1",
    // The demo is about the schedule: the guests' own boots load this machine.
    "load: { max-load-per-cpu: 1000, max-cpu-pressure: 100, max-io-pressure: 100 }",
    "guests:",
    ...ids.map((id) => `  ${id}: { rpo: 1h }`),
    "jobs:",
    `  - { name: every10s, type: backup, schedule: "*:*:0/10", guests: all, keep: { last: 2 }, notes: "{{job}} on {{node}}" }`,
    "notifications:",
    `  targets: [{ type: webhook, name: demo, url: "http://127.0.0.1:${(hook.address() as net.AddressInfo).port}/" }]`,
    "",
  ].join("\n");
  const started = Date.now();
  await node.client.call("applyPlan", { json: { text } });
  say(`   applied on ${node.name}: schedule "*:*:0/10", keep-last 2, webhook`);
  type Run = { job: string; start: number; end: number | null; result: string; newBytes: number | null; reusedBytes: number | null; error: string | null };
  let runs: Run[] = [];
  for (const deadline = Date.now() + 90_000; Date.now() < deadline; await sleep(500)) {
    runs = (await node.client.call("listRuns")).filter((r) => r.job === "every10s" && r.result !== "running").reverse();
    if (runs.length >= 2 && told.length >= 2) break;
  }
  for (const r of runs.slice(0, 2)) {
    say(`   run at ${new Date(r.start).toISOString().slice(11, 19)}: ${r.result}, ${formatBytes(r.newBytes ?? 0)} new, ${formatBytes(r.reusedBytes ?? 0)} reused${r.error ? ` (${r.error})` : ""}`);
  }
  check(runs.length >= 2 && runs.slice(0, 2).every((r) => r.result === "ok"), "the scheduler ran the job twice");
  check(runs.slice(0, 2).every((r) => (r.reusedBytes ?? 0) > 0), "scheduled backups are incremental");
  say(`   webhook told ${told.length} times; ${((Date.now() - started) / 1000).toFixed(0)} s`);
  check(told.length >= 2, "the webhook was told");
  await node.client.call("applyPlan", { json: { text: text.replace('"*:*:0/10"', "yearly") } });
}
