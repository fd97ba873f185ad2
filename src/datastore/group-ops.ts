// Operations on a group or snapshot shared by the command line (local datastores) and the
// server: the JSON description of a snapshot, and prune applied to a group.
import { type Datastore, type SnapshotInfo } from "./datastore.ts";
import { type PruneAction, type PruneOptions, computePrune } from "./prune.ts";
import { GordeError } from "../errors.ts";
import { type Group, formatSnapshot, formatTime } from "../format/names.ts";

export function snapshotJson(s: SnapshotInfo, owner: string | null = null) {
  return {
    snapshot: formatSnapshot(s),
    time: formatTime(s.time),
    size: s.manifest?.archives.reduce((n, a) => n + a.size, 0) ?? 0,
    protected: s.protected,
    finished: s.finished,
    archives: s.manifest?.archives.map((a) => ({ name: a.name, kind: a.kind, size: a.size })) ?? [],
    notes: s.manifest?.unprotected.notes ?? null,
    verify: s.manifest?.unprotected.verify ?? null,
    drill: s.manifest?.unprotected.drill ?? null,
    error: s.error?.message ?? null,
    owner,
    encrypted: s.manifest?.cryptMode === "encrypt",
    captures: s.manifest?.captures?.map((c) => ({ probe: c.probe, state: c.state })) ?? [],
  };
}

export interface PruneGroupResult {
  plan: { snapshot: string; time: number; action: PruneAction }[];
  /** snapshots kept because their manifest is damaged or from a newer gorde */
  damaged: string[];
  /** removals that failed, with the reason */
  failed: string[];
}

/**
 * Applies a retention policy to a group. A snapshot whose manifest is damaged or from a
 * newer gorde is never pruned (nor counted): it needs an operator's look. One that another
 * operation holds at that moment (a verify or a sync reading it) is left for the next
 * prune ("in-use"), as PBS warns and goes on: it is no failure of the prune.
 */
export async function pruneGroup(store: Datastore, ns: string[], group: Group, keep: PruneOptions, dryRun: boolean): Promise<PruneGroupResult> {
  const all = await store.listSnapshots(ns, group);
  const damagedSnaps = all.filter((s) => s.error);
  const plan: { snapshot: SnapshotInfo; action: PruneAction }[] = [
    ...computePrune(all.filter((s) => !s.error), keep),
    ...damagedSnaps.map((snapshot) => ({ snapshot, action: "keep" as const })),
  ].sort((a, b) => b.snapshot.time - a.snapshot.time);
  const failed: string[] = [];
  if (!dryRun) {
    for (const p of plan) {
      if (p.action !== "remove") continue;
      try {
        await store.forget(p.snapshot);
      } catch (err) {
        if (err instanceof GordeError && err.code === "locked") p.action = "in-use";
        else failed.push(`${formatSnapshot(p.snapshot)}: ${(err as Error).message}`);
      }
    }
  }
  return {
    plan: plan.map((p) => ({ snapshot: formatSnapshot(p.snapshot), time: p.snapshot.time, action: p.action })),
    damaged: damagedSnaps.map((d) => `${formatSnapshot(d)}: ${d.error!.message}`),
    failed,
  };
}
