// Running external commands: plain helpers and a measured runner that wraps
// the command in GNU time to obtain its peak resident set size.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const GNU_TIME = "/usr/bin/time";

export interface Cmd {
  argv: string[];
  cwd: string;
  env?: Record<string, string>;
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Wall time of the command in milliseconds (measured around the spawn). */
  ms: number;
  /** Peak RSS in KiB as reported by GNU time, null when unavailable. */
  maxRssKiB: number | null;
  userS: number | null;
  sysS: number | null;
  timedOut: boolean;
}

const KEEP = 256 * 1024;

function keepTail(acc: string, chunk: Buffer): string {
  const s = acc + chunk.toString("utf8");
  return s.length > KEEP ? s.slice(s.length - KEEP) : s;
}

function keepHead(acc: string, chunk: Buffer): string {
  if (acc.length >= KEEP) return acc;
  return (acc + chunk.toString("utf8")).slice(0, KEEP);
}

let timeChecked: boolean | null = null;

/** True when GNU time is installed and understands -f/-o. */
export function haveGnuTime(): boolean {
  if (timeChecked === null) {
    if (!existsSync(GNU_TIME)) {
      timeChecked = false;
    } else {
      const dir = mkdtempSync(join(tmpdir(), "gorde-bench-"));
      try {
        const out = join(dir, "t");
        const r = spawnSync(GNU_TIME, ["-f", "%M", "-o", out, "true"], { stdio: "ignore" });
        timeChecked = r.status === 0 && /^\d+\s*$/m.test(readFileSync(out, "utf8"));
      } catch {
        timeChecked = false;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  return timeChecked;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Written with the command line, exit status, stdout and stderr. */
  logFile?: string;
  /** Wrap in GNU time for peak RSS (default true when available). */
  measure?: boolean;
}

/** Runs a command to completion; never rejects for a non-zero exit. */
export function run(cmd: Cmd, opts: RunOptions = {}): Promise<RunResult> {
  const measure = (opts.measure ?? true) && haveGnuTime();
  let timeDir: string | null = null;
  let argv = cmd.argv;
  let timeOut = "";
  if (measure) {
    timeDir = mkdtempSync(join(tmpdir(), "gorde-bench-"));
    timeOut = join(timeDir, "time");
    argv = [GNU_TIME, "-f", "%M %U %S", "-o", timeOut, ...cmd.argv];
  }
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("empty command");
  const timeoutMs = opts.timeoutMs ?? 60 * 60 * 1000;

  return new Promise<RunResult>((resolve) => {
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    const t0 = process.hrtime.bigint();
    const child = spawn(file, args, {
      cwd: cmd.cwd,
      env: { ...process.env, ...cmd.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    child.stdout.on("data", (c: Buffer) => (stdout = keepTail(stdout, c)));
    child.stderr.on("data", (c: Buffer) => (stderr = keepHead(stderr, c)));
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    const onSignal = (): void => killGroup(child.pid);
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);

    const finish = (code: number | null, signal: string | null, spawnError?: Error): void => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      process.removeListener("SIGINT", onSignal);
      process.removeListener("SIGTERM", onSignal);
      let maxRssKiB: number | null = null;
      let userS: number | null = null;
      let sysS: number | null = null;
      if (timeDir !== null) {
        try {
          // GNU time may prepend "Command exited with non-zero status N".
          const lines = readFileSync(timeOut, "utf8").trim().split("\n");
          const m = /^(\d+) ([\d.]+) ([\d.]+)$/.exec(lines[lines.length - 1] ?? "");
          if (m) {
            maxRssKiB = Number(m[1]);
            userS = Number(m[2]);
            sysS = Number(m[3]);
          }
        } catch {
          // no measurement
        }
        rmSync(timeDir, { recursive: true, force: true });
      }
      if (spawnError) stderr = `${spawnError.message}\n${stderr}`;
      if (timedOut) stderr = `timed out after ${timeoutMs} ms\n${stderr}`;
      const result: RunResult = { code, signal, stdout, stderr, ms, maxRssKiB, userS, sysS, timedOut };
      if (opts.logFile) {
        writeFileSync(
          opts.logFile,
          `$ ${cmd.argv.join(" ")}\n# cwd ${cmd.cwd}\n# exit ${code ?? signal} in ${ms.toFixed(0)} ms, ` +
            `maxrss ${maxRssKiB ?? "?"} KiB\n--- stdout (tail)\n${stdout}\n--- stderr (head)\n${stderr}\n`,
        );
      }
      resolve(result);
    };
    let done = false;
    child.on("error", (e) => {
      if (!done) {
        done = true;
        finish(null, null, e);
      }
    });
    child.on("close", (code, signal) => {
      if (!done) {
        done = true;
        finish(code, signal);
      }
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** The most telling line of a failed command's stderr (an error line if any, else the first). */
export function errorLine(r: RunResult): string {
  const lines = r.stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^Command exited with non-zero status/.test(l));
  const telling =
    lines.find((l) => /^(\w*Error|error|fatal|Fatal)\b|^\w*Error:/.test(l)) ?? lines[0];
  let line = telling ?? (r.signal ? `killed by ${r.signal}` : `exit status ${r.code}`);
  if (line.length > 160) line = line.slice(0, 157) + "...";
  return line;
}

/** Synchronous helper for short commands whose output we need (versions, etc.). */
export function capture(argv: string[], cwd?: string): { ok: boolean; out: string } {
  const [file, ...args] = argv;
  if (file === undefined) return { ok: false, out: "" };
  const r = spawnSync(file, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (r.error) return { ok: false, out: r.error.message };
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Runs a command synchronously, throwing with its stderr on failure. */
export function must(argv: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): string {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("empty command");
  const r = spawnSync(file, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr.trim()}`);
  return r.stdout;
}

let dropNote: string | null | undefined;

/**
 * Flushes dirty pages and drops the page cache. Returns null on success or a
 * note explaining why it could not be done (reported once in the output).
 */
export function dropCaches(): string | null {
  spawnSync("sync", { stdio: "ignore" });
  if (dropNote !== undefined && dropNote !== null) return dropNote;
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    dropNote = null;
  } catch (e) {
    const why = process.getuid?.() === 0 ? (e as Error).message : "not running as root";
    dropNote = `page cache NOT dropped between steps (${why})`;
  }
  return dropNote;
}

/** Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat; null if unreadable. */
export function machineBusySeconds(): number | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / 100; // USER_HZ
  } catch {
    return null;
  }
}

/** utime + stime (seconds) and VmHWM (KiB) of a process from /proc; null when unreadable. */
export function procUsage(pid: number): { cpuS: number; maxRssKiB: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which is in parentheses and may hold spaces).
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cpuS = (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return { cpuS, maxRssKiB: hwm ? Number(hwm[1]) : 0 };
  } catch {
    return null;
  }
}
