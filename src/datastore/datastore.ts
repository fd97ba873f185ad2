// A datastore directory: groups, snapshots, locks (docs/format.md, "Directory tree").
//   <store>/.gorde-datastore            marker: {"format": 1, ...}
//   <store>/.chunks/<2 hex>/<64 hex>    chunks
//   <store>/.running/<pid>-<rand>       one per running backup (for GC's cutoff)
//   <store>/[ns/<name>/]…<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/   snapshots
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { GordeError } from "../errors.ts";
import { DATASTORE_FORMAT, MAX_MANIFEST_FILE_SIZE } from "../format/magic.ts";
import { type DrillState, type Manifest, decodeManifest, encodeManifest } from "../format/manifest.ts";
import {
  BACKUP_TYPES,
  type Group,
  type SnapshotRef,
  formatGroup,
  formatSnapshot,
  formatTime,
  parseSnapshotTime,
} from "../format/names.ts";
import { flock } from "../sys/posix.ts";
import { ChunkStore } from "./chunk-store.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { readRegularFile } from "../sys/bounded-read.ts";

export const MARKER_FILE = ".gorde-datastore";
export const MANIFEST_FILE = "manifest.json";
export const PROTECTED_FILE = ".protected";
/** In a group directory: the auth id (user or user!token) that owns the group on a server. */
export const OWNER_FILE = "owner";

export interface SnapshotInfo extends SnapshotRef {
  ns: string[];
  dir: string;
  finished: boolean;
  protected: boolean;
  /** undefined when unfinished */
  manifest: Manifest | undefined;
  /** why the manifest could not be read, when it exists but is damaged or too new */
  error?: GordeError;
}

/** A snapshot as listed here (its verify state in its manifest) or by a server (`verify`). */
export type ListedSnapshot = { finished: boolean } & ({ manifest: Manifest | undefined } | { verify: { state: string } | null | undefined });

/**
 * The newest finished snapshot whose last verification did not fail (`snaps` oldest
 * first): a backup's base, and the last good backup a node's dirty bitmaps and
 * `plan check` go by.
 */
export function latestUsable<T extends ListedSnapshot>(snaps: readonly T[]): T | undefined {
  for (let i = snaps.length - 1; i >= 0; i--) {
    const s = snaps[i]!;
    const state = "manifest" in s ? s.manifest?.unprotected.verify?.state : s.verify?.state;
    if (s.finished && state !== "failed") return s;
  }
  return undefined;
}

export class Datastore {
  readonly dir: string;
  readonly chunks: ChunkStore;

  private constructor(dir: string) {
    this.dir = dir;
    this.chunks = new ChunkStore(path.join(dir, ".chunks"));
  }

