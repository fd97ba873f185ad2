// Restore drills (Veeam's SureBackup is the bar): a guest's snapshot is verified chunk by
// chunk through the backup server's reader, restored as a sandbox guest (an id from the
// drill range, a free 127.0.0.1 port, a VM's user networking restrict=on with only that
// port forwarded, a container in its own network namespace: never the production guest's
// id, disks or port), started, and checked: the boot check, then the guest's probes in
// order (a port, an HTTP answer, the answer captured when the backup was taken, a script
// of the node's own). Each check is recorded with its time; the times to restored, booted
// and every probe passing (the RTO) and the snapshot's age (the RPO) go to the node's
// history and, with the result, into the snapshot's unprotected part on the server. The
// sandbox is always stopped and removed: on failure, timeout and abort, and on the next
// start of a node that died during a drill (a marker file per running drill says what to
// remove). One drill at a time per node: they are heavy.
import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type GuestConfig, type HealthChecks, type Probe, parseGuestConfig } from "../api/guest-config.ts";
import type { DrillCheck, DrillRecord, StartDrill } from "../api/node-routes.ts";
import type { SnapshotJson } from "../api/routes.ts";
import { ChunkPool } from "../datastore/chunk-pool.ts";
import { readArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import type { RemoteRepository } from "../client/remote.ts";
import { GordeError } from "../errors.ts";
import { DIGEST_SIZE, DYNAMIC_ENTRY_SIZE } from "../format/magic.ts";
import type { Capture, DrillState, Manifest } from "../format/manifest.ts";
import { parseSnapshotRef } from "../format/names.ts";
import { formatBytes } from "../format/units.ts";
import type { DrillHistory } from "../jobs/drill-history.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { checkAnswer, readAnswer } from "./capture.ts";
import { GuestAgent } from "./guest-agent.ts";
import type { GuestManager } from "./guests.ts";
import { DEFAULT_DRILL_IDS, type NodeConfig, checkedScript } from "./node-config.ts";
import { freePort } from "./qemu.ts";

/** Drills older than this leave the history (as job runs do). */
const HISTORY_DAYS = 90;
/** chunk reads in flight while verifying (the server's reader batches 16 a request) */
const VERIFY_IN_FLIGHT = 32;
/** one HTTP or TCP attempt of a probe; a probe retries until its own timeout */
const ATTEMPT_MS = 5000;
/**
 * A port forward accepts a connection even when nothing listens in the guest (QEMU's user
 * networking and the container forwarder both do) and closes it a moment later: a TCP
 * probe counts the port open only when the connection is still up after this long.
 */
const TCP_SETTLE_MS = 500;
const POLL_MS = 200;
/** an HTTP answer is read up to this size */

/** What a drill will do, decided before anything starts. */
export interface DrillPlan {
  guest: number;
  kind: "vm" | "ct";
  snapshot: string;
  /** the snapshot's time, unix seconds */
  time: number;
  /** the guest's configuration as the snapshot holds it */
  config: GuestConfig;
  checks: HealthChecks;
  captures: Capture[];
  bytes: number;
}

export interface DrillRunnerOptions {
  config: NodeConfig;
  guests: GuestManager;
  repository: () => Promise<RemoteRepository>;
  history: DrillHistory;
  log: (line: string) => void;
}

/** What recovering a guest from a snapshot takes: a drill's plan whose checks may be missing. */
export type RecoveryPlan = Omit<DrillPlan, "checks"> & { checks: HealthChecks | undefined };

/** The newest finished snapshot of a guest whose verification did not fail. */
function newestGoodSnapshot(snaps: readonly SnapshotJson[], guest: number): string {
  const good = snaps.filter((s) => s.finished && !s.error && s.verify?.state !== "failed").sort((a, b) => a.time.localeCompare(b.time));
  const newest = good.at(-1);
  if (!newest) throw new GordeError("not-found", `guest ${guest} has no finished backup whose verification did not fail on the backup server.`);
  return newest.snapshot;
}

/** A snapshot's plan: its manifest's configuration and captured answers, its checks (or the guest's own when it holds none). */
async function planOf(repo: RemoteRepository, o: { guest: number; kind: "vm" | "ct"; snapshot: string; fallbackChecks?: HealthChecks }): Promise<RecoveryPlan> {
  const name = o.snapshot;
  const reader = await repo.openReader([], name);
  let manifest: Manifest;
  try {
    manifest = reader.manifest;
  } finally {
    await reader.close();
  }
  if (manifest.cryptMode === "encrypt") throw new GordeError("unsupported", `snapshot ${name} is encrypted and the node has no key to restore it.`);
  if (!manifest.config) throw new GordeError("invalid", `snapshot ${name} holds no guest configuration, so it cannot be restored as a guest.`);
  const config = parseGuestConfig(manifest.config, `the configuration in snapshot ${name}`);
  if (config.kind !== o.kind) throw new GordeError("invalid", `snapshot ${name} holds the configuration of a ${config.kind}, not of a ${o.kind}.`);
  // The snapshot's checks describe the guest as it was; a snapshot taken before they were set uses the guest's own.
  return {
    guest: o.guest,
    kind: o.kind,
    snapshot: name,
    time: manifest.time,
    config,
    checks: config.healthChecks ?? o.fallbackChecks,
    captures: manifest.captures ?? [],
    bytes: manifest.archives.reduce((n, a) => n + a.size, 0),
  };
}

/** A check that did not pass: the drill failed (not an error of the drill itself). */
class CheckFailed extends Error {}

interface Marker {
  drill: number;
  guest: number;
  sandbox: number;
  /** QEMU of a VM sandbox, killed by the next start of a node that died mid-drill */
  qemuPid?: number;
}

function seconds(ms: number): number {
  return Math.round(ms / 10) / 100;
}

function sentence(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\.$/, "");
}

