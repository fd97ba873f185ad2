// The datastore routes: the stores and their maintenance modes, groups and snapshots with
// their notes, drills, protection and owners, and prune, GC and verify.
import type { ROUTES } from "../api/routes.ts";
import { browseArchive, downloadArchiveFile } from "../datastore/archive-browse.ts";
import { type SnapshotReader, openLocalReader } from "../datastore/snapshot-reader.ts";
import type { SnapshotInfo } from "../datastore/datastore.ts";
import { pruneGroup, snapshotJson } from "../datastore/group-ops.ts";
import { formatGroup, formatSnapshot, parseGroup, parseNamespace, parseSnapshotRef } from "../format/names.ts";
import type { ApiHandlers } from "../host/api-host.ts";
import { datastoreAclPath } from "../host/auth.ts";
import { HttpError } from "../host/http.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import type { LongTasks } from "./long-tasks.ts";
import type { ServerContext } from "./server-context.ts";
import { datastoreStatus } from "../datastore/status.ts";

type DatastoreRoute = "listDatastores" | "datastoreStatus" | "datastoreHistory" | "setMaintenance" | "listGroups" | "listSnapshots" | "prune" | "gc" | "verify";
type SnapshotRoute = "forgetSnapshot" | "setNotes" | "setDrill" | "setProtected" | "setOwner";
type ContentRoute = "browseSnapshot" | "downloadSnapshotFile";

export function datastoreHandlers(ctx: ServerContext, long: LongTasks): ApiHandlers<typeof ROUTES, DatastoreRoute> {
  const { auth, stores, maintenance, maintenanceFile, log, privs, deny, storeFor, groupAcc, findSnap } = ctx;
  const { startGc, startVerify } = long;
  return {
    listDatastores: ({ authId }) => ({
      json: [...stores.values()]
        .filter((e) => auth.anyPrivilegesBelow(authId, datastoreAclPath(e.name)))
        .map((e) => ({ name: e.name, maintenance: maintenance[e.name] ?? "none" })),
    }),
    datastoreStatus: async ({ authId, params }) => {
      const e = storeFor(authId, params.store, "read");
      const p = privs(authId, e.name, []);
      if (!p.has("Datastore.Audit") && !p.has("Datastore.Backup")) deny(authId, `see the status of ${e.name}`);
      return { json: { name: e.name, maintenance: maintenance[e.name] ?? "none", ...(await datastoreStatus(e.store)) } };
    },
    datastoreHistory: ({ authId, params }) => {
      const e = storeFor(authId, params.store, "read");
      const p = privs(authId, e.name, []);
      if (!p.has("Datastore.Audit") && !p.has("Datastore.Backup")) deny(authId, `see the history of ${e.name}`);
      return { json: ctx.usage.list(e.name) };
    },
    setMaintenance: async ({ authId, params, body }) => {
      const e = storeFor(authId, params.store, "admin");
      if (!privs(authId, e.name, []).has("Datastore.Modify")) deny(authId, `change the maintenance mode of ${e.name}`);
      const { mode } = body;
      maintenance[e.name] = mode;
      await writeFileAtomic(maintenanceFile, Buffer.from(JSON.stringify(maintenance, null, 2) + "\n"));
      log(`datastore ${e.name}: maintenance mode ${mode}`);
      return { json: { ok: true } };
    },
    listGroups: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store, "read");
      const ns = parseNamespace(query.ns);
      const out = [];
      for (const g of await e.store.listGroups(ns)) {
        const { owner, acc } = await groupAcc(authId, e, ns, g);
        if (!acc.list) continue;
        const snaps = await e.store.listSnapshots(ns, g);
        const last = snaps.filter((s) => s.finished).at(-1);
        out.push({ group: formatGroup(g), owner, count: snaps.length, last: last ? formatSnapshot(last) : null });
      }
      return { json: out };
    },
    listSnapshots: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store, "read");
      const ns = parseNamespace(query.ns);
      const groups = query.group ? [parseGroup(query.group)] : await e.store.listGroups(ns);
      const out = [];
      for (const g of groups) {
        const { owner, acc } = await groupAcc(authId, e, ns, g);
        if (!acc.list) {
          // A group that does not exist yet has no snapshots to hide (a node asks before its first backup).
          if (query.group && owner === null && (await e.store.listSnapshots(ns, g)).length === 0) continue;
          if (query.group) deny(authId, `list the snapshots of ${formatGroup(g)}`);
          continue;
        }
        for (const s of await e.store.listSnapshots(ns, g)) out.push(snapshotJson(s, owner));
      }
      return { json: out };
    },
    prune: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, b.dryRun ? "read" : "write");
      const ns = parseNamespace(b.ns);
      const g = parseGroup(b.group);
      if (!(await groupAcc(authId, e, ns, g)).acc.prune) deny(authId, `prune ${b.group}`);
      const r = await pruneGroup(e.store, ns, g, b.keep, b.dryRun === true);
      if (r.failed.length) throw new HttpError(409, `could not remove ${r.failed.join("; ")}`);
      return { json: r.plan.map((p) => ({ snapshot: p.snapshot, action: p.action })) };
    },
    gc: ({ authId, params, body }) => {
      const e = storeFor(authId, params.store, "write");
      if (!privs(authId, e.name, []).has("Datastore.Modify")) deny(authId, `run garbage collection on ${e.name}`);
      const { cutoffSeconds } = body;
      const t = startGc(authId, e, cutoffSeconds === undefined ? undefined : cutoffSeconds * 1000);
      return { json: { task: t.id } };
    },
    verify: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "read");
      const ns = parseNamespace(b.ns);
      let snaps: SnapshotInfo[] | undefined;
      if (b.snapshot !== undefined) {
        if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.verify) deny(authId, `verify ${b.snapshot}`);
        snaps = [await findSnap(e, ns, b.snapshot)];
      } else if (!privs(authId, e.name, ns).has("Datastore.Verify")) {
        deny(authId, `verify datastore ${e.name}`);
      }
      const t = startVerify(authId, e, { ns, snaps, target: b.snapshot, outdatedDays: b.outdatedDays });
      return { json: { task: t.id } };
    },
  };
}

