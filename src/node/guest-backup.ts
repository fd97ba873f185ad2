// Backups of a node's guests, in vzdump's modes. A VM in snapshot mode is read from a
// point-in-time view of all its disks (QEMU fleecing) while it runs on, with a dirty bitmap
// per disk since the last good backup to the same datastore so only changed chunks are
// read; suspend pauses it for the read; stop shuts it down and starts it again. A container
// is frozen (or stopped) while its root file system is read. Whatever happens, the guest
// is left as it was found: running, never paused or frozen.
import fsp from "node:fs/promises";
import path from "node:path";
import type { GuestConfig } from "../api/guest-config.ts";
import type { BackupMode } from "../api/node-routes.ts";
import { type BackupResult, type BackupSource, runBackup } from "../client/backup.ts";
import type { ProgressFn } from "../client/progress.ts";
import type { Capture } from "../format/manifest.ts";
import type { RemoteRepository } from "../client/remote.ts";
import { latestUsable } from "../datastore/datastore.ts";
import { GordeError } from "../errors.ts";
import { AnswerCapture } from "./capture.ts";
import type { CtProcess } from "./lxc.ts";
import { GuestAgent } from "./guest-agent.ts";
import { type LiveView, openLiveView } from "./live-view.ts";
import { openNbdSource } from "./nbd-source.ts";
import type { VmProcess } from "./qemu.ts";

/** Which bitmaps of a running QEMU record the changes since which snapshot in which datastore. */
export interface BitmapRecord {
  repo: string;
  snapshot: string;
  /** one bitmap name per disk, in disk order */
  bitmaps: string[];
}

export interface GuestBackupOptions {
  repo: RemoteRepository;
  mode: BackupMode;
  config: GuestConfig;
  runDir: string;
  notes?: string;
  log: string[];
  signal?: AbortSignal;
  /** bytes read of each archive, as the backup goes */
  progress?: ProgressFn;
}

/** The answers of the guest's `expect: snapshot` probes, read around the view; they never fail the backup. */
function answerCapture(opts: GuestBackupOptions): AnswerCapture {
  return new AnswerCapture(opts.config, (t) => line(opts.log, t), opts.signal);
}

function line(log: string[], text: string): void {
  log.push(`${new Date().toISOString()} ${text}`);
}

/** The server's newest usable snapshot of a group (finished, verify not failed), if any. */
async function newestSnapshot(repo: RemoteRepository, type: "vm" | "ct", id: number): Promise<string | undefined> {
  const snaps = await repo.snapshots([], { type, id: String(id) });
  return latestUsable(snaps)?.snapshot;
}

let viewSerial = 0;

/**
 * A running VM's backup. `state.record` holds the bitmaps left by the last good backup; it
 * is replaced after a good backup, kept after a failed one (its bitmaps took the changes
 * back) and dropped when it no longer matches the datastore.
 */
