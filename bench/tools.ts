// How each backup tool is driven: command lines for init, backup and restore.

import { spawn } from "node:child_process";
import { existsSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { BENCH_DIR } from "./data.ts";
import { capture, type Cmd, procUsage } from "./proc.ts";

export const ROOT = dirname(BENCH_DIR);

export const TOOL_NAMES = ["gorde", "gorde-remote", "restic", "borg"] as const;
export type ToolName = (typeof TOOL_NAMES)[number];
export const DATASETS = ["image", "tree"] as const;
export type DatasetName = (typeof DATASETS)[number];

export interface ToolCtx {
  dataset: DatasetName;
  /** bench/work/<tool>-<dataset>: everything the tool writes lives below. */
  base: string;
  repo: string;
  /** Caches and other per-tool state outside the repository. */
  aux: string;
  /** Empty directory the restore writes into. */
  restoreDir: string;
  /** bench/work: the directory holding the source. */
  workDir: string;
  /** Absolute path of the data backed up (bench/work/disk.img or bench/work/tree). */
  source: string;
  /** Set while the tool's server runs (tools with `start`): what the client commands use. */
  server?: ServerSession;
}

/** A server process serving `repo` (the datastore directory) for the whole data set. */
export interface ServerSession {
  /** Repository argument of the client commands (a URL). */
  repo: string;
  /** Environment of the client commands. */
  env: Record<string, string>;
  /** CPU seconds (user + sys) the server used so far and its peak RSS since the last `resetPeak`. */
  usage(): { cpuS: number; maxRssKiB: number } | null;
  /** Resets the peak RSS the kernel records for the server (so `usage` reports one step's peak). */
  resetPeak(): void;
  /** Stops the server; safe to call more than once. */
  stop(): Promise<void>;
}

export type Probe = { ok: true; version: string } | { ok: false; problem: string; aptPackage?: string };

export interface Tool {
  name: ToolName;
  probe(): Probe;
  /** Absent when the repository needs no init command (a server creates it). */
  init?(c: ToolCtx): Cmd;
  /**
   * Starts a server before the first step of a data set; the harness stops it after the last
   * (also on errors and interrupts). Its output goes to `logFile`.
   */
  start?(c: ToolCtx, logFile: string): Promise<ServerSession>;
  /** n = 1, 2, 3 for the successive backups. */
  backup(c: ToolCtx, n: number): Cmd;
  /** Restores the newest backup; `restored` is where the image file / tree root ends up. */
  restore(c: ToolCtx, lastBackup: number): { cmd: Cmd; restored: string };
}

// GORDE_CLI may point at another entry point (e.g. a different checkout) to compare builds.
const GORDE_MAIN = process.env.GORDE_CLI ?? join(ROOT, "src", "cli", "main.ts");
const GORDE_HOST = "host/bench";

function gordeArchive(d: DatasetName): string {
  return d === "image" ? "disk.img" : "data.tree";
}

const gorde: Tool = {
  name: "gorde",
  probe() {
    let version = "?";
    try {
      version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version?: string }).version ?? "?";
    } catch {
      // keep "?"
    }
    const rev = capture(["git", "rev-parse", "--short", "HEAD"], ROOT);
    const revText = rev.ok ? `git ${rev.out}` : "no commit yet";
    const dirty = capture(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], ROOT);
    const state = existsSync(GORDE_MAIN) ? "" : `, ${GORDE_MAIN} missing`;
    return {
      ok: true,
      version:
        `gorde ${version} (${revText}${rev.ok && dirty.ok && dirty.out !== "" ? ", modified" : ""}${state}), ` +
        `node ${process.version}`,
    };
  },
  init: (c) => ({ argv: [process.execPath, GORDE_MAIN, "init", c.repo], cwd: ROOT }),
  // With a server running (gorde-remote) the same commands go to its URL instead of the directory.
  backup: (c) => ({
    argv: [
      process.execPath,
      GORDE_MAIN,
      "backup",
      c.server?.repo ?? c.repo,
      GORDE_HOST,
      `${gordeArchive(c.dataset)}=${c.source}`,
      "--json",
    ],
    cwd: ROOT,
    ...(c.server ? { env: c.server.env } : {}),
  }),
  restore(c) {
    const target = c.dataset === "image" ? join(c.restoreDir, "disk.img") : c.restoreDir;
    return {
      cmd: {
        argv: [
          process.execPath,
          GORDE_MAIN,
          "restore",
          c.server?.repo ?? c.repo,
          `${GORDE_HOST}/latest`,
          gordeArchive(c.dataset),
          target,
        ],
        cwd: ROOT,
        ...(c.server ? { env: c.server.env } : {}),
      },
      restored: target,
    };
  },
};

