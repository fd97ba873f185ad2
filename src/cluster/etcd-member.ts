// One member of the cluster's etcd (Debian's etcd-server 3.4): gorde writes its
// configuration and TLS files into the member's directory and runs it; nobody edits them by
// hand. Members speak TLS to each other and to their clients, every certificate signed by
// the cluster's CA, and each side must present one (client-cert-auth): only a member of the
// cluster can read or change its state. The timings are etcd's defaults ×2, chosen for two
// loaded cores under TCG guests (docs/cluster.md).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { type ProcessRecord, killRecorded, recordLives, recordOf, whenGone } from "../sys/processes.ts";
import { once } from "node:events";
import fs from "node:fs";
import fsp from "node:fs/promises";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import YAML from "yaml";
import { GordeError } from "../errors.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";

export const ETCD = "etcd";
/** etcd's heartbeat and election timeout, in milliseconds (its defaults are 100 and 1000). */
export const HEARTBEAT_MS = 200;
export const ELECTION_TIMEOUT_MS = 2000;
const START_TIMEOUT_MS = 60_000;

/** The PEM files of a member: the cluster's CA certificate, its own certificate and key. */
export interface MemberTls {
  ca: string;
  cert: string;
  key: string;
}

export interface EtcdMemberOptions {
  /** the member's directory: configuration, TLS files, data, log */
  dir: string;
  /** the member's name: the node's, or "witness" */
  name: string;
  /** https://<ip>:<port> its peers reach it at */
  peerUrl: string;
  /** https://<ip>:<port> clients reach it at */
  clientUrl: string;
  /** every member of the cluster it starts in (itself included): name → peer URL */
  initialCluster: Record<string, string>;
  /** "new": the first member of a new cluster; "existing": a member added to a running one */
  state: "new" | "existing";
  /** the cluster's name: etcd refuses peers of another cluster */
  cluster: string;
  tls: MemberTls;
  /** resolve only once the member has a leader (creating, joining); a restart waits only until it answers */
  waitForLeader?: boolean;
  /** a member a killed host left running with this configuration is taken over, not replaced (a host starting again) */
  adopt?: boolean;
}

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly pid: number;
  /** resolves when the process has exited */
  readonly exited: Promise<void>;
  /** the member's log (etcd writes it on stderr) */
  readonly logFile: string;
  /** whether it was left running by the host's previous process and taken over */
  readonly adopted: boolean;
  /** SIGTERM, then SIGKILL after `graceMs` */
  stop(graceMs?: number): Promise<void>;
}