/** What a snapshot's or a group's owner (or an admin) changes: notes, drill, protection, owner; forget. */
export function snapshotHandlers(ctx: ServerContext): ApiHandlers<typeof ROUTES, SnapshotRoute> {
  const { log, deny, storeFor, groupAcc, findSnap } = ctx;
  return {
    forgetSnapshot: async ({ authId, params, query }) => {
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(query.ns);
      // Permission before existence: no probing for snapshots of groups one may not see.
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(query.snapshot))).acc.prune) deny(authId, `forget ${query.snapshot}`);
      const s = await findSnap(e, ns, query.snapshot);
      await e.store.forget(s);
      log(`${authId} forgot ${e.name}:${formatSnapshot(s)}`);
      return { json: { ok: true } };
    },
    setNotes: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(b.ns);
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `change the notes of ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      if (!s.finished) throw new HttpError(400, `snapshot ${formatSnapshot(s)} is unfinished.`);
      await e.store.updateUnprotected(s, (u) => {
        u.notes = b.notes;
      });
      return { json: { ok: true } };
    },
    setDrill: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(b.ns);
      // Who may write a snapshot's notes may record its drill: the node's identity, with its own groups.
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `record a drill of ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      if (!s.finished) throw new HttpError(400, `snapshot ${formatSnapshot(s)} is unfinished.`);
      await e.store.setDrillState(s, b.state);
      log(`${authId} recorded a ${b.state.result} drill of ${e.name}:${formatSnapshot(s)}`);
      return { json: { ok: true } };
    },
    setProtected: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(b.ns);
      if (!(await groupAcc(authId, e, ns, parseSnapshotRef(b.snapshot))).acc.notes) deny(authId, `protect ${b.snapshot}`);
      const s = await findSnap(e, ns, b.snapshot);
      await e.store.setProtected(s, b.protected);
      return { json: { ok: true } };
    },
    setOwner: async ({ authId, params, body }) => {
      const b = body;
      const e = storeFor(authId, params.store, "write");
      const ns = parseNamespace(b.ns);
      const g = parseGroup(b.group);
      if (!(await groupAcc(authId, e, ns, g)).acc.changeOwner) deny(authId, `change the owner of ${b.group}`);
      if ((await e.store.listSnapshots(ns, g)).length === 0) throw new HttpError(404, `group ${b.group} does not exist.`);
      await e.store.setGroupOwner(ns, g, b.owner);
      log(`${authId} gave ${e.name}:${b.group} to ${b.owner}`);
      return { json: { ok: true } };
    },
  };
}

/** A snapshot's file archive browsed as folders and one file of it downloaded, for the server's own web view. */
export function contentHandlers(ctx: ServerContext): ApiHandlers<typeof ROUTES, ContentRoute> {
  const { log, deny, storeFor, groupAcc } = ctx;
  /** Permission before existence, as for every read: no probing for snapshots of groups one may not see. */
  const withReader = async <T>(authId: string, store: string, q: { ns?: string; snapshot: string }, fn: (r: SnapshotReader) => Promise<T>): Promise<T> => {
    const e = storeFor(authId, store, "read");
    const ns = parseNamespace(q.ns);
    const ref = parseSnapshotRef(q.snapshot);
    if (!(await groupAcc(authId, e, ns, ref)).acc.read) deny(authId, `read ${q.snapshot}`);
    const reader = await openLocalReader(e.store, ns, ref);
    try {
      return await fn(reader);
    } finally {
      await reader.close();
    }
  };
  return {
    browseSnapshot: async ({ authId, params, query }) => ({ json: await withReader(authId, params.store, query, (r) => browseArchive(r, query)) }),
    downloadSnapshotFile: async ({ authId, params, query }) => {
      const data = await withReader(authId, params.store, query, (r) => downloadArchiveFile(r, query));
      log(`${authId} downloaded ${query.path} of ${params.store}:${query.snapshot}/${query.archive}`);
      return { binary: data };
    },
  };
}
