// Reads a file archive's entry stream (the catalog) without touching its payload, and picks
// the entries at a path and below.
import type { ChunkReader } from "./chunk-reader.ts";
import type { DynamicIndex } from "../format/dynamic-index.ts";
import { GordeError, corrupt } from "../errors.ts";
import { type TreeEntry, decodeEntries, isSafeRelativePath } from "../format/tree-entry.ts";

/** Entry streams above this size are refused (about ten million entries). */
const MAX_ENTRY_STREAM = 2 * 1024 * 1024 * 1024;

export async function readTreeEntries(entries: DynamicIndex, payloadSize: number, reader: ChunkReader): Promise<TreeEntry[]> {
  if (entries.size > MAX_ENTRY_STREAM) throw corrupt(`the entry stream of ${entries.size} bytes is too large.`);
  const parts = await Promise.all(
    Array.from({ length: entries.count }, async (_, i) => {
      const data = await reader.read(entries.digest(i).toString("hex"));
      if (data.length !== entries.end(i) - entries.start(i)) {
        throw corrupt(`chunk ${entries.digest(i).toString("hex")} has a different size than its index says.`);
      }
      return data;
    }),
  );
  return decodeEntries(Buffer.concat(parts), payloadSize);
}

const SLASH = Buffer.from("/");

/** The entries at `sub` and below, plus the directories above it; refuses a missing path. */
export function selectEntries(entries: TreeEntry[], sub: string | undefined): TreeEntry[] {
  if (sub === undefined) return entries;
  const want = Buffer.from(sub.replace(/^\/+|\/+$/g, ""));
  if (want.length === 0) return entries;
  if (!isSafeRelativePath(want)) throw new GordeError("usage", `"${sub}" is not a path inside the archive.`);
  const prefix = Buffer.concat([want, SLASH]);
  const picked = entries.filter(
    (e) =>
      e.path.equals(want) ||
      (e.path.length > want.length && e.path.subarray(0, prefix.length).equals(prefix)) ||
      (e.kind === "dir" && (e.path.length === 0 || prefix.subarray(0, e.path.length + 1).equals(Buffer.concat([e.path, SLASH])))),
  );
  if (!picked.some((e) => e.path.equals(want))) throw new GordeError("not-found", `the archive has no entry "${sub}".`);
  return picked;
}