/** Whether etcd is installed, or why not. */
export function etcdAvailable(): { ok: true } | { ok: false; why: string } {
  const r = spawnSync(ETCD, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return { ok: false, why: "etcd is not installed (Debian's etcd-server; scripts/setup.sh installs it as root)" };
  return { ok: true };
}

/** The member's files: its configuration, TLS and data, as etcd reads them. */
export function memberFiles(dir: string): { config: string; ca: string; cert: string; key: string; data: string; log: string; pid: string } {
  return {
    config: path.join(dir, "etcd.conf.yml"),
    ca: path.join(dir, "tls", "ca.pem"),
    cert: path.join(dir, "tls", "member.pem"),
    key: path.join(dir, "tls", "member.key"),
    data: path.join(dir, "data"),
    log: path.join(dir, "etcd.log"),
    pid: path.join(dir, "etcd.pid"),
  };
}

/** Writes the member's configuration and TLS files (the key readable by root only). */
export async function writeMemberConfig(o: EtcdMemberOptions): Promise<string> {
  const f = memberFiles(o.dir);
  if (!o.initialCluster[o.name]) throw new GordeError("usage", `the initial cluster of member ${o.name} does not name it.`);
  await fsp.mkdir(path.dirname(f.key), { recursive: true, mode: 0o700 });
  await writeFileAtomic(f.ca, o.tls.ca, { mode: 0o644 });
  await writeFileAtomic(f.key, o.tls.key, { mode: 0o600 });
  await writeFileAtomic(f.cert, o.tls.cert, { mode: 0o644 });
  const security = { "cert-file": f.cert, "key-file": f.key, "trusted-ca-file": f.ca, "client-cert-auth": true };
  const config = {
    name: o.name,
    "data-dir": f.data,
    "listen-peer-urls": o.peerUrl,
    "listen-client-urls": o.clientUrl,
    "initial-advertise-peer-urls": o.peerUrl,
    "advertise-client-urls": o.clientUrl,
    "initial-cluster": Object.entries(o.initialCluster)
      .map(([n, u]) => `${n}=${u}`)
      .join(","),
    "initial-cluster-state": o.state,
    "initial-cluster-token": `gorde-${o.cluster}`,
    "heartbeat-interval": HEARTBEAT_MS,
    "election-timeout": ELECTION_TIMEOUT_MS,
    "strict-reconfig-check": true,
    // A member cut off and back does not depose a leader the majority still hears.
    "pre-vote": true,
    "client-transport-security": security,
    "peer-transport-security": security,
    logger: "zap",
    "log-level": "warn",
  };
  await writeFileAtomic(f.config, "# written by gorde: do not edit (gorde cluster rewrites it)\n" + YAML.stringify(config), { mode: 0o644 });
  return f.config;
}

/** Starts the member and resolves once its client URL answers healthy; nothing is left running when it throws. */
export async function startEtcdMember(o: EtcdMemberOptions): Promise<EtcdMember> {
  const avail = etcdAvailable();
  if (!avail.ok) throw new GordeError("unsupported", `cannot start etcd member ${o.name}: ${avail.why}.`);
  const config = await writeMemberConfig(o);
  const f = memberFiles(o.dir);
  const left = leftover(f.pid, config);
  if (left && o.adopt && (await listening(o.clientUrl))) return adoptMember(o, f.log, left);
  if (left) await killRecorded(left);
  const log = fs.openSync(f.log, "a");
  let child: ChildProcess;
  try {
    child = spawn(ETCD, ["--config-file", config], { stdio: ["ignore", log, log] });
  } finally {
    fs.closeSync(log);
  }
  if (child.pid !== undefined) await writeFileAtomic(f.pid, `${child.pid}\n`);
  const exited = once(child, "exit").then(
    () => undefined,
    () => undefined,
  );
  let done = false;
  void exited.then(() => (done = true));
  const stop = async (graceMs = 5000): Promise<void> => {
    if (done) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  };
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (done) throw new GordeError("io", `etcd member ${o.name} exited at once: ${lastError(f.log)}`);
      // A member restarting with the others down has no leader, and etcd serves its clients
      // only once it has published itself through one: it listens, and waits for them.
      if (o.waitForLeader ? await healthy(o.clientUrl, o.tls) : await listening(o.clientUrl)) break;
      if (Date.now() > deadline) throw new GordeError("io", `etcd member ${o.name} is not ${o.waitForLeader ? "healthy" : "answering"} ${START_TIMEOUT_MS / 1000} s after its start; see ${f.log}.`);
      await sleep(100);
    }
  } catch (err) {
    await stop(1000);
    throw err;
  }
  return { name: o.name, clientUrl: o.clientUrl, pid: child.pid!, exited, logFile: f.log, adopted: false, stop };
}

/**
 * The etcd a host that was killed left running (its agent died, its member did not): the
 * process the pid file names, if it still runs this member's configuration.
 */
function leftover(pidFile: string, config: string): ProcessRecord | undefined {
  const pid = Number(fs.readFileSync(pidFile, { encoding: "utf8", flag: "a+" }).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let cmdline = "";
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return undefined; // gone
  }
  if (!cmdline.split("\0").includes(config)) return undefined; // another process has that pid now
  const rec = recordOf(pid);
  return rec && recordLives(rec) ? rec : undefined;
}

/** A member left running, taken over: it kept its vote and its raft state, nothing to catch up. */
function adoptMember(o: EtcdMemberOptions, logFile: string, rec: ProcessRecord): EtcdMember {
  const exited = whenGone(rec).gone;
  let done = false;
  void exited.then(() => (done = true));
  const signal = (sig: NodeJS.Signals): void => {
    if (recordLives(rec)) process.kill(rec.pid, sig);
  };
  return {
    name: o.name,
    clientUrl: o.clientUrl,
    pid: rec.pid,
    exited,
    logFile,
    adopted: true,
    async stop(graceMs = 5000) {
      if (done) return;
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Whether something accepts TCP connections at the URL's address and port. */
function listening(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port) }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

/** Whether the member at `clientUrl` answers its /health as healthy (it has a leader). */
export function healthy(clientUrl: string, tls: MemberTls, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = https.get(new URL("/health", clientUrl), { ca: tls.ca, cert: tls.cert, key: tls.key, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => {
        try {
          resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: unknown }).health === "true");
        } catch {
          resolve(false);
        }
      });
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}

/** The last error etcd logged, in a few words. */
function lastError(logFile: string): string {
  let text = "";
  try {
    text = fs.readFileSync(logFile, "utf8");
  } catch {
    return "it logged nothing.";
  }
  const lines = text.trim().split("\n").reverse();
  for (const line of lines) {
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      if (j.level === "error" || j.level === "fatal" || j.level === "panic") return `${j.msg ?? "error"}${j.error ? `: ${j.error}` : ""}.`;
    } catch {
      if (line.trim()) return `${line.trim().slice(0, 300)}`;
    }
  }
  return `see ${logFile}.`;
}
