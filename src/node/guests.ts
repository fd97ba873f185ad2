// A node's guests: their configurations (one JSON file each, as PVE's /etc/pve/qemu-server),
// their disks or root file systems, the QEMU and LXC processes that run them, and their
// backups to and restores from the backup server. One operation at a time per guest.
import { execFile } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { type GuestConfig, DEMO_CT_HEALTH_CHECKS, DEMO_VM_HEALTH_CHECKS, parseGuestConfig } from "../api/guest-config.ts";
import type { BackupMode, CreateGuest, GuestBackupResult, GuestStatus, RestoreGuest } from "../api/node-routes.ts";
import { restoreArchive } from "../client/restore.ts";
import type { RemoteRepository } from "../client/remote.ts";
import type { ProgressFn } from "../client/progress.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { recordOf, startedAtMs as recordStartedAtMs } from "../sys/processes.ts";
import { GordeError } from "../errors.ts";
import { parseSnapshotRef } from "../format/names.ts";
import { AnswerCapture } from "./capture.ts";
import { type BitmapRecord, backupRunningCt, backupRunningVm, backupStoppedGuest, summary } from "./guest-backup.ts";
import { type GuestKit, buildCtRootfs, buildVmDisk, ensureGuestKit } from "./guest-kit.ts";
import { type CtProcess, adoptCt, startCt } from "./lxc.ts";
import { type VmProcess, adoptVm, portFree, startVm } from "./qemu.ts";

const execFileP = promisify(execFile);

/** The bitmaps of a running VM's last good backup, kept beside it so a restarted node goes on from them. */
async function saveBitmapRecord(runDir: string, record: BitmapRecord | undefined): Promise<void> {
  const file = path.join(runDir, "bitmaps.json");
  if (record) await writeFileAtomic(file, JSON.stringify(record) + "\n", { mode: 0o600 });
  else await fsp.rm(file, { force: true });
}

/** The record a node process that is gone left for an adopted VM, if its QEMU has every bitmap it names. */
async function loadBitmapRecord(runDir: string, vm: VmProcess, disks: number): Promise<BitmapRecord | undefined> {
  let record: BitmapRecord;
  try {
    record = JSON.parse(await fsp.readFile(path.join(runDir, "bitmaps.json"), "utf8")) as BitmapRecord;
  } catch {
    return undefined;
  }
  if (typeof record.repo !== "string" || typeof record.snapshot !== "string" || !Array.isArray(record.bitmaps) || record.bitmaps.length !== disks) return undefined;
  const nodes = await vm.qmp.execute<{ "node-name": string; "dirty-bitmaps"?: { name: string }[] }[]>("query-named-block-nodes", { flat: true }).catch(() => []);
  const has = (i: number, name: unknown): boolean => nodes.some((n) => n["node-name"] === `disk${i}` && (n["dirty-bitmaps"] ?? []).some((b) => b.name === name));
  return record.bitmaps.every((name, i) => has(i, name)) ? record : undefined;
}

/** When (ms since the epoch) process `pid` started; now if it is gone. */
function startedAtMs(pid: number): number {
  const rec = recordOf(pid);
  return rec ? recordStartedAtMs(rec) : Date.now();
}

type Runtime = { kind: "vm"; vm: VmProcess; startedAt: number; bitmaps: { record?: BitmapRecord } } | { kind: "ct"; ct: CtProcess; startedAt: number };

interface LastBackup {
  snapshot: string;
  time: number;
  ok: boolean;
  error?: string;
  /** the last backup that worked: this one, or the one before a failure */
  goodTime?: number;
}

export interface GuestManagerOptions {
  dataDir: string;
  nodeName: string;
  /** a connection to the backup server, opened per operation (`rate`: bytes per second) */
  repository: (rate?: number, store?: string) => Promise<RemoteRepository>;
  log: (line: string) => void;
  /**
   * On a cluster, a guest id is the cluster's: placed on this node before the guest is made
   * here (refused when another node has it), given up when it is removed.
   */
  placement?: {
    claim(config: Pick<GuestConfig, "id" | "kind" | "name">): Promise<void>;
    release(id: number): Promise<void>;
    /** throws unless guest `id` may start here (an HA guest: only on its node, under a fresh lease) */
    mayStart(id: number): Promise<void>;
  };
}

