// One function per command: parse, validate, one library call, print.
import type { ParseArgsOptionsConfig } from "node:util";
import { GordeError } from "../errors.ts";
import { backup } from "../client/backup.ts";
import { listArchive, restore } from "../client/restore.ts";
import { Datastore, type SnapshotInfo } from "../datastore/datastore.ts";
import { garbageCollect } from "../datastore/gc.ts";
import { computePrune } from "../datastore/prune.ts";
import { verifyAll, verifySnapshots } from "../datastore/verify.ts";
import {
  formatSnapshot,
  formatTime,
  parseArchiveName,
  parseGroup,
  parseNamespace,
  parseSnapshotRef,
  parseTimeOption,
} from "../format/names.ts";
import type { TreeEntry } from "../format/tree-entry.ts";
import { runDemo } from "./demo.ts";
import { formatBytes, progressBar } from "./progress-bar.ts";

export interface CommandContext {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  signal: AbortSignal;
  out(s: string): void;
  err(s: string): void;
}

interface Command {
  options: ParseArgsOptionsConfig;
  run(ctx: CommandContext): Promise<number | void>;
}

const json = { json: { type: "boolean" } } as const;
const ns = { ns: { type: "string" } } as const;

function args(ctx: CommandContext, min: number, max: number, usage: string): string[] {
  const p = ctx.positionals;
  if (p.length < min || p.length > max) throw new GordeError("usage", `usage: gorde ${usage}`);
  return p;
}

async function openRepo(repo: string): Promise<Datastore> {
  if (/^https?:\/\//.test(repo)) {
    throw new GordeError("unsupported", `${repo} is a remote repository; this build of gorde reaches local datastores only.`);
  }
  return Datastore.open(repo);
}

function str(ctx: CommandContext, name: string): string | undefined {
  const v = ctx.values[name];
  return typeof v === "string" ? v : undefined;
}

function int(ctx: CommandContext, name: string): number | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new GordeError("usage", `--${name} takes a non-negative whole number, not "${v}".`);
  return Number(v);
}

function printJson(ctx: CommandContext, v: unknown): void {
  ctx.out(JSON.stringify(v, null, 2) + "\n");
}

async function withStore<T>(repo: string, fn: (s: Datastore) => Promise<T>): Promise<T> {
  const store = await openRepo(repo);
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}

function snapshotJson(s: SnapshotInfo) {
  return {
    snapshot: formatSnapshot(s),
    time: formatTime(s.time),
    size: s.manifest?.archives.reduce((n, a) => n + a.size, 0) ?? 0,
    protected: s.protected,
    finished: s.finished,
    archives: s.manifest?.archives.map((a) => ({ name: a.name, kind: a.kind, size: a.size })) ?? [],
    notes: s.manifest?.unprotected.notes ?? null,
    verify: s.manifest?.unprotected.verify ?? null,
    error: s.error?.message ?? null,
  };
}

