// Loads an archive's index files from a snapshot, checked against the manifest.
import path from "node:path";
import { GordeError, corrupt } from "../errors.ts";
import type { Datastore, SnapshotInfo } from "./datastore.ts";
import { type DynamicIndex, decodeDynamicIndex } from "../format/dynamic-index.ts";
import { type FixedIndex, decodeFixedIndex } from "../format/fixed-index.ts";
import { type Manifest, sha256Hex } from "../format/manifest.ts";
import { formatSnapshot } from "../format/names.ts";
import { readRegularFile } from "../sys/bounded-read.ts";
import { MAX_INDEX_FILE_SIZE } from "../format/magic.ts";

export type ArchiveIndexes =
  | { kind: "img"; index: FixedIndex }
  | { kind: "tree"; entries: DynamicIndex; payload: DynamicIndex };

export async function loadArchiveIndexes(_store: Datastore, snap: SnapshotInfo, archive: string): Promise<ArchiveIndexes> {
  const where = formatSnapshot(snap);
  if (!snap.manifest) throw new GordeError("usage", `snapshot ${where} is unfinished.`);
  return readArchiveIndexes(snap.manifest, archive, where, async (file) => {
    try {
      return await readRegularFile(path.join(snap.dir, file), MAX_INDEX_FILE_SIZE, `index ${file} of ${where}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw corrupt(`index ${file} of ${where} is missing.`);
      throw err;
    }
  });
}

/** An archive's indexes, read by `read` (a file of the snapshot, local or fetched) and checked against the manifest. */
export async function readArchiveIndexes(
  manifest: Manifest,
  archive: string,
  where: string,
  read: (file: string) => Promise<Buffer>,
): Promise<ArchiveIndexes> {
  const entry = manifest.archives.find((a) => a.name === archive);
  if (!entry) {
    const have = manifest.archives.map((a) => a.name).join(", ");
    throw new GordeError("not-found", `snapshot ${where} has no archive ${archive} (it has: ${have || "none"}).`);
  }
  const files: Buffer[] = [];
  for (const f of entry.indexes) {
    const bytes = await read(f.file);
    if (bytes.length !== f.size || sha256Hex(bytes) !== f.csum) {
      throw corrupt(`index ${f.file} of ${where} does not match the checksum in its manifest.`);
    }
    files.push(bytes);
  }
  if (entry.kind === "img") {
    if (files.length !== 1) throw corrupt(`archive ${archive} of ${where} should have one index file.`);
    const index = decodeFixedIndex(files[0]!, `index ${entry.indexes[0]!.file} of ${where}`);
    if (index.size !== entry.size) throw corrupt(`index of ${archive} in ${where} disagrees with the manifest on its size.`);
    return { kind: "img", index };
  }
  if (files.length !== 2) throw corrupt(`archive ${archive} of ${where} should have two index files.`);
  const entries = decodeDynamicIndex(files[0]!, `index ${entry.indexes[0]!.file} of ${where}`);
  const payload = decodeDynamicIndex(files[1]!, `index ${entry.indexes[1]!.file} of ${where}`);
  return { kind: "tree", entries, payload };
}