export class DrillRunner {
  private readonly opts: DrillRunnerOptions;
  private tail: Promise<void> = Promise.resolve();
  private readonly running = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();

  private constructor(opts: DrillRunnerOptions) {
    this.opts = opts;
  }

  /** Opens the runner: drills cut off by a stopped node are recorded and their sandboxes removed. */
  static async open(opts: DrillRunnerOptions): Promise<DrillRunner> {
    const r = new DrillRunner(opts);
    await fsp.mkdir(r.markerDir(), { recursive: true, mode: 0o700 });
    opts.history.prune(Date.now() - HISTORY_DAYS * 86_400_000);
    await r.removeLeftovers();
    opts.history.markInterrupted(Date.now());
    return r;
  }

  private markerDir(): string {
    return path.join(this.opts.config.dataDir, "drills");
  }

  private markerFile(sandbox: number): string {
    return path.join(this.markerDir(), `${sandbox}.json`);
  }

  private async removeLeftovers(): Promise<void> {
    for (const f of await fsp.readdir(this.markerDir())) {
      if (!/^\d+\.json$/.test(f)) continue;
      const file = path.join(this.markerDir(), f);
      let m: Marker;
      try {
        m = JSON.parse(await fsp.readFile(file, "utf8")) as Marker;
      } catch {
        await fsp.rm(file, { force: true });
        continue;
      }
      if (m.sandbox !== Number(f.slice(0, -5))) continue;
      if (m.qemuPid) await killQemu(m.qemuPid, m.sandbox);
      await this.opts.guests.removeSandbox(m.sandbox);
      await fsp.rm(file, { force: true });
      this.opts.log(`removed sandbox ${m.sandbox} of drill ${m.drill} (guest ${m.guest}), left by a node that stopped during the drill`);
    }
  }

  /**
   * Decides what a drill of `req` does, or says in one sentence why it cannot run; nothing
   * is started and nothing recorded until this returns.
   */
  async prepare(req: StartDrill): Promise<DrillPlan> {
    const current = this.opts.guests.config(req.guest);
    const group = `${current.kind}/${req.guest}`;
    let name: string;
    if (req.snapshot !== undefined) {
      const ref = parseSnapshotRef(req.snapshot);
      if (`${ref.type}/${ref.id}` !== group) throw new GordeError("usage", `snapshot ${req.snapshot} is not of guest ${req.guest} (its backups are ${group}/…).`);
      name = req.snapshot;
    }
    const repo = await this.opts.repository();
    try {
      const snaps = await repo.snapshots([], parseSnapshotRef(`${group}/latest`));
      if (req.snapshot === undefined) {
        name = newestGoodSnapshot(snaps, req.guest);
      } else if (req.snapshot.endsWith("/latest")) {
        const newest = snaps.filter((s) => s.finished && !s.error).sort((a, b) => a.time.localeCompare(b.time)).at(-1);
        if (!newest) throw new GordeError("not-found", `guest ${req.guest} has no finished backup on the backup server.`);
        name = newest.snapshot;
      } else {
        const s = snaps.find((x) => x.snapshot === req.snapshot);
        if (!s) throw new GordeError("not-found", `snapshot ${req.snapshot} does not exist on the backup server.`);
        if (!s.finished) throw new GordeError("usage", `snapshot ${req.snapshot} is unfinished; only a finished backup can be drilled.`);
        name = s.snapshot;
      }
      const plan = await planOf(repo, { guest: req.guest, kind: current.kind, snapshot: name!, fallbackChecks: current.healthChecks });
      if (!plan.checks) throw new GordeError("usage", `guest ${req.guest} has no health checks (healthChecks in its configuration), so a drill could check nothing.`);
      for (const p of plan.checks.probes) if (p.type === "script") checkedScript(this.opts.config, p.script);
      return { ...plan, checks: plan.checks };
    } finally {
      repo.close();
    }
  }

