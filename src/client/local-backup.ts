// A backup session on a local datastore: the snapshot writer (group lock, base, snapshot
// directory, manifest last) behind the session interface that a backup runs through.
import { loadArchiveIndexes } from "../datastore/snapshot-indexes.ts";
import type { Datastore } from "../datastore/datastore.ts";
import { SnapshotWriter } from "../datastore/snapshot-writer.ts";
import type { FixedIndex } from "../format/fixed-index.ts";
import { DIGEST_SIZE } from "../format/magic.ts";
import { formatSnapshot } from "../format/names.ts";
import type { BackupSession, SessionRequest } from "./backup-session.ts";

export async function openLocalBackup(store: Datastore, req: SessionRequest): Promise<BackupSession> {
  const writer = await SnapshotWriter.open(store, { ns: req.ns, group: req.group, time: req.time, startedMs: req.startedMs });
  const base = writer.base;
  return {
    ref: writer.ref,
    base: base?.manifest ? { name: formatSnapshot(base), manifest: base.manifest } : null,
    target: { kind: "local", writer },
    chunkDir: store.chunks.dir,
    baseIndexes: async (archive) => (base ? loadArchiveIndexes(store, base, archive) : undefined),
    baseLoader: (pool) => pool,
    allStored: (index) => Promise.resolve(allStored(index, (hex) => store.chunks.exists(hex))),
    writeIndex: (file, bytes) => writer.writeIndex(file, bytes),
    finish: (manifest) => writer.finish(manifest),
    abort: () => writer.abort(),
  };
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