export class GuestManager {
  private readonly configs = new Map<number, GuestConfig>();
  private readonly running = new Map<number, Runtime>();
  private readonly busy = new Map<number, string>();
  private readonly last = new Map<number, LastBackup>();
  /** guests whose configuration could not be read at start: id → why */
  private readonly damaged = new Map<number, string>();
  private closing = false;
  /** drill sandboxes: the node's own, never placed in the cluster */
  private readonly sandboxes = new Set<number>();
  private kit: Promise<GuestKit> | undefined;
  private readonly opts: GuestManagerOptions;

  private constructor(opts: GuestManagerOptions) {
    this.opts = opts;
  }

  static async open(opts: GuestManagerOptions): Promise<GuestManager> {
    const m = new GuestManager(opts);
    for (const d of ["guests", "images", "rootfs", "run"]) await fsp.mkdir(path.join(opts.dataDir, d), { recursive: true, mode: 0o700 });
    // A restore or replacement the node died in is finished or undone before any guest is read.
    await m.recoverReplacements();
    for (const f of await fsp.readdir(m.dir("images"))) {
      if (f.startsWith(".restore-")) await fsp.rm(m.dir("images", f), { recursive: true, force: true });
    }
    for (const f of await fsp.readdir(m.dir("guests"))) {
      const id = /^(\d+)\.json$/.exec(f)?.[1];
      if (id) {
        const file = path.join(m.dir("guests"), f);
        try {
          m.configs.set(Number(id), parseGuestConfig(JSON.parse(await fsp.readFile(file, "utf8")), `guest configuration ${file}`));
        } catch (err) {
          // One damaged configuration does not keep the node and its other guests down; its id stays taken.
          const why = err instanceof SyntaxError ? "it is not JSON" : (err as Error).message.replace(/\.$/, "");
          m.damaged.set(Number(id), why);
          opts.log(`guest ${id} is left out: its configuration ${file} is damaged (${why}); restore it from a backup with --force, or repair the file`);
        }
      }
      const lb = /^(\d+)\.last-backup$/.exec(f)?.[1];
      if (lb) {
        try {
          m.last.set(Number(lb), JSON.parse(await fsp.readFile(path.join(m.dir("guests"), f), "utf8")) as LastBackup);
        } catch {
          // what the last backup was is shown, not needed: a damaged record is forgotten
          await fsp.rm(path.join(m.dir("guests"), f), { force: true });
        }
      }
    }
    await m.adoptRunning();
    return m;
  }

  /** Where a replacement keeps the replaced guest's data, and the record of the replacement. */
  private replacedDir(id: number): string {
    return this.dir("images", `.replaced-${id}`);
  }

  private replacingFile(id: number): string {
    return this.dir("guests", `${id}.replacing`);
  }

  /**
   * What a guest's data occupies under the node's own directories: a VM's images/<id>, a
   * container's rootfs/<id> (a configuration may name disks elsewhere: those are not the node's).
   */
  private ownPlaces(id: number): { name: string; place: string }[] {
    return [
      { name: "images", place: this.dir("images", String(id)) },
      { name: "rootfs", place: this.dir("rootfs", String(id)) },
    ];
  }

  /**
   * Puts a restored guest in place of an existing one, so that a node killed at any point
   * leaves one of the two whole: the replacement is recorded, the old data moved aside in
   * renames, the new moved in, the configuration saved; then the old data goes.
   */
  private async replaceGuest(config: GuestConfig, moveIn: () => Promise<void>): Promise<void> {
    const id = config.id;
    const aside = this.replacedDir(id);
    await fsp.rm(aside, { recursive: true, force: true });
    await writeFileAtomic(this.replacingFile(id), Buffer.from(JSON.stringify(config) + "\n"), { mode: 0o600 });
    await fsp.mkdir(aside, { recursive: true });
    for (const { name, place } of this.ownPlaces(id)) {
      if (fs.existsSync(place)) await fsp.rename(place, path.join(aside, name));
    }
    await moveIn();
    await this.saveConfig(config);
    await fsp.rm(this.replacingFile(id), { force: true });
    await fsp.rm(aside, { recursive: true, force: true });
  }