  /**
   * What recovering guest `guest` (of another node) takes: its newest finished snapshot whose
   * verification did not fail, and the health checks that snapshot holds.
   */
  async recoveryPlan(guest: number, kind: "vm" | "ct"): Promise<RecoveryPlan> {
    const repo = await this.opts.repository();
    try {
      const snaps = await repo.snapshots([], parseSnapshotRef(`${kind}/${guest}/latest`));
      return await planOf(repo, { guest, kind, snapshot: newestGoodSnapshot(snaps, guest) });
    } finally {
      repo.close();
    }
  }

  /**
   * Runs a guest's boot check and probes, as a drill does, against a guest that runs on this
   * node (a recovered one): the checks with their times; throws at the first that fails.
   */
  async checkRunning(plan: RecoveryPlan, o: { port: number; signal: AbortSignal; say: (line: string) => void }): Promise<DrillCheck[]> {
    const checks: DrillCheck[] = [];
    const run = async (name: string, fn: () => Promise<string>): Promise<void> => {
      const t0 = Date.now();
      try {
        const message = await fn();
        checks.push({ name, ok: true, seconds: seconds(Date.now() - t0), message });
        o.say(`check ${name}: ok (${seconds(Date.now() - t0)} s): ${message}`);
      } catch (err) {
        if (o.signal.aborted) throw err;
        o.say(`check ${name}: FAILED (${seconds(Date.now() - t0)} s): ${sentence(err)}`);
        throw new GordeError("corrupt", `check ${name} of guest ${plan.guest} failed: ${sentence(err)}.`);
      }
    };
    if (!plan.checks) {
      o.say(`guest ${plan.guest} has no health checks in its configuration: it counts as recovered once it runs`);
      return checks;
    }
    const c = plan.checks;
    await run("boot", () => this.boot({ ...plan, checks: c }, plan.guest, o.signal));
    for (const probe of c.probes) await run(probe.name, () => this.probe({ ...plan, checks: c }, probe, o.port, o.signal));
    return checks;
  }

  /** Records the drill as running in the history; its id is the drill's. */
  begin(plan: DrillPlan, job?: string): number {
    return this.opts.history.begin({ guest: plan.guest, node: this.opts.config.name, start: Date.now(), snapshot: plan.snapshot, job });
  }

  /** Runs a prepared drill (after the one under way, if any) and records it; never throws for a drill that failed. */
  run(plan: DrillPlan, id: number, ctx: { log?: (line: string) => void; signal?: AbortSignal } = {}): Promise<DrillRecord> {
    const p = this.queued(plan, id, ctx);
    this.running.add(p);
    void p.finally(() => this.running.delete(p)).catch(() => undefined);
    return p;
  }

  private async queued(plan: DrillPlan, id: number, ctx: { log?: (line: string) => void; signal?: AbortSignal }): Promise<DrillRecord> {
    const lines: string[] = [];
    const say = (line: string): void => {
      lines.push(`${new Date().toISOString()} ${line}`);
      ctx.log?.(line);
    };
    const signal = ctx.signal ? AbortSignal.any([ctx.signal, this.closing.signal]) : this.closing.signal;
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise((resolve) => (release = resolve));
    try {
      let waited = false;
      const t = setTimeout(() => {
        waited = true;
        say("waiting for the drill under way on this node (one at a time)");
      }, 50);
      await prev;
      clearTimeout(t);
      if (waited) say("the drill under way ended");
      return await this.drill(plan, id, signal, say, lines);
    } finally {
      release();
    }
  }