export const COMMANDS: Record<string, Command> = {
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
      const result = await withStore(repo!, (store) =>
        backup(store, {
          ns: parseNamespace(str(ctx, "ns")),
          group,
          sources,
          time: time === undefined ? undefined : parseTimeOption(time),
          chunkSize: int(ctx, "chunk-size"),
          compressionLevel: int(ctx, "compression-level"),
          excludes: (ctx.values.exclude as string[] | undefined) ?? [],
          oneFileSystem: ctx.values["one-file-system"] === true,
          notes: str(ctx, "notes"),
          signal: ctx.signal,
          progress: bar.fn,
        }),
      ).finally(() => bar.end());
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
    options: { ...json, ...ns },
    async run(ctx) {
      const [repo, groupArg] = args(ctx, 1, 2, "snapshots <repo> [<group>]");
      const nsv = parseNamespace(str(ctx, "ns"));
      const list = await withStore(repo!, async (store) => {
        const groups = groupArg ? [parseGroup(groupArg)] : await store.listGroups(nsv);
        const out: SnapshotInfo[] = [];
        for (const g of groups) out.push(...(await store.listSnapshots(nsv, g)));
        return out;
      });
      if (ctx.values.json) return printJson(ctx, list.map(snapshotJson));
      if (list.length === 0) return ctx.out("no snapshots\n");
      for (const s of list) {
        const j = snapshotJson(s);
        const flags = [s.error ? `damaged: ${s.error.message}` : s.finished ? "" : "unfinished", s.protected ? "protected" : "", j.verify ? `verify ${j.verify.state}` : ""]
          .filter(Boolean)
          .join(", ");
        ctx.out(`${j.snapshot}  ${formatBytes(j.size).padStart(10)}  ${j.archives.map((a) => a.name).join(" ")}${flags ? `  (${flags})` : ""}\n`);
      }
    },
  },

  restore: {
    options: { ...json, ...ns, path: { type: "string" } },
    async run(ctx) {
      const [repo, snap, archive, target] = args(ctx, 4, 4, "restore <repo> <snapshot> <archive> <target>");
      parseArchiveName(archive!);
      const bar = ctx.values.json ? { fn: undefined, end() {} } : progressBar(process.stderr, "restore");
      const r = await withStore(repo!, (store) =>
        restore(store, {
          ns: parseNamespace(str(ctx, "ns")),
          snapshot: parseSnapshotRef(snap!),
          archive: archive!,
          target: target!,
          path: str(ctx, "path"),
          signal: ctx.signal,
          progress: bar.fn,
        }),
      ).finally(() => bar.end());
      if (ctx.values.json) return printJson(ctx, r);
      ctx.out(`restored ${r.archive} of ${r.snapshot} to ${target}: ${formatBytes(r.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s\n`);
    },
  },

  ls: {
    options: { ...json, ...ns, recursive: { type: "boolean", short: "r" } },
    async run(ctx) {
      const [repo, snap, archive, p] = args(ctx, 3, 4, "ls <repo> <snapshot> <archive> [<path>]");
      const entries = await withStore(repo!, (store) =>
        listArchive(store, {
          ns: parseNamespace(str(ctx, "ns")),
          snapshot: parseSnapshotRef(snap!),
          archive: archive!,
          path: p,
          recursive: ctx.values.recursive === true,
        }),
      );
      if (ctx.values.json) return printJson(ctx, entries.map(entryJson));
      for (const e of entries) {
        const j = entryJson(e);
        ctx.out(`${modeString(e)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(j.size).padStart(12)} ${j.mtime} ${j.path}${e.kind === "symlink" ? ` -> ${j.link}` : ""}\n`);
      }
    },
  },

  forget: {
    options: { ...ns, ...json },
    async run(ctx) {
      const [repo, snap] = args(ctx, 2, 2, "forget <repo> <snapshot>");
      const ref = parseSnapshotRef(snap!);
      const name = await withStore(repo!, async (store) => {
        const s = await store.findSnapshot(parseNamespace(str(ctx, "ns")), ref);
        await store.forget(s);
        return formatSnapshot(s);
      });
      if (ctx.values.json) printJson(ctx, { removed: name });
      else ctx.out(`removed ${name}\n`);
    },
  },

  protect: {
    options: { ...ns, off: { type: "boolean" } },
    async run(ctx) {
      const [repo, snap] = args(ctx, 2, 2, "protect <repo> <snapshot> [--off]");
      const on = ctx.values.off !== true;
      const name = await withStore(repo!, async (store) => {
        const s = await store.findSnapshot(parseNamespace(str(ctx, "ns")), parseSnapshotRef(snap!));
        await store.setProtected(s, on);
        return formatSnapshot(s);
      });
      ctx.out(`${name} is ${on ? "protected" : "no longer protected"}\n`);
    },
  },

  notes: {
    options: { ...ns },
    async run(ctx) {
      const [repo, snap, text] = args(ctx, 2, 3, "notes <repo> <snapshot> [<text>]");
      await withStore(repo!, async (store) => {
        const s = await store.findSnapshot(parseNamespace(str(ctx, "ns")), parseSnapshotRef(snap!));
        if (!s.finished) throw new GordeError("usage", `snapshot ${formatSnapshot(s)} is unfinished.`);
        if (text === undefined) return ctx.out((s.manifest!.unprotected.notes ?? "") + "\n");
        if (text.length > 64 * 1024) throw new GordeError("usage", "notes are limited to 64 KiB.");
        await store.updateUnprotected(s, (u) => {
          u.notes = text;
        });
      });
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
      const { plan, failed } = await withStore(repo!, async (store) => {
        const all = await store.listSnapshots(nsv, group);
        // A snapshot whose manifest is damaged or from a newer gorde is never pruned
        // (and not counted): it needs an operator's look, not an automatic removal.
        const damaged = all.filter((s) => s.error);
        for (const d of damaged) ctx.err(`gorde prune: keeping ${formatSnapshot(d)}: ${d.error!.message}\n`);
        const plan = [
          ...computePrune(all.filter((s) => !s.error), keep),
          ...damaged.map((snapshot) => ({ snapshot, action: "keep" as const })),
        ].sort((a, b) => b.snapshot.time - a.snapshot.time);
        const failed: string[] = [];
        if (!dry) {
          for (const p of plan) {
            if (p.action !== "remove") continue;
            try {
              await store.forget(p.snapshot);
            } catch (err) {
              failed.push(`${formatSnapshot(p.snapshot)}: ${(err as Error).message}`);
            }
          }
        }
        return { plan, failed };
      });
      if (ctx.values.json) {
        printJson(ctx, plan.map((p) => ({ snapshot: formatSnapshot(p.snapshot), action: p.action })));
      } else {
        for (const p of plan) ctx.out(`${formatSnapshot(p.snapshot)}  ${p.action}${dry && p.action === "remove" ? " (dry run)" : ""}\n`);
      }
      for (const f of failed) ctx.err(`gorde prune: could not remove ${f}\n`);
      return failed.length ? 1 : 0;
    },
  },

  gc: {
    options: { ...json, cutoff: { type: "string" } },
    async run(ctx) {
      const [repo] = args(ctx, 1, 1, "gc <repo> [--cutoff <seconds>]");
      const cutoff = int(ctx, "cutoff");
      const r = await withStore(repo!, (store) =>
        garbageCollect(store, { cutoffMs: cutoff === undefined ? undefined : cutoff * 1000, signal: ctx.signal }),
      );
      if (ctx.values.json) return printJson(ctx, r);
      ctx.out(
        `removed ${r.removedChunks} chunks (${formatBytes(r.removedBytes)}); pending ${r.pendingChunks} chunks (${formatBytes(r.pendingBytes)}) newer than the cutoff\n` +
          `kept ${r.keptChunks} chunks (${formatBytes(r.keptBytes)}) for ${formatBytes(r.logicalBytes)} of data: dedup factor ${r.dedupFactor.toFixed(2)}\n` +
          (r.missingChunks ? `warning: ${r.missingChunks} referenced chunks are missing; run gorde verify\n` : ""),
      );
    },
  },

  verify: {
    options: { ...json, ...ns },
    async run(ctx) {
      const [repo, snap] = args(ctx, 1, 2, "verify <repo> [<snapshot>]");
      const nsv = parseNamespace(str(ctx, "ns"));
      const report = await withStore(repo!, async (store) => {
        if (snap === undefined) return verifyAll(store, { ns: nsv });
        const s = await store.findSnapshot(nsv, parseSnapshotRef(snap));
        return verifySnapshots(store, [s]);
      });
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

  demo: {
    options: { keep: { type: "boolean" } },
    async run(ctx) {
      args(ctx, 0, 0, "demo [--keep]");
      return runDemo({ keep: ctx.values.keep === true, out: ctx.out, signal: ctx.signal });
    },
  },
};

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