  /** Creates a datastore in an empty or missing directory. */
  static async init(dir: string): Promise<Datastore> {
    const abs = path.resolve(dir);
    let entries: string[] = [];
    try {
      entries = await fsp.readdir(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOTDIR") throw new GordeError("usage", `${dir} is not a directory.`);
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (entries.includes(MARKER_FILE)) throw new GordeError("exists", `${dir} is already a gorde datastore.`);
    if (entries.length > 0) throw new GordeError("usage", `${dir} is not empty; a new datastore needs an empty directory.`);
    await fsp.mkdir(path.join(abs, ".chunks"), { recursive: true });
    await fsp.mkdir(path.join(abs, ".running"), { recursive: true });
    const marker = { format: DATASTORE_FORMAT, created: Math.floor(Date.now() / 1000) };
    await writeFileAtomic(path.join(abs, MARKER_FILE), Buffer.from(JSON.stringify(marker) + "\n"));
    return new Datastore(abs);
  }

  static async open(dir: string): Promise<Datastore> {
    const abs = path.resolve(dir);
    let raw: string;
    try {
      raw = await fsp.readFile(path.join(abs, MARKER_FILE), "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        throw new GordeError("not-found", `${dir} is not a gorde datastore (no ${MARKER_FILE}); create one with gorde init.`);
      }
      throw err;
    }
    let format: unknown;
    try {
      format = (JSON.parse(raw) as { format?: unknown }).format;
    } catch {
      throw new GordeError("corrupt", `${path.join(dir, MARKER_FILE)} is not valid JSON.`);
    }
    if (typeof format !== "number" || !Number.isInteger(format) || format < 1) {
      throw new GordeError("corrupt", `${path.join(dir, MARKER_FILE)} has no valid format version.`);
    }
    if (format > DATASTORE_FORMAT) {
      throw new GordeError(
        "unsupported",
        `${dir} uses datastore format ${format}, written by a newer gorde; this gorde reads up to format ${DATASTORE_FORMAT}.`,
      );
    }
    return new Datastore(abs);
  }

  nsDir(ns: string[]): string {
    return path.join(this.dir, ...ns.flatMap((n) => ["ns", n]));
  }

  groupDir(ns: string[], g: Group): string {
    return path.join(this.nsDir(ns), g.type, g.id);
  }

  snapshotDir(ns: string[], r: SnapshotRef): string {
    return path.join(this.groupDir(ns, r), formatTime(r.time));
  }

  async listGroups(ns: string[]): Promise<Group[]> {
    const groups: Group[] = [];
    for (const type of BACKUP_TYPES) {
      let ids: string[];
      try {
        ids = await fsp.readdir(path.join(this.nsDir(ns), type));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw err;
      }
      for (const id of ids.sort()) if (!id.startsWith(".")) groups.push({ type, id });
    }
    return groups;
  }

  /** Snapshots of a group, oldest first. Unparseable directory names are ignored. */
  async listSnapshots(ns: string[], g: Group): Promise<SnapshotInfo[]> {
    const gdir = this.groupDir(ns, g);
    let names: string[];
    try {
      names = await fsp.readdir(gdir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: SnapshotInfo[] = [];
    for (const name of names) {
      const time = parseSnapshotTime(name);
      if (time === undefined) continue;
      try {
        out.push(await this.snapshotInfo(ns, { ...g, time }));
      } catch (err) {
        // Removed (prune, forget) since the directory was read: not listed, as if read a moment later.
        if (err instanceof GordeError && err.code === "not-found") continue;
        throw err;
      }
    }
    return out.sort((a, b) => a.time - b.time);
  }

  /**
   * A snapshot's state. A manifest that cannot be read leaves the snapshot unfinished
   * (it cannot be restored) with the reason in `error`; listing the group still works.
   */
  async snapshotInfo(ns: string[], r: SnapshotRef): Promise<SnapshotInfo> {
    const dir = this.snapshotDir(ns, r);
    if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new GordeError("not-found", `snapshot ${formatSnapshot(r)} does not exist.`);
    }
    let manifest: Manifest | undefined;
    let error: GordeError | undefined;
    try {
      manifest = decodeManifest(await readRegularFile(path.join(dir, MANIFEST_FILE), MAX_MANIFEST_FILE_SIZE, `manifest of ${formatSnapshot(r)}`), `manifest of ${formatSnapshot(r)}`);
      if (manifest.type !== r.type || manifest.id !== r.id || manifest.time !== r.time) {
        throw new GordeError("corrupt", `manifest of ${formatSnapshot(r)} names another snapshot.`);
      }
    } catch (err) {
      manifest = undefined;
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        if (!(err instanceof GordeError)) throw err;
        error = err;
      }
    }
    return {
      error,
      ...r,
      ns,
      dir,
      finished: manifest !== undefined,
      protected: fs.existsSync(path.join(dir, PROTECTED_FILE)),
      manifest,
    };
  }

  /** The group's owner, or null when none is recorded (a group made by a local backup). */
  async groupOwner(ns: string[], g: Group): Promise<string | null> {
    try {
      const owner = (await fsp.readFile(path.join(this.groupDir(ns, g), OWNER_FILE), "utf8")).trim();
      return owner === "" ? null : owner;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  /** Records the group's owner, creating the group directory when needed. */
  async setGroupOwner(ns: string[], g: Group, owner: string): Promise<void> {
    const dir = this.groupDir(ns, g);
    await fsp.mkdir(dir, { recursive: true });
    await writeFileAtomic(path.join(dir, OWNER_FILE), Buffer.from(owner + "\n"));
  }

  /** Resolves `<group>/latest` (newest finished) or checks that a snapshot exists. */
  async findSnapshot(ns: string[], ref: Group & { time: number | "latest" }): Promise<SnapshotInfo> {
    if (ref.time === "latest") {
      const snaps = (await this.listSnapshots(ns, ref)).filter((s) => s.finished);
      const last = snaps.at(-1);
      if (!last) throw new GordeError("not-found", `group ${formatGroup(ref)} has no finished snapshot.`);
      return last;
    }
    return this.snapshotInfo(ns, { type: ref.type, id: ref.id, time: ref.time });
  }

  /**
   * Rewrites the manifest's unprotected part (notes, verify state). A lock file of its
   * own serialises updates without blocking readers, which hold the snapshot directory.
   */
  async updateUnprotected(snap: SnapshotInfo, update: (u: Manifest["unprotected"]) => void): Promise<void> {
    const fd = fs.openSync(path.join(snap.dir, ".manifest.lock"), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    try {
      flock(fd, "ex", true);
      const file = path.join(snap.dir, MANIFEST_FILE);
      const m = decodeManifest(await readRegularFile(file, MAX_MANIFEST_FILE_SIZE, `manifest of ${formatSnapshot(snap)}`), `manifest of ${formatSnapshot(snap)}`);
      update(m.unprotected);
      await writeFileAtomic(file, encodeManifest(m));
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Records the snapshot's newest restore drill (its result and RTO) in its unprotected part, as verify's state. */
  async setDrillState(snap: SnapshotInfo, state: DrillState): Promise<void> {
    if (!snap.finished) throw new GordeError("usage", `snapshot ${formatSnapshot(snap)} is unfinished; it cannot have been drilled.`);
    await this.updateUnprotected(snap, (u) => {
      u.drill = state;
    });
  }

  async setProtected(snap: SnapshotInfo, on: boolean): Promise<void> {
    const file = path.join(snap.dir, PROTECTED_FILE);
    if (on) await writeFileAtomic(file, Buffer.alloc(0));
    else await fsp.rm(file, { force: true });
  }

  /** Removes a snapshot; refused while it is protected or in use (a backup's base, a restore). */
  async forget(snap: SnapshotInfo): Promise<void> {
    const lock = lockDir(snap.dir, "ex", `snapshot ${formatSnapshot(snap)}`);
    try {
      if (fs.existsSync(path.join(snap.dir, PROTECTED_FILE))) {
        throw new GordeError("usage", `snapshot ${formatSnapshot(snap)} is protected; unprotect it first.`);
      }
      // Rename first so a half-removed snapshot never looks like a snapshot.
      const doomed = path.join(path.dirname(snap.dir), `.removing-${path.basename(snap.dir)}-${randomBytes(4).toString("hex")}`);
      await fsp.rename(snap.dir, doomed);
      await fsp.rm(doomed, { recursive: true, force: true });
    } finally {
      lock.release();
    }
  }

  /** Holds the backup lock of a group: one backup per group at a time. */
  lockGroup(ns: string[], g: Group): Lock {
    const dir = this.groupDir(ns, g);
    fs.mkdirSync(dir, { recursive: true });
    return lockDir(dir, "ex", `group ${formatGroup(g)}`, `another backup of ${formatGroup(g)} is running`);
  }

  /** Registers a running backup so GC lowers its cutoff to this backup's start. */
  registerBackup(startedMs: number): Lock {
    const dir = path.join(this.dir, ".running");
    fs.mkdirSync(dir, { recursive: true });
    const name = `${process.pid}-${randomBytes(4).toString("hex")}`;
    const file = path.join(dir, name);
    // Locked before it is visible under its name, so GC never takes it for a stale one.
    const tmp = path.join(dir, `.${name}.tmp`);
    const fd = fs.openSync(tmp, "wx", 0o644);
    flock(fd, "ex", true);
    fs.writeSync(fd, JSON.stringify({ started: startedMs, pid: process.pid }));
    fs.renameSync(tmp, file);
    return {
      release() {
        fs.rmSync(file, { force: true });
        fs.closeSync(fd);
      },
    };
  }

  /** Start times (ms) of backups running now; stale registrations are removed. */
  runningBackups(): number[] {
    const dir = path.join(this.dir, ".running");
    const out: number[] = [];
    for (const name of safeReaddir(dir)) {
      const file = path.join(dir, name);
      if (name.startsWith(".")) {
        // A registration its process did not get to rename (killed in between): stale once
        // unlocked and a minute old (a live one is renamed microseconds after it is made).
        if (name.endsWith(".tmp")) removeIfStale(file, 60_000);
        continue;
      }
      let fd: number;
      try {
        fd = fs.openSync(file, "r");
      } catch {
        continue;
      }
      try {
        if (flock(fd, "sh", false)) {
          fs.rmSync(file, { force: true }); // its process is gone
        } else {
          const started = (JSON.parse(fs.readFileSync(file, "utf8")) as { started: number }).started;
          out.push(started);
        }
      } catch {
        out.push(0); // unreadable but locked: be conservative
      } finally {
        fs.closeSync(fd);
      }
    }
    return out;
  }

  close(): void {
    this.chunks.close();
  }
}

export interface Lock {
  release(): void;
}

/** flock on a directory: "sh" for readers (restore, base of a backup), "ex" for writers. */
export function lockDir(dir: string, mode: "sh" | "ex", what: string, busy?: string): Lock {
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new GordeError("not-found", `${what} does not exist.`);
    throw err;
  }
  if (!flock(fd, mode, false)) {
    fs.closeSync(fd);
    throw new GordeError("locked", `${busy ?? `${what} is in use by another operation`}; try again later.`);
  }
  return {
    release() {
      fs.closeSync(fd);
    },
  };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Removes `file` if it is older than `ageMs` and no live process holds a lock on it. */
function removeIfStale(file: string, ageMs: number): void {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    return;
  }
  try {
    if (Date.now() - fs.fstatSync(fd).mtimeMs > ageMs && flock(fd, "ex", false)) fs.rmSync(file, { force: true });
  } finally {
    fs.closeSync(fd);
  }
}
