// A datastore directory on this machine as a Repository: every call done here, in this
// process, under the datastore's own locks.
import path from "node:path";
import type { SnapshotJson } from "../api/routes.ts";
import { Datastore } from "../datastore/datastore.ts";
import { type GcResult, garbageCollect } from "../datastore/gc.ts";
import { pruneGroup, snapshotJson } from "../datastore/group-ops.ts";
import { datastoreStatus } from "../datastore/status.ts";
import type { PruneOptions } from "../datastore/prune.ts";
import { type VerifyReport, verifyAll, verifySnapshots } from "../datastore/verify.ts";
import { GordeError } from "../errors.ts";
import { type Group, formatSnapshot, parseSnapshotRef } from "../format/names.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";
import { openLocalBackup } from "./local-backup.ts";
import { MAX_NOTES_BYTES, type PruneOutcome, type Repository, type RepositoryStatus, type TaskOptions } from "./repository.ts";
import { type SnapshotReader, openLocalReader } from "./restore.ts";

export class LocalRepository implements Repository {
  readonly kind = "local" as const;
  readonly store: Datastore;

  constructor(store: Datastore) {
    this.store = store;
  }

  static async open(dir: string): Promise<LocalRepository> {
    return new LocalRepository(await Datastore.open(dir));
  }

  close(): void {
    this.store.close();
  }

  private find(ns: string[], name: string) {
    return this.store.findSnapshot(ns, parseSnapshotRef(name));
  }

  async snapshots(ns: string[], group?: Group): Promise<SnapshotJson[]> {
    const groups = group ? [group] : await this.store.listGroups(ns);
    const out: SnapshotJson[] = [];
    for (const g of groups) out.push(...(await this.store.listSnapshots(ns, g)).map((s) => snapshotJson(s)));
    return out;
  }

  async snapshot(ns: string[], name: string): Promise<SnapshotJson> {
    return snapshotJson(await this.find(ns, name));
  }

  async forget(ns: string[], name: string): Promise<string> {
    const s = await this.find(ns, name);
    await this.store.forget(s);
    return formatSnapshot(s);
  }

  async setProtected(ns: string[], name: string, on: boolean): Promise<string> {
    const s = await this.find(ns, name);
    await this.store.setProtected(s, on);
    return formatSnapshot(s);
  }

  async notes(ns: string[], name: string): Promise<string> {
    const s = await this.find(ns, name);
    if (!s.finished) throw new GordeError("usage", `snapshot ${formatSnapshot(s)} is unfinished.`);
    return s.manifest!.unprotected.notes ?? "";
  }

  async setNotes(ns: string[], name: string, notes: string): Promise<void> {
    const s = await this.find(ns, name);
    if (!s.finished) throw new GordeError("usage", `snapshot ${formatSnapshot(s)} is unfinished.`);
    if (notes.length > MAX_NOTES_BYTES) throw new GordeError("usage", "notes are limited to 64 KiB.");
    await this.store.updateUnprotected(s, (u) => {
      u.notes = notes;
    });
  }

  async prune(ns: string[], group: Group, keep: PruneOptions, dryRun: boolean): Promise<PruneOutcome> {
    const r = await pruneGroup(this.store, ns, group, keep, dryRun);
    return { ...r, plan: r.plan.map((p) => ({ snapshot: p.snapshot, action: p.action })) };
  }

  gc(opts: TaskOptions & { cutoffSeconds?: number } = {}): Promise<GcResult> {
    return garbageCollect(this.store, { cutoffMs: opts.cutoffSeconds === undefined ? undefined : opts.cutoffSeconds * 1000, signal: opts.signal });
  }

  async verify(ns: string[], snapshot: string | undefined, opts: TaskOptions = {}): Promise<VerifyReport> {
    if (snapshot === undefined) return verifyAll(this.store, { ns, signal: opts.signal });
    return verifySnapshots(this.store, [await this.find(ns, snapshot)], { signal: opts.signal });
  }

  async status(): Promise<RepositoryStatus> {
    return { name: path.basename(this.store.dir), maintenance: "none", ...(await datastoreStatus(this.store)) };
  }

  openBackup(req: SessionRequest): Promise<BackupSession> {
    return openLocalBackup(this.store, req);
  }

  openReader(ns: string[], name: string): Promise<SnapshotReader> {
    return openLocalReader(this.store, ns, parseSnapshotRef(name));
  }
}