  private async drill(plan: DrillPlan, id: number, signal: AbortSignal, say: (line: string) => void, lines: string[]): Promise<DrillRecord> {
    const start = Date.now();
    const { guests } = this.opts;
    const checks: DrillCheck[] = [];
    const at = (): number => seconds(Date.now() - start);
    let restoredSeconds: number | undefined;
    let bootedSeconds: number | undefined;
    let rtoSeconds: number | undefined;
    let failed: { check: string; why: string } | undefined;
    let error: string | undefined;
    let sandbox: number | undefined;
    const rpoSeconds = Math.max(0, Math.round(start / 1000) - plan.time);

    /** Runs one check: its time and outcome recorded; a failure stops the drill. */
    const check = async (name: string, fn: () => Promise<string>): Promise<void> => {
      const t0 = Date.now();
      try {
        signal.throwIfAborted();
        const message = await fn();
        checks.push({ name, ok: true, seconds: seconds(Date.now() - t0), message });
        say(`check ${name}: ok (${seconds(Date.now() - t0)} s): ${message}`);
      } catch (err) {
        if (signal.aborted) throw err;
        const why = sentence(err);
        checks.push({ name, ok: false, seconds: seconds(Date.now() - t0), message: why });
        say(`check ${name}: FAILED (${seconds(Date.now() - t0)} s): ${why}`);
        // A verify that could not reach the server is the drill's error, not the backup's fault.
        const infra = name === "verify" && err instanceof GordeError && !["corrupt", "invalid", "not-found"].includes(err.code);
        if (infra && !(err instanceof CheckFailed)) throw err;
        failed = { check: name, why };
        throw new CheckFailed(why);
      }
    };

    say(`drill ${id} of ${plan.kind} ${plan.guest} from ${plan.snapshot} (its age ${rpoSeconds} s) on node ${this.opts.config.name}`);
    try {
      await check("verify", () => this.verifyChunks(plan, signal));
      sandbox = this.sandboxId();
      await writeFileAtomic(this.markerFile(sandbox), JSON.stringify({ drill: id, guest: plan.guest, sandbox } satisfies Marker) + "\n", { mode: 0o600 });
      const port = await this.sandboxPort();
      say(`sandbox: guest ${sandbox} on 127.0.0.1:${port}, ${plan.kind === "vm" ? "user networking restrict=on with only that port forwarded" : "its own network namespace, only that port forwarded"}`);
      await check("restore", async () => {
        const t0 = Date.now();
        await guests.restore({ snapshot: plan.snapshot, id: sandbox!, httpPort: port }, { signal, sandbox: true });
        return `${formatBytes(plan.bytes)} restored as guest ${sandbox} in ${seconds(Date.now() - t0)} s`;
      });
      restoredSeconds = at();
      await check("boot", () => this.boot(plan, sandbox!, signal));
      bootedSeconds = at();
      for (const probe of plan.checks.probes) await check(probe.name, () => this.probe(plan, probe, port, signal));
      rtoSeconds = at();
      say(`passed: restored at ${restoredSeconds} s, booted at ${bootedSeconds} s, every probe passing at ${rtoSeconds} s (RTO)`);
    } catch (err) {
      if (signal.aborted) error = `aborted: ${sentence(signal.reason)}`;
      else if (!(err instanceof CheckFailed)) error = sentence(err);
      if (error) say(`error: ${error}`);
    } finally {
      if (sandbox !== undefined) {
        try {
          await guests.removeSandbox(sandbox);
          await fsp.rm(this.markerFile(sandbox), { force: true });
          say(`sandbox ${sandbox} stopped and removed`);
        } catch (err) {
          // The marker stays: the next start of the node removes what is left.
          say(`sandbox ${sandbox} could not be removed (the node's next start removes it): ${sentence(err)}`);
        }
      }
    }
    const result: DrillRecord["result"] = error !== undefined ? "error" : failed ? "failed" : "passed";
    if (result === "failed") say(`failed: check ${failed!.check}: ${failed!.why}`);
    await this.recordOnServer(plan, { result, start, rtoSeconds, failed, error }, say);
    this.opts.history.finish(id, {
      end: Date.now(),
      result,
      failedCheck: failed?.check ?? null,
      error: failed?.why ?? error ?? null,
      checks,
      log: lines.join("\n") + "\n",
      snapshot: plan.snapshot,
      sandbox: sandbox ?? null,
      rpoSeconds,
      restoredSeconds: restoredSeconds ?? null,
      bootedSeconds: bootedSeconds ?? null,
      rtoSeconds: rtoSeconds ?? null,
      bytesRestored: restoredSeconds !== undefined ? plan.bytes : null,
    });
    return this.opts.history.get(id)!;
  }

