// Datastore status: file system usage, chunk count and bytes, logical size and the dedup
// factor. Counting chunks walks the chunk store, so the figures are cached for a minute.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Datastore } from "./datastore.ts";
import { namespaceTree } from "./verify.ts";

/** Below this share of free space (or 1 GiB) the status warns. */
export const FULL_WARNING_RATIO = 0.1;
const CACHE_MS = 60_000;
const cache = new WeakMap<Datastore, { at: number; value: Counts }>();

interface Counts {
  chunks: number;
  chunkBytes: number;
  logicalBytes: number;
  snapshots: number;
  groups: number;
}

/** `cached: false` counts anew and leaves the cache alone (the usage history's samples: a sample taken just before a backup must not make a status after it stale). */
export async function datastoreStatus(store: Datastore, opts: { cached?: boolean } = {}) {
  const st = await fsp.statfs(store.dir);
  const total = st.blocks * st.bsize;
  const available = st.bavail * st.bsize;
  const used = total - st.bfree * st.bsize;
  const counts = opts.cached === false ? await count(store) : await countCached(store);
  let warning: string | null = null;
  if (available < total * FULL_WARNING_RATIO || available < 1024 ** 3) {
    warning = `only ${(available / 1024 ** 3).toFixed(1)} GiB (${((available / total) * 100).toFixed(0)}%) free: backups will fail when it is full.`;
  }
  return {
    total,
    used,
    available,
    ...counts,
    dedupFactor: counts.chunkBytes > 0 ? counts.logicalBytes / counts.chunkBytes : 1,
    warning,
  };
}

async function countCached(store: Datastore): Promise<Counts> {
  const c = cache.get(store);
  if (c && Date.now() - c.at < CACHE_MS) return c.value;
  const value = await count(store);
  cache.set(store, { at: Date.now(), value });
  return value;
}

async function count(store: Datastore): Promise<Counts> {
  let chunks = 0;
  let chunkBytes = 0;
  for (const shard of await fsp.readdir(store.chunks.dir).catch(() => [] as string[])) {
    const dir = path.join(store.chunks.dir, shard);
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (name.length !== 64) continue;
      const s = fs.statSync(path.join(dir, name), { throwIfNoEntry: false });
      if (!s) continue;
      chunks++;
      chunkBytes += s.size;
    }
  }
  let logicalBytes = 0;
  let snapshots = 0;
  let groups = 0;
  for (const ns of await namespaceTree(store, [])) {
    for (const g of await store.listGroups(ns)) {
      groups++;
      for (const s of await store.listSnapshots(ns, g)) {
        if (!s.manifest) continue;
        snapshots++;
        logicalBytes += s.manifest.archives.reduce((n, a) => n + a.size, 0);
      }
    }
  }
  return { chunks, chunkBytes, logicalBytes, snapshots, groups };
}
