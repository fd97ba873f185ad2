// One function per command: parse, validate, one library call, print.
import { GordeError } from "../errors.ts";
import { type BackupOptions, runBackup } from "../client/backup.ts";
import { loadMasterKey } from "../client/key-file.ts";
import type { Repository, TaskOptions } from "../client/repository.ts";
import { type ListOptions, type RestoreOptions, type SnapshotReader, listEntries, restoreArchive } from "../client/restore.ts";
import { Datastore } from "../datastore/datastore.ts";
import { parseArchiveName, parseGroup, parseNamespace, parseSnapshotRef, parseTimeOption } from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { keyCommand } from "./key-command.ts";
import { nextElapse, parseCalendarEvent } from "../schedule/calendar-event.ts";
import { ACCESS_COMMANDS } from "./access-commands.ts";
import { formatBytes, progressBar, taskProgress } from "./progress-bar.ts";
import { type CommandContext, type CommandEntry, int, str, withRepo } from "./command.ts";

const json = { json: { type: "boolean" } } as const;
const ns = { ns: { type: "string" } } as const;

function args(ctx: CommandContext, min: number, max: number, usage: string): string[] {
  const p = ctx.positionals;
  if (p.length < min || p.length > max) throw new GordeError("usage", `usage: gorde ${usage}`);
  return p;
}

function printJson(ctx: CommandContext, v: unknown): void {
  ctx.out(JSON.stringify(v, null, 2) + "\n");
}

/** Options of every command that may reach a server. */
export const remoteOptions = {
  fingerprint: { type: "string" },
  rate: { type: "string" },
} as const;

/** The key of `--keyfile`, opened with GORDE_KEY_PASSPHRASE. */
async function keyOption(ctx: CommandContext): Promise<BackupOptions["key"]> {
  const file = str(ctx, "keyfile");
  if (file === undefined) return undefined;
  const pass = process.env.GORDE_KEY_PASSPHRASE;
  if (!pass) throw new GordeError("usage", "set GORDE_KEY_PASSPHRASE to the passphrase of the key file.");
  return loadMasterKey(file, pass);
}

async function withReader<T>(ctx: CommandContext, repo: Repository, snap: string, fn: (reader: SnapshotReader) => Promise<T>): Promise<T> {
  const reader = await repo.openReader(parseNamespace(str(ctx, "ns")), snap);
  try {
    return await fn(reader);
  } finally {
    await reader.close();
  }
}