// ---- gorde-remote: the gorde client against `gorde server` on loopback

const SERVER_PASSWORD = "gorde-bench-admin";
const SERVER_STORE = "bench";
const SERVER_START_MS = 60_000;
const SERVER_STOP_MS = 10_000;

/** Process groups of running servers, killed when the harness exits whatever the reason. */
const liveServers = new Set<number>();
process.on("exit", () => {
  for (const pid of liveServers) killGroup(pid, "SIGKILL");
});

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}


/**
 * Starts `gorde server` on 127.0.0.1 with a kernel-chosen port, serving c.repo as datastore
 * "bench" (the server initialises the empty directory), and waits for its fingerprint.
 */
function startGordeServer(c: ToolCtx, logFile: string): Promise<ServerSession> {
  writeFileSync(logFile, `$ gorde server --listen 127.0.0.1:0 --state-dir ${join(c.aux, "server-state")} --datastore ${SERVER_STORE}=${c.repo}\n`);
  const log = openSync(logFile, "a");
  const child = spawn(
    process.execPath,
    [
      GORDE_MAIN,
      "server",
      "--listen",
      "127.0.0.1:0",
      "--state-dir",
      join(c.aux, "server-state"),
      "--datastore",
      `${SERVER_STORE}=${c.repo}`,
    ],
    {
      cwd: ROOT,
      env: { ...process.env, GORDE_ADMIN_PASSWORD: SERVER_PASSWORD },
      // Own process group: a terminal's Ctrl-C reaches only the harness, which stops the server itself.
      detached: true,
      stdio: ["ignore", "pipe", log],
    },
  );
  closeSync(log);
  const pid = child.pid;
  if (pid !== undefined) liveServers.add(pid);
  const exited = new Promise<void>((resolve) => {
    child.once("close", () => {
      if (pid !== undefined) liveServers.delete(pid);
      resolve();
    });
  });
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      killGroup(pid, "SIGTERM");
      const timer = setTimeout(() => killGroup(pid, "SIGKILL"), SERVER_STOP_MS);
      await exited;
      clearTimeout(timer);
      // Anything left in the group (there should be nothing) goes too.
      killGroup(pid, "SIGKILL");
    })();
    return stopping;
  };

  return new Promise<ServerSession>((resolve, reject) => {
    let out = "";
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void stop().then(() => reject(new Error(`gorde server ${why}`)));
    };
    const timer = setTimeout(() => fail(`printed no fingerprint within ${SERVER_START_MS / 1000} s`), SERVER_START_MS);
    child.once("error", (e) => fail(`could not start: ${e.message}`));
    child.once("close", (code, signal) => {
      let tail = "";
      try {
        tail = readFileSync(logFile, "utf8").trim().split("\n").slice(-1)[0] ?? "";
      } catch {
        // no log
      }
      fail(`exited (${code ?? signal}) before it was ready${tail ? `: ${tail}` : ""}`);
    });
    child.stdout!.on("data", (chunk: Buffer) => {
      writeFileSync(logFile, chunk, { flag: "a" });
      if (settled) return;
      out += chunk.toString("utf8");
      const fp = /^fingerprint: (\S+)$/m.exec(out);
      const port = /^listening on [^\n]*:(\d+)$/m.exec(out);
      if (!fp || !port) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        repo: `https://admin@127.0.0.1:${port[1]}/${SERVER_STORE}`,
        env: { GORDE_PASSWORD: SERVER_PASSWORD, GORDE_FINGERPRINT: fp[1]! },
        usage: () => (pid === undefined ? null : procUsage(pid)),
        resetPeak() {
          if (pid === undefined) return;
          try {
            writeFileSync(`/proc/${pid}/clear_refs`, "5"); // 5: reset the peak RSS
          } catch {
            // not permitted: the peak then covers the data set so far
          }
        },
        stop,
      });
    });
  });
}