  /** A replacement the node died in: finished when the new data is in place, else undone. */
  private async recoverReplacements(): Promise<void> {
    for (const f of await fsp.readdir(this.dir("guests"))) {
      const id = Number(/^(\d+)\.replacing$/.exec(f)?.[1] ?? NaN);
      if (!Number.isInteger(id)) continue;
      const aside = this.replacedDir(id);
      const moved = fs.existsSync(aside) ? await fsp.readdir(aside) : [];
      const places = this.ownPlaces(id);
      let config: GuestConfig | undefined;
      try {
        config = parseGuestConfig(JSON.parse(await fsp.readFile(this.dir("guests", f), "utf8")), `replacement record of guest ${id}`);
      } catch {
        config = undefined;
      }
      // The new data's place was emptied by the move aside: something there now is the new guest.
      const newPlace = config && (config.kind === "vm" ? this.dir("images", String(id)) : config.rootfs);
      if (config && newPlace && moved.length > 0 && fs.existsSync(newPlace)) {
        await this.saveConfig(config);
        this.configs.delete(id);
        this.opts.log(`guest ${id}: finished its replacement by a restore the node stopped in`);
      } else {
        for (const name of moved) {
          const p = places.find((x) => x.name === name);
          if (p) {
            await fsp.rm(p.place, { recursive: true, force: true });
            await fsp.rename(path.join(aside, name), p.place);
          }
        }
        if (moved.length) this.opts.log(`guest ${id}: undid its replacement by a restore the node stopped in; the guest is as it was`);
      }
      await fsp.rm(this.dir("guests", f), { force: true });
      await fsp.rm(aside, { recursive: true, force: true });
    }
  }

  private dir(...parts: string[]): string {
    return path.join(this.opts.dataDir, ...parts);
  }

  private guestKit(): Promise<GuestKit> {
    this.kit ??= ensureGuestKit();
    return this.kit;
  }

  ids(): number[] {
    return [...this.configs.keys()].sort((a, b) => a - b);
  }

  config(id: number): GuestConfig {
    const c = this.configs.get(id);
    if (!c) throw new GordeError("not-found", `no guest ${id} on node ${this.opts.nodeName}.`);
    return c;
  }

  async status(id: number): Promise<GuestStatus> {
    const c = this.config(id);
    const rt = this.running.get(id);
    let state: GuestStatus["state"] = "stopped";
    let pid: number | undefined;
    let accel: string | undefined;
    if (rt?.kind === "vm") {
      pid = rt.vm.pid;
      accel = rt.vm.accelWhy;
      const s = await rt.vm.qmp.execute<{ status: string }>("query-status").catch(() => ({ status: "running" }));
      state = s.status === "paused" ? "paused" : "running";
    } else if (rt?.kind === "ct") {
      pid = rt.ct.pid;
      state = (await rt.ct.state()) === "FROZEN" ? "frozen" : "running";
    }
    return {
      id,
      kind: c.kind,
      name: c.name,
      state,
      httpPort: c.httpPort,
      ...(pid !== undefined ? { pid } : {}),
      ...(rt ? { uptimeSeconds: Math.round((Date.now() - rt.startedAt) / 1000) } : {}),
      ...(accel ? { accel } : {}),
      ...(this.last.has(id) ? { lastBackup: this.last.get(id)! } : {}),
    };
  }

  /** Runs `fn` as the guest's one operation; a second one at the same time is refused. */
  private async exclusive<T>(id: number, what: string, fn: () => Promise<T>): Promise<T> {
    const other = this.busy.get(id);
    if (other) throw new GordeError("locked", `guest ${id} is busy: ${other} is under way.`);
    this.busy.set(id, what);
    try {
      return await fn();
    } finally {
      this.busy.delete(id);
    }
  }

  private checkPortFree(config: GuestConfig): void {
    for (const [id, c] of this.configs) {
      if (id !== config.id && c.httpPort === config.httpPort) throw new GordeError("exists", `port ${config.httpPort} is already the service port of guest ${id}.`);
    }
  }

  private async saveConfig(config: GuestConfig): Promise<void> {
    await writeFileAtomic(this.dir("guests", `${config.id}.json`), Buffer.from(JSON.stringify(config, null, 2) + "\n"), { mode: 0o600 });
    this.configs.set(config.id, config);
  }