export const COMMANDS: Record<string, CommandEntry> = {
  init: {
    options: { ...json },
    async run(ctx) {
      const [dir] = args(ctx, 1, 1, "init <dir>");
      const store = await Datastore.init(dir!);
      store.close();
      if (ctx.values.json) printJson(ctx, { datastore: store.dir });
      else ctx.out(`created datastore ${store.dir}\n`);
    },
  },

  backup: {
    options: {
      ...json,
      ...ns,
      time: { type: "string" },
      exclude: { type: "string", multiple: true },
      "one-file-system": { type: "boolean", short: "x" },
      "chunk-size": { type: "string" },
      "compression-level": { type: "string" },
      notes: { type: "string" },
      keyfile: { type: "string" },
      concurrency: { type: "string" },
      ...remoteOptions,
    },
    async run(ctx) {
      const [repo, groupArg, ...specs] = args(ctx, 3, 64, "backup <repo> <group> <archive>=<source>...");
      const group = parseGroup(groupArg!);
      const sources = specs.map((s) => {
        const i = s.indexOf("=");
        if (i <= 0 || i === s.length - 1) throw new GordeError("usage", `"${s}" is not <archive>=<source>.`);
        parseArchiveName(s.slice(0, i));
        return { archive: s.slice(0, i), source: s.slice(i + 1) };
      });
      const time = str(ctx, "time");
      const bar = ctx.values.json ? { fn: undefined, end() {} } : progressBar(process.stderr, "backup");
      const key = await keyOption(ctx);
      const result = await withRepo(ctx, repo!, (r) => {
        const opts: BackupOptions = {
          ns: parseNamespace(str(ctx, "ns")),
          group,
          sources,
          time: time === undefined ? undefined : parseTimeOption(time),
          chunkSize: int(ctx, "chunk-size"),
          compressionLevel: int(ctx, "compression-level"),
          excludes: (ctx.values.exclude as string[] | undefined) ?? [],
          oneFileSystem: ctx.values["one-file-system"] === true,
          notes: str(ctx, "notes"),
          key,
          concurrency: int(ctx, "concurrency"),
          signal: ctx.signal,
          progress: bar.fn,
        };
        return runBackup(opts, (req) => r.openBackup(req));
      }).finally(() => bar.end());
      if (ctx.values.json) return printJson(ctx, result);
      const s = result.stats;
      const mbs = result.durationMs > 0 ? (s.bytes / 1e6 / (result.durationMs / 1000)).toFixed(0) : "-";
      ctx.out(
        `snapshot ${result.snapshot} saved${result.base ? ` (incremental from ${result.base})` : " (full)"}\n` +
          `  ${formatBytes(s.bytes)} processed in ${(result.durationMs / 1000).toFixed(2)} s (${mbs} MB/s)\n` +
          `  new: ${s.newChunks} chunks, ${formatBytes(s.newBytes)} (${formatBytes(s.storedBytes)} stored)` +
          `; reused: ${s.reusedChunks} chunks, ${formatBytes(s.reusedBytes)}; zero chunks: ${s.zeroChunks}\n`,
      );
    },
  },

  snapshots: {
    options: { ...json, ...ns, ...remoteOptions },
    async run(ctx) {
      const [repo, groupArg] = args(ctx, 1, 2, "snapshots <repo> [<group>]");
      const nsv = parseNamespace(str(ctx, "ns"));
      const group = groupArg ? parseGroup(groupArg) : undefined;
      const list = await withRepo(ctx, repo!, (r) => r.snapshots(nsv, group));
      if (ctx.values.json) return printJson(ctx, list);
      if (list.length === 0) return ctx.out("no snapshots\n");
      for (const j of list) {
        const flags = [j.error ? `damaged: ${j.error}` : j.finished ? "" : "unfinished", j.protected ? "protected" : "", j.encrypted ? "encrypted" : "", j.verify ? `verify ${j.verify.state}` : "", j.captures?.length ? `answers: ${j.captures.map((c) => `${c.probe} ${c.state}`).join(", ")}` : ""]
          .filter(Boolean)
          .join(", ");
        ctx.out(`${j.snapshot}  ${formatBytes(j.size).padStart(10)}  ${j.archives.map((a) => a.name).join(" ")}${flags ? `  (${flags})` : ""}\n`);
      }
    },
  },

  restore: {
    options: { ...json, ...ns, path: { type: "string" }, keyfile: { type: "string" }, concurrency: { type: "string" }, ...remoteOptions },
    async run(ctx) {
      const [repo, snap, archive, target] = args(ctx, 4, 4, "restore <repo> <snapshot> <archive> <target>");
      parseArchiveName(archive!);
      const key = await keyOption(ctx);
      const bar = ctx.values.json ? { fn: undefined, end() {} } : progressBar(process.stderr, "restore");
      const opts: RestoreOptions = {
        ns: parseNamespace(str(ctx, "ns")),
        snapshot: parseSnapshotRef(snap!),
        archive: archive!,
        target: target!,
        path: str(ctx, "path"),
        key,
        warn: (m) => ctx.err(`gorde restore: ${m}\n`),
        concurrency: int(ctx, "concurrency"),
        signal: ctx.signal,
        progress: bar.fn,
      };
      const r = await withRepo(ctx, repo!, (rp) => withReader(ctx, rp, snap!, (reader) => restoreArchive(reader, opts))).finally(() => bar.end());
      const skipped = r.skipped ?? [];
      if (ctx.values.json) printJson(ctx, r);
      else {
        for (const x of skipped) ctx.err(`gorde restore: ${x.reason}\n`);
        const resumed = r.resumedBytes ? ` (${formatBytes(r.resumedBytes)} of it were in place from the restore cut off before)` : "";
        ctx.out(`restored ${r.archive} of ${r.snapshot} to ${target}: ${formatBytes(r.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s${resumed}\n`);
      }
      // restic's choice: the rest is restored, what was not is listed, and the exit says so.
      if (skipped.length > 0) throw new GordeError("io", skipped.length === 1 ? `1 entry of ${r.archive} could not be restored as it was (named above); the rest is in ${target}.` : `${skipped.length} entries of ${r.archive} could not be restored as they were (listed above); the rest is in ${target}.`);
    },
  },

  ls: {
    options: { ...json, ...ns, recursive: { type: "boolean", short: "r" }, keyfile: { type: "string" }, ...remoteOptions },
    async run(ctx) {
      const [repo, snap, archive, p] = args(ctx, 3, 4, "ls <repo> <snapshot> <archive> [<path>]");
      const opts: ListOptions = {
        ns: parseNamespace(str(ctx, "ns")),
        snapshot: parseSnapshotRef(snap!),
        archive: archive!,
        path: p,
        recursive: ctx.values.recursive === true,
        key: await keyOption(ctx),
        warn: (m) => ctx.err(`gorde ls: ${m}\n`),
      };
      const entries = await withRepo(ctx, repo!, (r) => withReader(ctx, r, snap!, (reader) => listEntries(reader, opts)));
      if (ctx.values.json) return printJson(ctx, entries.map(entryJson));
      for (const e of entries) {
        const j = entryJson(e);
        ctx.out(`${modeString(e)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(j.size).padStart(12)} ${j.mtime} ${j.path}${e.kind === "symlink" ? ` -> ${j.link}` : ""}\n`);
      }
    },
  },

  forget: {
    options: { ...ns, ...json, ...remoteOptions },
    async run(ctx) {
      const [repo, snap] = args(ctx, 2, 2, "forget <repo> <snapshot>");
      parseSnapshotRef(snap!);
      const nsv = parseNamespace(str(ctx, "ns"));
      const name = await withRepo(ctx, repo!, (r) => r.forget(nsv, snap!));
      if (ctx.values.json) printJson(ctx, { removed: name });
      else ctx.out(`removed ${name}\n`);
    },
  },

  protect: {
    options: { ...ns, off: { type: "boolean" }, ...remoteOptions },
    async run(ctx) {
      const [repo, snap] = args(ctx, 2, 2, "protect <repo> <snapshot> [--off]");
      const on = ctx.values.off !== true;
      const nsv = parseNamespace(str(ctx, "ns"));
      parseSnapshotRef(snap!);
      const name = await withRepo(ctx, repo!, (r) => r.setProtected(nsv, snap!, on));
      ctx.out(`${name} is ${on ? "protected" : "no longer protected"}\n`);
    },
  },

  notes: {
    options: { ...ns, ...remoteOptions },
    async run(ctx) {
      const [repo, snap, text] = args(ctx, 2, 3, "notes <repo> <snapshot> [<text>]");
      const nsv = parseNamespace(str(ctx, "ns"));
      const notes = await withRepo(ctx, repo!, async (r) => (text === undefined ? r.notes(nsv, snap!) : void (await r.setNotes(nsv, snap!, text))));
      if (notes !== undefined) ctx.out(notes + "\n");
    },
  },

  prune: {
    options: {
      ...json,
      ...ns,
      "keep-last": { type: "string" },
      "keep-hourly": { type: "string" },
      "keep-daily": { type: "string" },
      "keep-weekly": { type: "string" },
      "keep-monthly": { type: "string" },
      "keep-yearly": { type: "string" },
      "dry-run": { type: "boolean", short: "n" },
      ...remoteOptions,
    },
    async run(ctx) {
      const [repo, groupArg] = args(ctx, 2, 2, "prune <repo> <group> [--keep-… N] [--dry-run]");
      const group = parseGroup(groupArg!);
      const nsv = parseNamespace(str(ctx, "ns"));
      const keep = {
        keepLast: int(ctx, "keep-last"),
        keepHourly: int(ctx, "keep-hourly"),
        keepDaily: int(ctx, "keep-daily"),
        keepWeekly: int(ctx, "keep-weekly"),
        keepMonthly: int(ctx, "keep-monthly"),
        keepYearly: int(ctx, "keep-yearly"),
      };
      const dry = ctx.values["dry-run"] === true;
      const { plan, damaged, failed } = await withRepo(ctx, repo!, (r) => r.prune(nsv, group, keep, dry));
      for (const d of damaged) ctx.err(`gorde prune: keeping ${d}\n`);
      if (ctx.values.json) {
        printJson(ctx, plan.map((p) => ({ snapshot: p.snapshot, action: p.action })));
      } else {
        for (const p of plan) ctx.out(`${p.snapshot}  ${p.action}${dry && p.action === "remove" ? " (dry run)" : ""}\n`);
      }
      for (const p of plan) if (p.action === "in-use") ctx.err(`gorde prune: left ${p.snapshot} for the next prune: another operation (a verify, a sync, a restore) was reading it.\n`);
      for (const f of failed) ctx.err(`gorde prune: could not remove ${f}\n`);
      return failed.length ? 1 : 0;
    },
  },

  gc: {
    options: { ...json, cutoff: { type: "string" }, ...remoteOptions },
    async run(ctx) {
      const [repo] = args(ctx, 1, 1, "gc <repo> [--cutoff <seconds>]");
      const cutoff = int(ctx, "cutoff");
      const r = await withRepo(ctx, repo!, (rp) => withTask(ctx, "gc", (task) => rp.gc({ ...task, cutoffSeconds: cutoff })));
      if (ctx.values.json) return printJson(ctx, r);
      ctx.out(
        `removed ${r.removedChunks} chunks (${formatBytes(r.removedBytes)}); pending ${r.pendingChunks} chunks (${formatBytes(r.pendingBytes)}) newer than the cutoff\n` +
          `kept ${r.keptChunks} chunks (${formatBytes(r.keptBytes)}) for ${formatBytes(r.logicalBytes)} of data: dedup factor ${r.dedupFactor.toFixed(2)}\n` +
          (r.missingChunks ? `warning: ${r.missingChunks} referenced chunks are missing; run gorde verify\n` : ""),
      );
    },
  },

  verify: {
    options: { ...json, ...ns, ...remoteOptions },
    async run(ctx) {
      const [repo, snap] = args(ctx, 1, 2, "verify <repo> [<snapshot>]");
      const nsv = parseNamespace(str(ctx, "ns"));
      const report = await withRepo(ctx, repo!, (r) => withTask(ctx, "verify", (task) => r.verify(nsv, snap, task)));
      if (ctx.values.json) printJson(ctx, report);
      else {
        for (const s of report.snapshots) ctx.out(`${s.snapshot}  ${s.state}${s.errors.length ? `: ${s.errors.join("; ")}` : ""}\n`);
        for (const b of report.badChunks) ctx.out(`bad chunk ${b.digest}: ${b.reason}${b.renamedTo ? ` (moved to ${b.renamedTo})` : ""}\n`);
        for (const m of report.missingChunks) ctx.out(`missing chunk ${m}\n`);
        ctx.out(`${report.chunksChecked} chunks checked: ${report.ok ? "all good" : "DAMAGE FOUND"}\n`);
      }
      // Damage first; then snapshots only a newer gorde can read (exit codes in --help).
      return !report.ok ? 5 : report.snapshots.some((s) => s.newer) ? 6 : 0;
    },
  },

  key: keyCommand,
  calendar: {
    options: { from: { type: "string" }, iterations: { type: "string" } },
    run(ctx) {
      const [text] = args(ctx, 1, 1, "calendar <event> [--from <iso>] [--iterations N]");
      const event = parseCalendarEvent(text!);
      const fromText = str(ctx, "from");
      let t = fromText === undefined ? new Date() : new Date(fromText);
      if (Number.isNaN(t.getTime()) || (fromText !== undefined && !/^\d{4}-\d{2}-\d{2}T/.test(fromText))) throw new GordeError("usage", `--from takes an ISO time like 2026-11-25T02:30:00Z, not "${fromText}".`);
      const n = int(ctx, "iterations") ?? 5;
      if (n < 1 || n > 10_000) throw new GordeError("usage", "--iterations takes a number from 1 to 10000.");
      // The event is read in the local time zone (TZ), as systemd and PVE read it.
      for (let i = 0; i < n; i++) {
        const next = nextElapse(event, t, "local");
        if (!next) break;
        ctx.out(next.toISOString().replace(/\.\d{3}Z$/, "Z") + "\n");
        t = next;
      }
      return Promise.resolve();
    },
  },
  server: async () => (await import("./server-command.ts")).serverCommand,
  node: async () => (await import("./node-command.ts")).nodeCommand,
  plan: async () => (await import("./plan-command.ts")).planCommand,
  guest: async () => (await import("./node-command.ts")).guestCommand,
  ...ACCESS_COMMANDS,
  drill: async () => (await import("./drill-command.ts")).drillCommand,
  cluster: async () => (await import("./cluster-command.ts")).clusterCommand,
  ha: async () => (await import("./ha-command.ts")).haCommand,

  demo: {
    options: { keep: { type: "boolean" }, json: { type: "boolean" } },
    async run(ctx) {
      args(ctx, 0, 0, "demo [--keep] [--json]");
      // --json: the story goes to stderr, stdout gets only the document.
      const json = ctx.values.json === true;
      const { runDemo } = await import("./demo.ts");
      return runDemo({
        keep: ctx.values.keep === true,
        out: json ? ctx.err : ctx.out,
        report: json ? (r) => ctx.out(JSON.stringify(r, null, 2) + "\n") : undefined,
        signal: ctx.signal,
      });
    },
  },
};