const gordeRemote: Tool = {
  name: "gorde-remote",
  probe() {
    const p = gorde.probe();
    return p.ok ? { ok: true, version: "gorde-remote: the same gorde against `gorde server` on 127.0.0.1 (TLS, HTTP/2)" } : p;
  },
  // No init: the server initialises the empty datastore directory.
  start: startGordeServer,
  backup: gorde.backup,
  restore: gorde.restore,
};

const RESTIC_PASSWORD = "gorde-bench";

function resticEnv(c: ToolCtx): Record<string, string> {
  return { RESTIC_PASSWORD, RESTIC_CACHE_DIR: join(c.aux, "restic-cache") };
}

const restic: Tool = {
  name: "restic",
  probe() {
    const r = capture(["restic", "version"]);
    return r.ok ? { ok: true, version: r.out.split("\n")[0] ?? r.out } : { ok: false, problem: "restic not installed", aptPackage: "restic" };
  },
  init: (c) => ({
    argv: ["restic", "-r", c.repo, "init", "--repository-version", "2"],
    cwd: c.workDir,
    env: resticEnv(c),
  }),
  backup: (c) => ({
    argv: ["restic", "-r", c.repo, "backup", "--compression", "auto", "--host", "bench", c.source],
    cwd: c.workDir,
    env: resticEnv(c),
  }),
  restore: (c) => ({
    cmd: {
      argv: ["restic", "-r", c.repo, "restore", "latest", "--target", c.restoreDir],
      cwd: c.workDir,
      env: resticEnv(c),
    },
    // restic recreates the absolute source path below the target.
    restored: join(c.restoreDir, c.source),
  }),
};

function borgEnv(c: ToolCtx): Record<string, string> {
  return {
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "yes",
    BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
    BORG_BASE_DIR: join(c.aux, "borg-base"),
  };
}

const borg: Tool = {
  name: "borg",
  probe() {
    const r = capture(["borg", "--version"]);
    return r.ok ? { ok: true, version: r.out.split("\n")[0] ?? r.out } : { ok: false, problem: "borg not installed", aptPackage: "borgbackup" };
  },
  init: (c) => ({ argv: ["borg", "init", "--encryption", "none", c.repo], cwd: c.workDir, env: borgEnv(c) }),
  backup: (c, n) => ({
    argv: [
      "borg",
      "create",
      "--stats",
      "--compression",
      "zstd,3",
      ...(c.dataset === "image" ? ["--chunker-params", "fixed,4194304"] : []),
      `${c.repo}::b${n}`,
      // Relative to the work directory, so the archive holds just "disk.img" / "tree".
      basename(c.source),
    ],
    cwd: c.workDir,
    env: borgEnv(c),
  }),
  restore: (c, last) => ({
    cmd: { argv: ["borg", "extract", `${c.repo}::b${last}`], cwd: c.restoreDir, env: borgEnv(c) },
    restored: join(c.restoreDir, basename(c.source)),
  }),
};

export const TOOLS: Record<ToolName, Tool> = { gorde, "gorde-remote": gordeRemote, restic, borg };