  async create(req: CreateGuest): Promise<GuestConfig> {
    const id = "config" in req ? req.config.id : req.demo.id;
    if (this.configs.has(id) || this.damaged.has(id)) throw new GordeError("exists", `guest id ${id} is in use on node ${this.opts.nodeName}.`);
    return this.exclusive(id, "a create", async () => {
      let config: GuestConfig;
      if ("config" in req) {
        config = req.config;
        if (config.kind === "vm") for (const f of Object.values(config.disks)) if (!fs.existsSync(f)) throw new GordeError("not-found", `disk ${f} of VM ${id} does not exist.`);
        if (config.kind === "ct" && !fs.existsSync(config.rootfs)) throw new GordeError("not-found", `root file system ${config.rootfs} of container ${id} does not exist.`);
        this.checkPortFree(config);
        await this.opts.placement?.claim(config);
      } else {
        const d = req.demo;
        const name = d.name ?? `${d.kind}${d.id}`;
        config =
          d.kind === "vm"
            ? { kind: "vm", id, name, memoryMiB: d.memoryMiB ?? 256, cpus: d.cpus ?? 1, disks: { disk0: this.dir("images", String(id), "disk0.raw") }, httpPort: d.httpPort, agent: true, healthChecks: DEMO_VM_HEALTH_CHECKS }
            : { kind: "ct", id, name, memoryMiB: d.memoryMiB ?? 64, cpus: d.cpus ?? 1, rootfs: this.dir("rootfs", String(id)), init: "/init", httpPort: d.httpPort, healthChecks: DEMO_CT_HEALTH_CHECKS };
        this.checkPortFree(config);
        await this.opts.placement?.claim(config);
        try {
          if (config.kind === "vm") {
            await fsp.mkdir(this.dir("images", String(id)), { recursive: true });
            await buildVmDisk(config.disks.disk0!, (d.diskMiB ?? 1024) * 1024 * 1024, name);
          } else {
            await buildCtRootfs(config.rootfs, name);
          }
        } catch (err) {
          await this.opts.placement?.release(id).catch(() => undefined);
          throw err;
        }
      }
      await this.saveConfig(config);
      this.opts.log(`created ${config.kind} ${id} (${config.name})`);
      return config;
    });
  }

  async setConfig(id: number, next: GuestConfig): Promise<GuestConfig> {
    const cur = this.config(id);
    if (next.id !== id || next.kind !== cur.kind) throw new GordeError("usage", `the configuration of guest ${id} must keep its id ${id} and kind ${cur.kind}.`);
    if (this.running.has(id)) throw new GordeError("locked", `guest ${id} is running; stop it before changing its configuration.`);
    this.checkPortFree(next);
    return this.exclusive(id, "a configuration change", async () => {
      await this.saveConfig(next);
      return next;
    });
  }

  /** Removes a stopped guest; `keepPlacement`: its id stays this node's in the cluster (a failed recovery's copy, tried again). */
  async remove(id: number, opts: { keepPlacement?: boolean } = {}): Promise<void> {
    const c = this.config(id);
    if (this.running.has(id)) throw new GordeError("locked", `guest ${id} is running; stop it before removing it.`);
    await this.exclusive(id, "a removal", async () => {
      if (!this.sandboxes.has(id) && !opts.keepPlacement) await this.opts.placement?.release(id);
      await fsp.rm(this.dir("guests", `${id}.json`), { force: true });
      await fsp.rm(this.dir("guests", `${id}.last-backup`), { force: true });
      this.configs.delete(id);
      this.last.delete(id);
      // Only what the node made for the guest goes; files it was given stay.
      if (c.kind === "ct" && c.rootfs === this.dir("rootfs", String(id))) await fsp.rm(c.rootfs, { recursive: true, force: true });
      await fsp.rm(this.dir("images", String(id)), { recursive: true, force: true });
      await fsp.rm(this.dir("run", String(id)), { recursive: true, force: true });
      this.opts.log(`removed guest ${id}`);
    });
  }

  async start(id: number): Promise<GuestStatus> {
    await this.exclusive(id, "a start", () => this.startNow(id));
    return this.status(id);
  }

  private async startNow(id: number): Promise<void> {
    const c = this.config(id);
    if (this.running.has(id)) throw new GordeError("exists", `guest ${id} is running already.`);
    if (this.closing) throw new GordeError("locked", `node ${this.opts.nodeName} is stopping; guest ${id} is not started.`);
    // Every start goes through this gate (the API's, a restore's, a stop-mode backup's, HA's).
    if (!this.sandboxes.has(id)) await this.opts.placement?.mayStart(id);
    const runDir = this.dir("run", String(id));
    await fsp.mkdir(runDir, { recursive: true });
    // A drill's sandbox dies with this process; every other guest outlives it and is adopted by the next.
    const diesWithAgent = this.sandboxes.has(id);
    if (c.kind === "vm") {
      const vm = await startVm({ id, memoryMiB: c.memoryMiB, cpus: c.cpus, disks: Object.values(c.disks), httpPort: c.httpPort, agent: c.agent }, await this.guestKit(), runDir, { diesWithAgent });
      this.track(id, { kind: "vm", vm, startedAt: Date.now(), bitmaps: {} });
      this.opts.log(`started VM ${id}: ${vm.accelWhy}`);
    } else {
      const ct = await startCt({ id, name: c.name, rootfs: c.rootfs, init: c.init, memoryMiB: c.memoryMiB, cpus: c.cpus, httpPort: c.httpPort }, runDir, { diesWithAgent });
      this.track(id, { kind: "ct", ct, startedAt: Date.now() });
      this.opts.log(`started container ${id}`);
    }
  }