export async function backupRunningVm(vm: VmProcess, opts: GuestBackupOptions & { state: { record?: BitmapRecord } }): Promise<BackupResult> {
  const { config, log, repo, state } = opts;
  if (config.kind !== "vm") throw new GordeError("usage", `guest ${config.id} is not a VM.`);
  const disks = Object.entries(config.disks);
  const qmp = vm.qmp;
  let record = state.record;
  const newest = await newestSnapshot(repo, "vm", config.id);
  const valid = record && record.repo === repo.url && record.snapshot === newest && record.bitmaps.length === disks.length;
  if (!record) line(log, "no dirty bitmap (first backup since QEMU started): every disk is read whole; only new chunks are uploaded");
  else if (!valid) {
    line(log, `the dirty bitmaps record changes since ${record.snapshot} on ${record.repo}, but the newest snapshot there is ${newest ?? "none"}: every disk is read whole`);
    for (const [i, name] of record.bitmaps.entries()) {
      await qmp.execute("block-dirty-bitmap-remove", { node: `disk${i}`, name }).catch(() => undefined);
    }
    record = state.record = undefined;
  }
  const serial = `${process.pid}-${++viewSerial}`;
  const next = disks.map((_, i) => `gorde-${serial}-d${i}`);
  const socket = path.join(opts.runDir, "backup.sock");
  const views: LiveView[] = [];
  const sources: (BackupSource & { close(): Promise<void> })[] = [];
  // One instant for all disks: with more than one, the VM pauses while the views are set up.
  const pauseForInstant = disks.length > 1 || opts.mode === "suspend";
  let paused = false;
  let ok = false;
  const agent = vm.agentSocket ? await GuestAgent.connect(vm.agentSocket) : undefined;
  const answers = answerCapture(opts);
  let captures: Capture[] | undefined;
  let frozen = false;
  const thaw = async (): Promise<void> => {
    if (!frozen) return;
    frozen = false;
    await agent!.execute("guest-fsfreeze-thaw").then(
      () => line(log, "file systems thawed"),
      (e: Error) => line(log, `warning: ${e.message}`),
    );
  };
  try {
    await answers.before();
    if (!vm.agentSocket) line(log, "no guest agent configured: file systems are not frozen (crash-consistent view)");
    else if (!agent) line(log, "the guest agent did not answer: file systems are not frozen (crash-consistent view)");
    else {
      try {
        await agent.execute("guest-fsfreeze-freeze");
        frozen = true;
        line(log, "file systems frozen by the guest agent for the instant");
      } catch (err) {
        line(log, `${(err as Error).message.replace(/\.$/, "")}: the view is crash-consistent`);
      }
    }
    if (pauseForInstant) {
      await qmp.execute("stop");
      paused = true;
      line(log, opts.mode === "suspend" ? "VM paused for the backup (suspend mode)" : "VM paused while the views of its disks are taken");
    }
    for (const [i, [name, file]] of disks.entries()) {
      const size = (await fsp.stat(file)).size;
      views.push(
        await openLiveView(qmp, {
          node: `disk${i}`,
          device: `vblk${i}`,
          size,
          fleeceFile: path.join(opts.runDir, `fleece-${i}.qcow2`),
          socket,
          bitmaps: { base: record?.bitmaps[i], next: next[i]! },
          serverRunning: i > 0,
        }),
      );
      const view = views[i]!;
      const src = await openNbdSource({ socket, exportName: view.exportName, dirtyBitmap: view.exportedBitmap, changedSince: record?.snapshot });
      sources.push({ archive: `${name}.img`, source: src, close: () => src.close() });
    }
    if (paused && opts.mode !== "suspend") {
      await qmp.execute("cont");
      paused = false;
      line(log, "VM running again; the views hold the instant");
    }
    await thaw();
    // Snapshot mode: the guest runs again and the views hold the instant. Suspend mode: it
    // stays paused for the read, so its second answer is read after it.
    if (!paused) captures = await answers.after();
    line(log, `reading ${disks.length} disk${disks.length > 1 ? "s" : ""} from the live view${record ? ` (dirty bitmaps since ${record.snapshot})` : ""}`);
    const result = await runBackup(
      {
        group: { type: "vm", id: String(config.id) },
        sources,
        config: { ...config },
        notes: opts.notes,
        log,
        signal: opts.signal,
        progress: opts.progress,
        captures: async () => {
          if (!paused) return captures;
          try {
            await qmp.execute("cont");
          } catch (err) {
            line(log, `warning: the VM could not be resumed for the second reads of its answers: ${(err as Error).message}`);
            return undefined;
          }
          paused = false;
          line(log, "VM running again after the read (suspend mode)");
          return answers.after();
        },
      },
      (req) => repo.openBackup(req),
    );
    ok = true;
    state.record = { repo: repo.url, snapshot: result.snapshot, bitmaps: next };
    return result;
  } finally {
    for (const s of sources) await s.close().catch(() => undefined);
    // The views of later disks export on the first one's server: closed first.
    for (const v of views.reverse()) await v.close(ok).catch((e: Error) => line(log, `warning: ${e.message}`));
    await thaw();
    agent?.close();
    if (paused) await qmp.execute("cont").catch(() => undefined);
  }
}