  /** The result and RTO into the snapshot's unprotected part, so anyone reading the datastore sees them. */
  private async recordOnServer(plan: DrillPlan, o: { result: DrillRecord["result"]; start: number; rtoSeconds?: number; failed?: { check: string; why: string }; error?: string }, say: (line: string) => void): Promise<void> {
    const why = o.failed?.why ?? o.error;
    const state: DrillState = {
      result: o.result === "running" ? "error" : o.result,
      time: Math.floor(o.start / 1000),
      node: this.opts.config.name,
      ...(o.rtoSeconds !== undefined ? { rtoSeconds: o.rtoSeconds } : {}),
      ...(o.failed ? { check: o.failed.check } : {}),
      ...(why !== undefined ? { message: why.slice(0, 1024) } : {}),
    };
    try {
      const repo = await this.opts.repository();
      try {
        await repo.setDrillState([], plan.snapshot, state);
      } finally {
        repo.close();
      }
    } catch (err) {
      say(`the drill's result could not be recorded in ${plan.snapshot} on the backup server: ${sentence(err)}`);
    }
  }

  /** Reads every chunk of the snapshot through the server's reader: CRC and digest checked, before anything boots. */
  private async verifyChunks(plan: DrillPlan, signal: AbortSignal): Promise<string> {
    const repo = await this.opts.repository();
    const pool = new ChunkPool();
    try {
      const reader = await repo.openReader([], plan.snapshot);
      try {
        const digests = new Set<string>();
        for (const a of reader.manifest.archives) {
          const idx = await readArchiveIndexes(reader.manifest, a.name, reader.name, (f) => reader.readFile(f));
          const bodies = idx.kind === "img" ? [{ body: idx.index.digests, stride: DIGEST_SIZE, skip: 0 }] : [idx.entries, idx.payload].map((d) => ({ body: d.entries, stride: DYNAMIC_ENTRY_SIZE, skip: 8 }));
          for (const { body, stride, skip } of bodies) for (let o = skip; o + DIGEST_SIZE <= body.length; o += stride) digests.add(body.toString("hex", o, o + DIGEST_SIZE));
        }
        await pool.init(null, 0, Buffer.alloc(0));
        const loader = reader.loader(pool);
        const list = [...digests];
        let next = 0;
        await Promise.all(
          Array.from({ length: Math.min(VERIFY_IN_FLIGHT, list.length) }, async () => {
            while (next < list.length) {
              signal.throwIfAborted();
              const hex = list[next++]!;
              try {
                await loader.load(hex);
              } catch (err) {
                if (err instanceof GordeError && err.code !== "corrupt" && err.code !== "invalid" && err.code !== "not-found") throw err;
                throw new GordeError("corrupt", `chunk ${hex} of ${plan.snapshot} is damaged: ${sentence(err)}`);
              }
            }
          }),
        );
        return `${list.length} chunks of ${plan.snapshot} read through the backup server, CRC and digest checked`;
      } finally {
        await reader.close();
      }
    } finally {
      await pool.close();
      repo.close();
    }
  }

  /** The first id of the drill range that no guest, marker or leftover of this node has. */
  private sandboxId(): number {
    const range = this.opts.config.drill?.ids ?? DEFAULT_DRILL_IDS;
    const used = new Set(this.opts.guests.ids());
    const data = this.opts.config.dataDir;
    for (let id = range.first; id <= range.last; id++) {
      if (used.has(id)) continue;
      const taken = [this.markerFile(id), path.join(data, "guests", `${id}.json`), path.join(data, "images", String(id)), path.join(data, "rootfs", String(id)), path.join(data, "run", String(id))];
      if (!taken.some((f) => fs.existsSync(f))) return id;
    }
    throw new GordeError("exists", `no free sandbox id in the drill range ${range.first}..${range.last} on node ${this.opts.config.name}.`);
  }

