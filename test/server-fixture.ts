// A real `gorde server` process on loopback for tests, and the CLI run asynchronously
// (a synchronous child would block this process's event loop).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { freePort } from "../src/node/qemu.ts";

export const MAIN = new URL("../src/cli/main.ts", import.meta.url).pathname;

export interface Run {
  code: number;
  out: string;
  err: string;
}

/**
 * The command that runs the CLI with `args`, in network namespace `netns` if named. nsenter
 * joins only the namespace's network; `ip netns exec` would also remount /sys and leave the
 * process outside the cgroups the containers need.
 */
export function gordeCommand(args: string[], netns?: string): [string, string[]] {
  if (!netns) return [process.execPath, [MAIN, ...args]];
  return ["nsenter", [`--net=/run/netns/${netns}`, "--", process.execPath, MAIN, ...args]];
}

/** Runs the CLI with `env` added (in network namespace `netns` if named); resolves when it exits (killed after `timeoutMs`). */
export function gorde(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000, netns?: string): Promise<Run> {
  return new Promise((resolve) => {
    const [cmd, argv] = gordeCommand(args, netns);
    const child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out, err });
    });
  });
}

export { freePort };

export interface ServerProcess {
  port: number;
  fingerprint: string;
  child: ChildProcess;
  url(store: string, user?: string): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
  stderr(): string;
}

/** A gorde daemon (server or node) started with `args`, once it printed its fingerprint (at most 20 s). */
async function startDaemon(args: string[], env: Record<string, string>, netns?: string): Promise<{ fingerprint: string; child: ChildProcess; stderr(): string; stop(signal?: NodeJS.Signals): Promise<void> }> {
  const [cmd, argv] = gordeCommand(args, netns);
  const child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const fingerprint = await new Promise<string>((resolve, reject) => {
    // A daemon that did not start is killed: left running, it would keep the test process alive.
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`gorde ${args[0]} did not start: ${err}`));
    }, 20_000);
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /^fingerprint: (\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`gorde ${args[0]} exited with ${code}: ${err}`));
    });
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    fingerprint,
    child,
    stderr: () => err,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Where a daemon runs: its address (127.0.0.1 unless named) in network namespace `netns` (none: this process's). */
export interface Placement {
  host?: string;
  netns?: string;
}

/** Starts `gorde server` on 127.0.0.1 (or as `placement` says). */
export async function startServerProcess(opts: { stateDir: string; datastores: Record<string, string>; adminPassword?: string; port?: number; extra?: string[]; env?: Record<string, string> } & Placement): Promise<ServerProcess> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort());
  const args = ["server", "--listen", `${host}:${port}`, "--state-dir", opts.stateDir, ...(opts.extra ?? [])];
  for (const [name, dir] of Object.entries(opts.datastores)) args.push("--datastore", `${name}=${dir}`);
  const d = await startDaemon(args, { GORDE_ADMIN_PASSWORD: opts.adminPassword ?? "admin-pass-1", ...opts.env }, opts.netns);
  return { ...d, port, url: (store, user = "admin") => `https://${user}@${host}:${port}/${store}` };
}

export interface NodeProcess {
  name: string;
  port: number;
  fingerprint: string;
  child: ChildProcess;
  /** https://admin@<host>:<port> */
  url(user?: string): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
  stderr(): string;
}

/** Starts `gorde node` on 127.0.0.1 (or as `placement` says) with a config file written into `dataDir` (`extra`: more keys of the config). */
export async function startNodeProcess(opts: { name: string; dataDir: string; serverUrl: string; serverFingerprint: string; serverSecret: string; adminPassword?: string; extra?: Record<string, unknown>; port?: number } & Placement): Promise<NodeProcess> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort());
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const secretFile = path.join(opts.dataDir, "server-secret");
  fs.writeFileSync(secretFile, opts.serverSecret + "\n", { mode: 0o600 });
  const config = path.join(opts.dataDir, "node.json");
  fs.writeFileSync(config, JSON.stringify({ name: opts.name, dataDir: opts.dataDir, listen: `${host}:${port}`, server: { url: opts.serverUrl, fingerprint: opts.serverFingerprint, secretFile }, ...opts.extra }));
  const d = await startDaemon(["node", "--config", config], { GORDE_ADMIN_PASSWORD: opts.adminPassword ?? "node-admin-1" }, opts.netns);
  return { ...d, name: opts.name, port, url: (user = "admin") => `https://${user}@${host}:${port}` };
}

export function stateDirs(root: string): { state: string; store: string } {
  return { state: path.join(root, "state"), store: path.join(root, "store") };
}
