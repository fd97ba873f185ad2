// How each backup tool is driven: command lines for init, backup and restore.

import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { BENCH_DIR } from "./data.ts";
import { capture, type Cmd } from "./proc.ts";

export const ROOT = dirname(BENCH_DIR);

export const TOOL_NAMES = ["gorde", "restic", "borg"] as const;
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
}

export type Probe = { ok: true; version: string } | { ok: false; problem: string; aptPackage?: string };

export interface Tool {
  name: ToolName;
  probe(): Probe;
  init(c: ToolCtx): Cmd;
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
  backup: (c) => ({
    argv: [process.execPath, GORDE_MAIN, "backup", c.repo, GORDE_HOST, `${gordeArchive(c.dataset)}=${c.source}`, "--json"],
    cwd: ROOT,
  }),
  restore(c) {
    const target = c.dataset === "image" ? join(c.restoreDir, "disk.img") : c.restoreDir;
    return {
      cmd: {
        argv: [process.execPath, GORDE_MAIN, "restore", c.repo, `${GORDE_HOST}/latest`, gordeArchive(c.dataset), target],
        cwd: ROOT,
      },
      restored: target,
    };
  },
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

export const TOOLS: Record<ToolName, Tool> = { gorde, restic, borg };