  /** A free 127.0.0.1 port that is no guest's service port. */
  private async sandboxPort(): Promise<number> {
    const ports = new Set(this.opts.guests.ids().map((id) => this.opts.guests.config(id).httpPort));
    for (let i = 0; i < 20; i++) {
      const p = await freePort();
      if (!ports.has(p) && p >= 1024) return p;
    }
    throw new GordeError("io", "no free 127.0.0.1 port for the sandbox's service.");
  }

  /** Starts the sandbox and waits for its boot check, within its timeout. */
  private async boot(plan: DrillPlan, sandbox: number, signal: AbortSignal): Promise<string> {
    const { guests } = this.opts;
    const boot = plan.checks.boot;
    const t0 = Date.now();
    const deadline = t0 + boot.timeoutSeconds * 1000;
    if (!guests.isRunning(sandbox)) await guests.start(sandbox);
    const rt = guests.runtime(sandbox);
    if (!rt) throw new CheckFailed(`sandbox ${sandbox} stopped right after it started`);
    if (rt.kind === "vm" && fs.existsSync(this.markerFile(sandbox))) {
      const m = JSON.parse(await fsp.readFile(this.markerFile(sandbox), "utf8")) as Marker;
      await writeFileAtomic(this.markerFile(sandbox), JSON.stringify({ ...m, qemuPid: rt.pid } satisfies Marker) + "\n", { mode: 0o600 });
    }
    const took = (): string => `${seconds(Date.now() - t0)} s`;
    const gone = (): boolean => {
      const now = guests.runtime(sandbox);
      return !now || (now.kind === "vm" && now.exited);
    };
    for (;;) {
      signal.throwIfAborted();
      if (boot.type === "serial" && rt.kind === "vm") {
        const text = await fsp.readFile(rt.consoleLog, "utf8").catch(() => "");
        if (text.includes(boot.marker)) return `${JSON.stringify(boot.marker)} on the serial console after ${took()}`;
      } else if (boot.type === "agent" && rt.kind === "vm") {
        if (!rt.agentSocket) throw new CheckFailed(`the VM has no guest agent port (agent is off in its configuration)`);
        const agent = await GuestAgent.connect(rt.agentSocket);
        if (agent) {
          try {
            await agent.execute("guest-ping");
            return `the guest agent answered a ping after ${took()}`;
          } catch {
            // not up yet
          } finally {
            agent.close();
          }
        }
      } else if (boot.type === "init" && rt.kind === "ct") {
        if ((await rt.running()) && fs.existsSync(`/proc/${rt.pid}`)) return `init (pid ${rt.pid}) running after ${took()}`;
      }
      if (gone()) throw new CheckFailed(`the sandbox stopped after ${took()} without passing its boot check; the end of its console: ${await consoleTail(rt.consoleLog)}`);
      if (Date.now() >= deadline) {
        const what = boot.type === "serial" ? `no ${JSON.stringify(boot.marker)} on the serial console` : boot.type === "agent" ? "no answer from the guest agent" : "init is not running";
        throw new CheckFailed(`${what} within ${boot.timeoutSeconds} s; the end of its console: ${await consoleTail(rt.consoleLog)}`);
      }
      await sleep(POLL_MS, undefined, { signal });
    }
  }

  /** One probe, retried (a service may still be starting) until it passes or its timeout ends. */
  private async probe(plan: DrillPlan, probe: Probe, port: number, signal: AbortSignal): Promise<string> {
    const t0 = Date.now();
    const deadline = t0 + probe.timeoutSeconds * 1000;
    const took = (): string => `${seconds(Date.now() - t0)} s`;
    if (probe.type === "script") return runScript(checkedScript(this.opts.config, probe.script), { port, timeoutSeconds: probe.timeoutSeconds, guest: plan.guest, signal });
    let last = "no attempt";
    for (;;) {
      signal.throwIfAborted();
      const left = deadline - Date.now();
      if (probe.type === "tcp") {
        const r = await tcpOpen(port, Math.min(ATTEMPT_MS, Math.max(100, left)));
        if (r === undefined) return `127.0.0.1:${port} accepts connections (after ${took()})`;
        last = r;
      } else {
        const capture = probe.expect === "snapshot" ? plan.captures.find((c) => c.probe === probe.name) : undefined;
        let answer: { status: number; body: Buffer } | undefined;
        try {
          answer = await readAnswer(port, { ...probe, timeoutSeconds: Math.min(ATTEMPT_MS, Math.max(100, left)) / 1000 }, signal);
        } catch (err) {
          if (signal.aborted) throw err;
          last = `GET ${probe.path}: ${sentence(err)}`;
        }
        if (answer) {
          const checked = checkAnswer(probe, answer, capture);
          if (checked.ok) return `${checked.message.replace(/\.$/, "")} after ${took()}`;
          // The service answers: a wrong body will not become right by waiting.
          if (answer.status === probe.status) throw new CheckFailed(checked.message.replace(/\.$/, ""));
          last = checked.message.replace(/\.$/, "");
        }
      }
      if (Date.now() >= deadline) throw new CheckFailed(`${last} (within ${probe.timeoutSeconds} s)`);
      await sleep(Math.min(POLL_MS * 2, Math.max(0, deadline - Date.now())), undefined, { signal });
    }
  }