/** Runs a long operation, followed on stderr when it reports (its log lines; progress on a terminal). */
async function withTask<T>(ctx: CommandContext, label: string, fn: (task: TaskOptions) => Promise<T>): Promise<T> {
  const t = taskEcho(ctx, label);
  try {
    return await fn({ signal: ctx.signal, onEvent: t.event });
  } finally {
    t.end();
  }
}

/** Follows a server task on stderr: its log lines, and a progress line on a terminal. */
function taskEcho(ctx: CommandContext, label: string): { event: ((e: { type: string; line?: string }) => void) | undefined; end(): void } {
  if (ctx.values.json) return { event: undefined, end() {} };
  const p = taskProgress(process.stderr, label);
  return { event: (e) => p.event(e), end: () => p.end() };
}

function entryJson(e: TreeEntry) {
  return {
    path: e.path.toString("utf8"),
    kind: e.kind,
    mode: (e.mode & 0o7777).toString(8).padStart(4, "0"),
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    mtime: new Date(Number(e.mtimeNs / 1_000_000n)).toISOString(),
    link: e.link.length ? e.link.toString("utf8") : undefined,
  };
}

function modeString(e: TreeEntry): string {
  const t = { dir: "d", file: "-", symlink: "l", hardlink: "h", chardev: "c", blockdev: "b", fifo: "p", socket: "s" }[e.kind];
  const rwx = "rwxrwxrwx";
  let s = t;
  for (let i = 0; i < 9; i++) s += e.mode & (1 << (8 - i)) ? rwx[i] : "-";
  return s;
}

