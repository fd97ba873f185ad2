// The node's storages, as PVE lists a Proxmox Backup Server storage: the backup server's
// datastore the node backs up to, reached with the node's own identity there. What a user
// of the node may do with it is the node's to decide, on /storage/<name> (PVE's
// Datastore.Audit to browse, Datastore.AllocateSpace to change or forget a snapshot).
import { NODE_ROUTES } from "../api/node-routes.ts";
import type { RemoteRepository } from "../client/remote.ts";
import { browseArchive, downloadArchiveFile } from "../datastore/archive-browse.ts";
import type { SnapshotReader } from "../client/restore.ts";
import { parseGroup, parseSnapshotRef } from "../format/names.ts";
import { denied } from "../host/access-handlers.ts";
import type { ApiHandlers } from "../host/api-host.ts";
import type { AuthStore, Privilege } from "../host/auth.ts";
import { HttpError } from "../host/http.ts";
import type { NodeConfig } from "./node-config.ts";

/** The largest file a web download reads into memory. */

type StorageRoute = "listStorages" | "storageStatus" | "storageHistory" | "browseArchive" | "downloadFile" | "storageSnapshots" | "setStorageNotes" | "setStorageProtected" | "forgetStorageSnapshot";

/** The storage's name: the datastore's, from the server URL of the node's configuration. */
export function storageName(config: NodeConfig): string {
  return decodeURIComponent(new URL(config.server.url).pathname.replace(/^\/+|\/+$/g, ""));
}

export function storageHandlers(parts: { auth: AuthStore; config: NodeConfig; repository: () => Promise<RemoteRepository>; log: (line: string) => void }): ApiHandlers<typeof NODE_ROUTES, StorageRoute> {
  const { auth, config, log } = parts;
  const name = storageName(config);
  const need = (authId: string, storage: string, priv: Privilege, what: string): void => {
    // A storage the caller may not see answers as a missing one.
    if (storage !== name || !auth.can(authId, `/storage/${storage}`, "Datastore.Audit")) throw new HttpError(404, `no storage ${storage} on node ${config.name}.`);
    if (!auth.can(authId, `/storage/${storage}`, priv)) throw denied(authId, what);
  };
  /** The contents of a guest's backup: the storage's Audit and VM.Backup on the guest, as PVE's file restore asks. */
  const guestData = (authId: string, storage: string, snapshot: string): void => {
    need(authId, storage, "Datastore.Audit", `browse storage ${storage}`);
    const ref = parseSnapshotRef(snapshot);
    if (ref.type === "host") throw new HttpError(400, `${snapshot} is a host backup, not a guest's.`);
    if (!auth.can(authId, `/vms/${ref.id}`, "VM.Backup")) throw denied(authId, `read the backups of guest ${ref.id}`);
  };
  const withReader = <T>(snapshot: string, fn: (r: SnapshotReader) => Promise<T>): Promise<T> =>
    withRepo(async (repo) => {
      const reader = await repo.openReader([], snapshot);
      try {
        return await fn(reader);
      } finally {
        await reader.close();
      }
    });
  const withRepo = async <T>(fn: (repo: RemoteRepository) => Promise<T>): Promise<T> => {
    const repo = await parts.repository();
    try {
      return await fn(repo);
    } finally {
      repo.close();
    }
  };
  return {
    listStorages: ({ authId }) => ({
      json: auth.can(authId, `/storage/${name}`, "Datastore.Audit") ? [{ storage: name, server: config.server.url.replace(/\/\/[^@]*@/, "//"), type: "gorde" as const }] : [],
    }),
    storageStatus: async ({ authId, params }) => {
      need(authId, params.storage, "Datastore.Audit", `see storage ${params.storage}`);
      return { json: NODE_ROUTES.storageStatus.response.parse(await withRepo((repo) => repo.status())) };
    },
    storageHistory: async ({ authId, params }) => {
      need(authId, params.storage, "Datastore.Audit", `see storage ${params.storage}`);
      return { json: await withRepo((repo) => repo.usageHistory()) };
    },
    browseArchive: async ({ authId, params, query }) => {
      guestData(authId, params.storage, query.snapshot);
      return { json: await withReader(query.snapshot, (r) => browseArchive(r, query)) };
    },
    downloadFile: async ({ authId, params, query }) => {
      guestData(authId, params.storage, query.snapshot);
      const data = await withReader(query.snapshot, (r) => downloadArchiveFile(r, query));
      log(`${authId} downloaded ${query.path} of ${query.snapshot}/${query.archive} from storage ${params.storage}`);
      return { binary: data };
    },
    storageSnapshots: async ({ authId, params, query }) => {
      need(authId, params.storage, "Datastore.Audit", `browse storage ${params.storage}`);
      return { json: await withRepo((repo) => repo.snapshots([], query.group ? parseGroup(query.group) : undefined)) };
    },
    setStorageNotes: async ({ authId, params, body }) => {
      need(authId, params.storage, "Datastore.AllocateSpace", `change snapshots in storage ${params.storage}`);
      await withRepo((repo) => repo.setNotes([], body.snapshot, body.notes));
      log(`${authId} set the notes of ${body.snapshot} in storage ${params.storage}`);
      return { json: { ok: true } };
    },
    setStorageProtected: async ({ authId, params, body }) => {
      need(authId, params.storage, "Datastore.AllocateSpace", `change snapshots in storage ${params.storage}`);
      await withRepo((repo) => repo.setProtected([], body.snapshot, body.protected));
      log(`${authId} ${body.protected ? "protected" : "unprotected"} ${body.snapshot} in storage ${params.storage}`);
      return { json: { ok: true } };
    },
    forgetStorageSnapshot: async ({ authId, params, query }) => {
      need(authId, params.storage, "Datastore.AllocateSpace", `forget snapshots in storage ${params.storage}`);
      await withRepo((repo) => repo.forget([], query.snapshot));
      log(`${authId} forgot ${query.snapshot} in storage ${params.storage}`);
      return { json: { ok: true } };
    },
  };
}