  /** Guest `id` runs: until its process ends. */
  private track(id: number, rt: Runtime): void {
    this.running.set(id, rt);
    const ended = rt.kind === "vm" ? rt.vm.exited.then((how) => `VM ${id}: QEMU exited (${how})`) : rt.ct.exited.then(() => `container ${id} stopped`);
    void ended.then((line) => {
      if (this.running.get(id) !== rt) return;
      this.running.delete(id);
      this.opts.log(line);
    });
  }

  /**
   * Takes over the guests a node process that is gone left running (killed, or crashed):
   * QEMU's monitor connected again, a container's forwarding opened again. One that cannot
   * be taken over is killed (a VM whose monitor does not answer) or left (logged).
   */
  private async adoptRunning(): Promise<void> {
    for (const [id, c] of this.configs) {
      const runDir = this.dir("run", String(id));
      try {
        if (c.kind === "vm") {
          const vm = await adoptVm(id, runDir);
          if (!vm) continue;
          const record = await loadBitmapRecord(runDir, vm, Object.keys(c.disks).length);
          this.track(id, { kind: "vm", vm, startedAt: startedAtMs(vm.pid), bitmaps: { record } });
          this.opts.log(`VM ${id} was running (QEMU pid ${vm.pid}): adopted, its monitor connected again${record ? `; its dirty bitmaps since ${record.snapshot} go on` : ""}`);
        } else {
          const ct = await adoptCt(c, runDir);
          if (!ct) continue;
          this.track(id, { kind: "ct", ct, startedAt: startedAtMs(ct.pid) });
          this.opts.log(`container ${id} was running (init pid ${ct.pid}): adopted, its service forwarded again from 127.0.0.1:${c.httpPort}`);
        }
      } catch (err) {
        this.opts.log(`guest ${id} runs but was not adopted: ${(err as Error).message}`);
      }
    }
  }

  async stop(id: number): Promise<GuestStatus> {
    this.config(id);
    await this.exclusive(id, "a stop", () => this.stopNow(id));
    return this.status(id);
  }

  private async stopNow(id: number): Promise<void> {
    const rt = this.running.get(id);
    if (!rt) return;
    this.running.delete(id);
    if (rt.kind === "vm") await rt.vm.stop();
    else await rt.ct.stop();
    this.opts.log(`stopped guest ${id}`);
  }

  async consoleLog(id: number): Promise<string> {
    this.config(id);
    const read = (f: string): Promise<string> => fsp.readFile(f, "utf8").catch(() => "");
    const rt = this.running.get(id);
    const consoleFile = rt?.kind === "vm" ? rt.vm.consoleLog : rt?.kind === "ct" ? rt.ct.consoleLog : path.join(this.dir("run", String(id)), "console.log");
    const consoleText = (await read(consoleFile)).slice(-64 * 1024);
    const backupText = await read(this.dir("guests", `${id}.backup.log`));
    return `--- console\n${consoleText}${backupText ? `--- last backup\n${backupText}` : ""}`;
  }