/**
 * A stopped VM's or container's backup, read from its files. A guest that was stopped
 * already answers nothing, so nothing is captured; in stop mode the node read the answers
 * before stopping it (`answers`), and `restart` starts it again once its files are read,
 * for the second reads.
 */
export async function backupStoppedGuest(opts: GuestBackupOptions & { answers?: AnswerCapture; restart?: () => Promise<void> }): Promise<BackupResult> {
  const { config, answers, restart } = opts;
  const names = answerCapture(opts).probes.map((p) => p.name);
  if (!answers && names.length > 0) line(opts.log, `the guest is stopped, its service does not answer: nothing captured for probe${names.length > 1 ? "s" : ""} ${names.join(", ")}`);
  const captures =
    answers && restart
      ? async (): Promise<Capture[] | undefined> => {
          try {
            await restart();
          } catch (err) {
            line(opts.log, `could not start the guest again: ${(err as Error).message}`);
          }
          return answers.after({ waitForService: true });
        }
      : undefined;
  const sources: BackupSource[] =
    config.kind === "vm" ? Object.entries(config.disks).map(([name, file]) => ({ archive: `${name}.img`, source: file })) : [{ archive: "root.tree", source: config.rootfs }];
  line(opts.log, `reading the ${config.kind === "vm" ? "disk files" : "root file system"} of the stopped guest`);
  return runBackup(
    { group: { type: config.kind, id: String(config.id) }, sources, config: { ...config }, notes: opts.notes, log: opts.log, signal: opts.signal, progress: opts.progress, captures },
    (req) => opts.repo.openBackup(req),
  );
}

/** A running container's backup: frozen while its root file system is read, thawed whatever happens. */
export async function backupRunningCt(ct: CtProcess, opts: GuestBackupOptions): Promise<BackupResult> {
  const { config, log } = opts;
  if (config.kind !== "ct") throw new GordeError("usage", `guest ${config.id} is not a container.`);
  const answers = answerCapture(opts);
  await answers.before();
  await ct.freeze();
  let frozen = true;
  line(log, "container frozen (a directory root file system has no storage snapshots: frozen for the whole read)");
  const thaw = async (): Promise<void> => {
    if (!frozen) return;
    frozen = false;
    await ct.thaw().catch(() => undefined);
    line(log, "container thawed");
  };
  try {
    return await runBackup(
      {
        group: { type: "ct", id: String(config.id) },
        sources: [{ archive: "root.tree", source: config.rootfs }],
        config: { ...config },
        notes: opts.notes,
        log,
        signal: opts.signal,
        progress: opts.progress,
        // The view is the frozen container: it runs again once its files are read.
        captures: async () => {
          await thaw();
          return answers.after();
        },
      },
      (req) => opts.repo.openBackup(req),
    );
  } finally {
    await thaw();
  }
}

/** One line of a backup's summary for its log. */
export function summary(r: BackupResult): string[] {
  const out = r.archives.map((a) => {
    const dirty = a.dirtyChunks === undefined || a.dirtyChunks === null ? "" : `, ${a.dirtyChunks} chunks dirty since ${r.base}`;
    const read = a.readChunks === undefined ? "" : `, ${a.readChunks} chunks read${dirty}`;
    return `${a.name}: ${a.size} bytes${read}`;
  });
  out.push(`snapshot ${r.snapshot}: ${r.stats.newBytes} new bytes in ${r.stats.newChunks} chunks, ${r.stats.reusedBytes} reused, ${(r.durationMs / 1000).toFixed(2)} s`);
  return out;
}