  /** Aborts the drill under way and waits for its sandbox to be removed (the node is stopping). */
  async close(): Promise<void> {
    this.closing.abort(new GordeError("io", "the node is stopping"));
    await Promise.allSettled([...this.running]);
  }
}

/** The last lines of a console log, on one line. */
async function consoleTail(file: string): Promise<string> {
  const text = (await fsp.readFile(file, "utf8").catch(() => "")).trim();
  if (!text) return "(empty)";
  return JSON.stringify(text.split("\n").slice(-3).join(" / ").slice(-300));
}

/** undefined when 127.0.0.1:port accepts and keeps a connection, else why not. */
function tcpOpen(port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: "127.0.0.1", port });
    let settle: NodeJS.Timeout | undefined;
    const done = (why: string | undefined): void => {
      clearTimeout(timer);
      clearTimeout(settle);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no connection to 127.0.0.1:${port} within ${timeoutMs} ms`), timeoutMs);
    s.once("error", (err) => done(`127.0.0.1:${port}: ${err.message}`));
    s.once("connect", () => {
      settle = setTimeout(() => done(undefined), TCP_SETTLE_MS);
      s.once("data", () => done(undefined));
      s.once("end", () => done(`127.0.0.1:${port} closed the connection at once: nothing listens on the guest's port`));
      s.once("close", () => done(`127.0.0.1:${port} closed the connection at once: nothing listens on the guest's port`));
    });
  });
}

/** Runs a health check script of the node's with the sandbox's address and port, as PVE runs a hookscript. */
function runScript(file: string, o: { port: number; timeoutSeconds: number; guest: number; signal: AbortSignal }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, [], {
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", GORDE_SANDBOX_ADDRESS: "127.0.0.1", GORDE_SANDBOX_PORT: String(o.port), GORDE_GUEST: String(o.guest) },
      stdio: ["ignore", "pipe", "pipe"],
      signal: o.signal,
      killSignal: "SIGKILL",
    });
    let out = "";
    const keep = (b: Buffer): void => {
      out = (out + b.toString()).slice(-4096);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, o.timeoutSeconds * 1000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(o.signal.aborted ? err : new CheckFailed(`script ${file} could not run: ${sentence(err)}`));
    });
    child.once("close", (code, sig) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").at(-1)?.trim() ?? "";
      if (timedOut) reject(new CheckFailed(`script ${file} did not finish within ${o.timeoutSeconds} s`));
      else if (code === 0) resolve(`script ${file} exited 0${last ? `: ${last}` : ""}`);
      else reject(new CheckFailed(`script ${file} ${code !== null ? `exited ${code}` : `was killed by ${sig}`}${last ? `: ${last}` : ""}`));
    });
  });
}

/** Kills a sandbox's QEMU left by a node that died, if that pid still is it. */
async function killQemu(pid: number, sandbox: number): Promise<void> {
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return;
  }
  if (!cmdline.split("\0").includes(`vm${sandbox}`)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  // Gone, or a zombie its new parent has yet to reap: either way it holds no disk or port.
  for (let i = 0; i < 100; i++) {
    const status = await fsp.readFile(`/proc/${pid}/status`, "utf8").catch(() => "State: X");
    if (/^State:\s+[XZ]/m.test(status)) break;
    await sleep(50);
  }
}

/** The drill's result as the command line's contract prints it. */
export function drillJson(d: DrillRecord): { id: number; guest: number; snapshot: string | null; result: DrillRecord["result"]; rpo_s: number | null; rto_s: number | null; checks: DrillCheck[] } {
  return { id: d.id, guest: d.guest, snapshot: d.snapshot, result: d.result, rpo_s: d.rpoSeconds, rto_s: d.rtoSeconds, checks: d.checks };
}