  /** Backs a guest up; `onLog` follows the lines of its log as they are written. */
  async backup(
    id: number,
    mode: BackupMode = "snapshot",
    opts: { notes?: string; rate?: number; store?: string; signal?: AbortSignal; onLog?: (line: string) => void; progress?: ProgressFn } = {},
  ): Promise<GuestBackupResult> {
    const { notes, rate, store, signal, onLog, progress } = opts;
    const config = this.config(id);
    return this.exclusive(id, "a backup", async () => {
      const log: string[] = [];
      const say = (t: string): void => {
        log.push(`${new Date().toISOString()} ${t}`);
        onLog?.(t);
      };
      say(`backup of ${config.kind} ${id} (${config.name}) on node ${this.opts.nodeName}, mode ${mode}`);
      const started = Date.now();
      const runDir = this.dir("run", String(id));
      await fsp.mkdir(runDir, { recursive: true });
      let repo: RemoteRepository | undefined;
      const rt = this.running.get(id);
      let restart = false;
      try {
        repo = await this.opts.repository(rate, store);
        if (rate) say(`bandwidth limited to ${rate} bytes/s`);
        say(`datastore ${repo.url.replace(/\/\/[^@]*@/, "//")}`);
        const opts = { repo, mode, config, runDir, notes, log, signal, progress };
        let result;
        if (rt && mode === "stop") {
          // Its answers are read before it stops and once it runs again, before the manifest.
          const answers = new AnswerCapture(config, say, signal);
          await answers.before();
          say("stopping the guest (stop mode)");
          await this.stopNow(id);
          restart = true;
          const startAgain = async (): Promise<void> => {
            await this.startNow(id);
            restart = false;
            say(`guest ${id} started again`);
          };
          result = await backupStoppedGuest({ ...opts, answers, restart: startAgain });
        } else if (rt?.kind === "vm") {
          try {
            result = await backupRunningVm(rt.vm, { ...opts, state: rt.bitmaps });
          } finally {
            await saveBitmapRecord(runDir, rt.bitmaps.record);
          }
        } else if (rt?.kind === "ct") {
          result = await backupRunningCt(rt.ct, opts);
        } else {
          result = await backupStoppedGuest(opts);
        }
        for (const l of summary(result)) say(l);
        await this.recordBackup(id, { snapshot: result.snapshot, time: result.time, ok: true }, log);
        return {
          snapshot: result.snapshot,
          mode,
          archives: result.archives.map((a) => ({ name: a.name, size: a.size, readChunks: a.readChunks, dirtyChunks: a.dirtyChunks })),
          newBytes: result.stats.newBytes,
          reusedBytes: result.stats.reusedBytes,
          durationMs: Date.now() - started,
          log,
        };
      } catch (err) {
        const message = (err as Error).message;
        const qemuGone = rt?.kind === "vm" && !this.running.has(id) && !restart;
        const why = qemuGone ? `QEMU of VM ${id} exited during the backup; the backup failed: ${message}` : `backup of guest ${id} failed: ${message}`;
        say(why);
        await this.recordBackup(id, { snapshot: "", time: Math.floor(Date.now() / 1000), ok: false, error: why }, log);
        throw new GordeError(err instanceof GordeError ? err.code : "io", why.endsWith(".") ? why : `${why}.`);
      } finally {
        repo?.close();
        if (restart) {
          await this.startNow(id).then(
            () => say(`guest ${id} started again`),
            (e: Error) => say(`could not start guest ${id} again: ${e.message}`),
          );
        }
      }
    });
  }

  private async recordBackup(id: number, last: LastBackup, log: string[]): Promise<void> {
    const prev = this.last.get(id);
    const goodTime = last.ok ? last.time : (prev?.goodTime ?? (prev?.ok ? prev.time : undefined));
    if (goodTime !== undefined) last.goodTime = goodTime;
    this.last.set(id, last);
    await writeFileAtomic(this.dir("guests", `${id}.last-backup`), Buffer.from(JSON.stringify(last) + "\n"));
    await writeFileAtomic(this.dir("guests", `${id}.backup.log`), Buffer.from(log.join("\n") + "\n"));
  }

