// Reads a file archive's entry stream (the catalog) without touching its payload.
import type { ChunkReader } from "../datastore/chunk-reader.ts";
import type { DynamicIndex } from "../format/dynamic-index.ts";
import { corrupt } from "../errors.ts";
import { type TreeEntry, decodeEntries } from "../format/tree-entry.ts";

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
