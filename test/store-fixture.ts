// Datastores written by hand with the format codecs, for tests of the datastore layer
// that must not depend on the backup code (GC, verify).
import { createHash, randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { encodeBlob } from "../src/format/blob.ts";
import { DynamicIndexBuilder, encodeDynamicIndex } from "../src/format/dynamic-index.ts";
import { encodeFixedIndex } from "../src/format/fixed-index.ts";
import { type ArchiveEntry, encodeManifest, sha256Hex } from "../src/format/manifest.ts";
import type { Group } from "../src/format/names.ts";
import { Datastore, MANIFEST_FILE, type SnapshotInfo } from "../src/datastore/datastore.ts";

export const CHUNK = 64 * 1024;
export const T = Date.parse("2024-06-01T00:00:00Z") / 1000;
export const VM: Group = { type: "vm", id: "100" };

const roots: string[] = [];

/** A new datastore in a temp directory; removeStores() deletes them all. */
export async function newStore(prefix = "gorde-store-"): Promise<Datastore> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  roots.push(root);
  return Datastore.init(path.join(root, "store"));
}

export async function removeStores(): Promise<void> {
  for (const r of roots.splice(0)) await fsp.rm(r, { recursive: true, force: true });
}

/** A chunk's data: random (stored plain) or a repeated pattern (stored compressed). */
export function data(compressible = false): Buffer {
  if (!compressible) return randomBytes(CHUNK);
  const b = Buffer.alloc(CHUNK);
  b.fill(randomBytes(16).toString("hex"));
  return b;
}

export const hexOf = (d: Buffer): string => createHash("sha256").update(d).digest("hex");

export function put(store: Datastore, d: Buffer): Promise<string> {
  const hex = hexOf(d);
  if (!store.chunks.exists(hex)) store.chunks.insert(hex, encodeBlob(d));
  return Promise.resolve(hex);
}

export interface Content {
  img?: Buffer[];
  tree?: { entries: Buffer[]; payload: Buffer[] };
}

/** Writes a snapshot by hand: chunks, index files and (when finished) a manifest. */
export async function makeSnapshot(
  store: Datastore,
  time: number,
  content: Content,
  { ns = [] as string[], group = VM, finished = true } = {},
): Promise<SnapshotInfo> {
  const dir = store.snapshotDir(ns, { ...group, time });
  await fsp.mkdir(dir, { recursive: true });
  const archives: ArchiveEntry[] = [];
  const write = async (file: string, bytes: Buffer) => {
    await fsp.writeFile(path.join(dir, file), bytes);
    return { file, csum: sha256Hex(bytes), size: bytes.length };
  };
  if (content.img) {
    const digests: Buffer[] = [];
    for (const d of content.img) digests.push(Buffer.from(await put(store, d), "hex"));
    const size = content.img.length * CHUNK;
    const bytes = encodeFixedIndex({ ctime: time, size, chunkSize: CHUNK, digests: Buffer.concat(digests) });
    archives.push({ name: "disk.img", kind: "img", size, indexes: [await write("disk.img.fidx", bytes)] });
  }
  if (content.tree) {
    const indexes = [];
    let size = 0;
    for (const part of ["entries", "payload"] as const) {
      const b = new DynamicIndexBuilder();
      for (const d of content.tree[part]) b.add(d.length, Buffer.from(await put(store, d), "hex"));
      const idx = b.build(time);
      if (part === "payload") size = idx.size;
      indexes.push(await write(`files.tree.${part}.didx`, encodeDynamicIndex(idx)));
    }
    archives.push({ name: "files.tree", kind: "tree", size, indexes });
  }
  if (finished) {
    const manifest = encodeManifest({
      format: 1,
      type: group.type,
      id: group.id,
      time,
      archives,
      cryptMode: "none",
      keyFingerprint: null,
      unprotected: {},
    });
    await fsp.writeFile(path.join(dir, MANIFEST_FILE), manifest);
  }
  return store.snapshotInfo(ns, { ...group, time });
}