  /**
   * Recreates a guest from a snapshot: disks or rootfs restored beside, then put in place.
   * `sandbox`: a drill's copy, never started with the node (`onboot` is dropped). `say`
   * follows its steps.
   */
  async restore(req: RestoreGuest, opts: { signal?: AbortSignal; sandbox?: boolean; say?: (line: string) => void } = {}): Promise<GuestStatus> {
    const say = opts.say ?? ((): void => undefined);
    const ref = parseSnapshotRef(req.snapshot);
    if (ref.type === "host") throw new GordeError("usage", `${req.snapshot} is a host backup, not a guest.`);
    const repo = await this.opts.repository();
    try {
      const reader = await repo.openReader([], req.snapshot);
      try {
        const raw = reader.manifest.config;
        if (!raw) throw new GordeError("invalid", `snapshot ${reader.name} holds no guest configuration; restore its archives with gorde restore.`);
        const orig = parseGuestConfig(raw, `the configuration in ${reader.name}`);
        const id = req.id ?? orig.id;
        this.refuseOverwrite(id, req.force);
        const existing = this.configs.get(id);
        return await this.exclusive(id, "a restore", async () => {
          say(`restoring ${orig.kind} ${orig.id} (${orig.name}) from ${reader.name} as guest ${id} on node ${this.opts.nodeName}`);
          if (opts.sandbox) this.sandboxes.add(id);
          else await this.opts.placement?.claim({ id, kind: orig.kind, name: id === orig.id ? orig.name : `${orig.name}-${id}` });
          const port = req.httpPort ?? (await this.portFor(orig.httpPort, id));
          const staging = this.dir("images", `.restore-${id}-${process.pid}`);
          await fsp.rm(staging, { recursive: true, force: true });
          await fsp.mkdir(staging, { recursive: true });
          try {
            let config: GuestConfig;
            if (orig.kind === "vm") {
              const disks: Record<string, string> = {};
              for (const name of Object.keys(orig.disks)) {
                say(`restoring disk ${name}`);
                await restoreArchive(reader, { snapshot: ref, archive: `${name}.img`, target: path.join(staging, `${name}.raw`), signal: opts.signal });
                disks[name] = this.dir("images", String(id), `${name}.raw`);
              }
              config = { ...orig, id, name: id === orig.id ? orig.name : `${orig.name}-${id}`, disks, httpPort: port };
            } else {
              say("restoring the root file system");
              const r = await restoreArchive(reader, { snapshot: ref, archive: "root.tree", target: path.join(staging, "rootfs"), signal: opts.signal });
              // A container whose root file system is not whole does not start as if it were.
              const lost = r.skipped ?? [];
              if (lost.length > 0) throw new GordeError("io", `${lost.length} entries of the container's root file system could not be restored here; the first: ${lost[0]!.reason}`);
              config = { ...orig, id, name: id === orig.id ? orig.name : `${orig.name}-${id}`, rootfs: this.dir("rootfs", String(id)), httpPort: port };
            }
            if (opts.sandbox) delete config.onboot;
            this.checkPortFree(config);
            const moveIn = async (): Promise<void> => {
              if (config.kind === "vm") await fsp.rename(staging, this.dir("images", String(id)));
              else await fsp.rename(path.join(staging, "rootfs"), config.rootfs);
            };
            // Everything is restored: only now is an existing guest of that id replaced.
            if (existing || this.damaged.has(id)) {
              say(`replacing the existing guest ${id}`);
              if (existing) await this.stopNow(id);
              await this.replaceGuest(config, moveIn);
              this.damaged.delete(id);
            } else {
              await moveIn();
              await this.saveConfig(config);
            }
            this.opts.log(`restored ${config.kind} ${id} from ${reader.name}`);
            say(`restored ${config.kind} ${id} (${config.name}), service port ${config.httpPort}`);
            if (req.start) {
              await this.startNow(id);
              say(`started ${config.kind} ${id}`);
            }
          } catch (err) {
            // A restore that made nothing here gives its id back to the cluster.
            if (!existing && !opts.sandbox && !this.configs.has(id)) await this.opts.placement?.release(id).catch(() => undefined);
            throw err;
          } finally {
            await fsp.rm(staging, { recursive: true, force: true });
          }
          return this.status(id);
        });
      } finally {
        await reader.close();
      }
    } finally {
      repo.close();
    }
  }

  /** Refuses a restore over guest `id` unless `force`: nothing is replaced without being asked to. */
  refuseOverwrite(id: number, force: boolean | undefined): void {
    const damaged = this.damaged.get(id);
    if (damaged !== undefined && !force) throw new GordeError("exists", `guest ${id}'s configuration on node ${this.opts.nodeName} is damaged (${damaged}); give --force to replace the guest with the restore.`);
    if (!this.configs.has(id) || force) return;
    const running = this.running.has(id) ? " and running" : "";
    throw new GordeError("exists", `guest ${id} exists${running} on node ${this.opts.nodeName}; give another --id or --force to replace it.`);
  }

  /** The snapshot's port if it is free here, else a free one: a restored copy never collides with its original. */
  private async portFor(wanted: number, id: number): Promise<number> {
    const usedByOther = [...this.configs.values()].some((c) => c.id !== id && c.httpPort === wanted);
    if (!usedByOther && (await portFree(wanted))) return wanted;
    for (let p = wanted + 1; p < Math.min(65536, wanted + 1000); p++) {
      if (![...this.configs.values()].some((c) => c.httpPort === p) && (await portFree(p))) return p;
    }
    throw new GordeError("exists", `no free service port near ${wanted} for the restored guest; give one with --port.`);
  }

  /** What a drill's boot check looks at: the running guest's console log, agent socket or init. */
  runtime(id: number): { kind: "vm"; pid: number; consoleLog: string; agentSocket?: string; exited: boolean } | { kind: "ct"; pid: number; consoleLog: string; running(): Promise<boolean> } | undefined {
    const rt = this.running.get(id);
    if (rt?.kind === "vm") {
      return { kind: "vm", pid: rt.vm.pid, consoleLog: rt.vm.consoleLog, agentSocket: rt.vm.agentSocket, exited: rt.vm.done };
    }
    if (rt?.kind === "ct") {
      const ct = rt.ct;
      return { kind: "ct", pid: ct.pid, consoleLog: ct.consoleLog, running: async () => this.running.get(id) === rt && (await ct.state().catch(() => "STOPPED")) === "RUNNING" };
    }
    return undefined;
  }

