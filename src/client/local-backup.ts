// A backup session on a local datastore: the group lock, the base snapshot, the snapshot
// directory, and the manifest written last.
import fsp from "node:fs/promises";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { type Datastore, type Lock, MANIFEST_FILE, lockDir } from "../datastore/datastore.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { loadArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import type { FixedIndex } from "../format/fixed-index.ts";
import { DIGEST_SIZE } from "../format/magic.ts";
import { encodeManifest } from "../format/manifest.ts";
import { type SnapshotRef, formatSnapshot, formatTime } from "../format/names.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";

export async function openLocalBackup(store: Datastore, req: SessionRequest): Promise<BackupSession> {
  const { ns, group } = req;
  const locks: Lock[] = [store.lockGroup(ns, group)];
  let snapDir: string | undefined;
  const release = (): void => {
    for (const l of locks.reverse()) l.release();
    locks.length = 0;
  };
  const abort = async (): Promise<void> => {
    if (snapDir !== undefined) {
      await fsp.rm(snapDir, { recursive: true, force: true });
      // A group whose first backup failed leaves no empty directory behind.
      await fsp.rmdir(path.dirname(snapDir)).catch(() => undefined);
    }
    release();
  };
  try {
    const existing = await store.listSnapshots(ns, group);
    const last = existing.at(-1);
    let time = req.time ?? Math.floor(Date.now() / 1000);
    if (last && time <= last.time) {
      if (req.time !== undefined) {
        throw new GordeError(
          "usage",
          `snapshot time ${formatTime(time)} is not newer than the group's last snapshot ${formatTime(last.time)}.`,
        );
      }
      time = last.time + 1; // two backups within one second
    }
    // The base is the newest finished snapshot whose last verification did not fail.
    const base = existing.filter((s) => s.finished && s.manifest?.unprotected.verify?.state !== "failed").at(-1);
    if (base) locks.push(lockDir(base.dir, "sh", `snapshot ${formatSnapshot(base)}`));
    locks.push(store.registerBackup(req.startedMs));
    const ref: SnapshotRef = { ...group, time };
    snapDir = store.snapshotDir(ns, ref);
    await fsp.mkdir(snapDir);
    const dir = snapDir;
    // Held until the end: forget and prune cannot remove a snapshot being written.
    locks.push(lockDir(dir, "sh", `snapshot ${formatSnapshot(ref)}`));
    return {
      ref,
      base: base?.manifest ? { name: formatSnapshot(base), manifest: base.manifest } : null,
      target: { kind: "local", store: store.chunks },
      chunkDir: store.chunks.dir,
      baseIndexes: async (archive) => (base ? loadArchiveIndexes(store, base, archive) : undefined),
      baseLoader: (pool) => pool,
      allStored: (index) => Promise.resolve(allStored(index, (hex) => store.chunks.exists(hex))),
      writeIndex: (file, bytes) => writeFileAtomic(path.join(dir, file), bytes),
      async finish(manifest) {
        // Chunk files were made durable in batches; this makes their directory entries
        // durable before the manifest can name them.
        await store.chunks.sync();
        await writeFileAtomic(path.join(dir, MANIFEST_FILE), encodeManifest(manifest));
        release();
      },
      abort,
    };
  } catch (err) {
    await abort();
    throw err;
  }
}

/** True when every distinct chunk of `index` passes `exists`. */
export function allStored(index: FixedIndex, exists: (hex: string) => boolean): boolean {
  const seen = new Set<string>();
  for (let o = 0; o < index.digests.length; o += DIGEST_SIZE) {
    const hex = index.digests.toString("hex", o, o + DIGEST_SIZE);
    if (seen.has(hex)) continue;
    seen.add(hex);
    if (!exists(hex)) return false;
  }
  return true;
}