  /**
   * Stops (if running here) and removes a drill's sandbox with everything the node made for
   * it, also what a node killed mid-drill left: a half-restored staging directory, and a
   * container LXC still runs (its QEMU, the drill runner kills by pid).
   */
  async removeSandbox(id: number): Promise<void> {
    await this.stopNow(id).catch(() => undefined);
    const runDir = this.dir("run", String(id));
    if (fs.existsSync(path.join(runDir, `ct${id}`, "config"))) {
      await execFileP("lxc-stop", ["-P", runDir, "-n", `ct${id}`, "-k"]).catch(() => undefined);
    }
    this.sandboxes.add(id);
    if (this.configs.has(id)) await this.remove(id);
    this.sandboxes.delete(id);
    for (const f of await fsp.readdir(this.dir("images"))) {
      if (f.startsWith(`.restore-${id}-`)) await fsp.rm(this.dir("images", f), { recursive: true, force: true });
    }
    await fsp.rm(this.dir("images", String(id)), { recursive: true, force: true });
    await fsp.rm(this.dir("rootfs", String(id)), { recursive: true, force: true });
    await fsp.rm(runDir, { recursive: true, force: true });
  }

  /** Where guest `id`'s processes keep their sockets and logs: every one names it on its command line. */
  runDir(id: number): string {
    return this.dir("run", String(id));
  }

  /** Whether guest `id` runs on this node. */
  isRunning(id: number): boolean {
    return this.running.has(id);
  }

  /** Whether an operation (a backup, a restore, a start) holds guest `id`. */
  isBusy(id: number): boolean {
    return this.busy.has(id);
  }

  /**
   * Kills guest `id` at once, without asking it to shut down (the node is being fenced: the
   * guest must be dead before the node's lease can lapse); resolves once its process is gone.
   */
  async fence(id: number): Promise<void> {
    const rt = this.running.get(id);
    if (!rt) return;
    this.running.delete(id);
    if (rt.kind === "vm") {
      // Not through QMP: a stuck QEMU must die too.
      await rt.vm.kill();
    } else {
      await rt.ct.stop(0);
    }
    this.opts.log(`fenced guest ${id}: killed`);
  }

  /**
   * Moves guest `id` aside: the cluster gave it to another node while this one was lost.
   * Its configuration and disks go to <dataDir>/displaced/<id>-<time>/, kept for the
   * operator (never deleted); answers where.
   */
  async displace(id: number): Promise<string> {
    const c = this.config(id);
    if (this.running.has(id)) throw new GordeError("locked", `guest ${id} runs on node ${this.opts.nodeName}; it cannot be moved aside.`);
    return this.exclusive(id, "moving it aside", async () => {
      const to = this.dir("displaced", `${id}-${new Date().toISOString().replace(/[:.]/g, "-")}`);
      await fsp.mkdir(to, { recursive: true, mode: 0o700 });
      const move = async (from: string, name: string): Promise<void> => {
        if (fs.existsSync(from)) await fsp.rename(from, path.join(to, name));
      };
      await move(this.dir("guests", `${id}.json`), "config.json");
      await move(this.dir("guests", `${id}.last-backup`), "last-backup");
      if (c.kind === "vm") await move(this.dir("images", String(id)), "images");
      else if (c.rootfs === this.dir("rootfs", String(id))) await move(c.rootfs, "rootfs");
      await fsp.rm(this.dir("run", String(id)), { recursive: true, force: true });
      this.configs.delete(id);
      this.last.delete(id);
      return to;
    });
  }

  /** Starts the guests marked `onboot` (but those in `except`, and those running, adopted); one that fails is logged, the others start. */
  async startOnBoot(except: ReadonlySet<number> = new Set()): Promise<void> {
    for (const [id, c] of this.configs) {
      if (c.onboot && !except.has(id) && !this.running.has(id)) await this.start(id).catch((e: Error) => this.opts.log(`guest ${id} did not start on boot: ${e.message}`));
    }
  }

  /** Stops every guest (the node is shutting down). */
  async close(): Promise<void> {
    this.closing = true;
    for (const id of [...this.running.keys()]) await this.stopNow(id).catch(() => undefined);
  }
}
