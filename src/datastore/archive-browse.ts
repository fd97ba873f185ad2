// A file archive browsed as folders and one file taken out of it, as the web interface
// shows them: on a node (the backup server's datastore read through the node's identity)
// and on the server (its datastore read directly), the same entries and the same bound on a
// download. Every chunk is checked against its digest as it is read.
import { parseSnapshotRef } from "../format/names.ts";
import { type SnapshotReader, listEntries, readArchiveFile } from "./snapshot-reader.ts";

/** One entry as the web interface shows it (the API's ArchiveEntrySchema): mtime in unix seconds. */
export interface BrowsedEntry {
  name: string;
  path: string;
  kind: string;
  size: number;
  mtime: number;
}

/** The largest file a browser download takes; `gorde restore --path` takes any. */
export const MAX_DOWNLOAD = 64 * 1024 * 1024;

/** The entries directly under `path` (the archive's root when absent). */
export async function browseArchive(reader: SnapshotReader, q: { snapshot: string; archive: string; path?: string }): Promise<BrowsedEntry[]> {
  const entries = await listEntries(reader, { snapshot: parseSnapshotRef(q.snapshot), archive: q.archive, path: q.path });
  return entries.map((e) => {
    const p = e.path.toString();
    return { name: p.slice(p.lastIndexOf("/") + 1), path: p, kind: e.kind, size: e.size, mtime: Number(e.mtimeNs / 1_000_000_000n) };
  });
}

/** One regular file's bytes, at most MAX_DOWNLOAD of them. */
export async function downloadArchiveFile(reader: SnapshotReader, q: { archive: string; path: string }): Promise<Buffer> {
  return (await readArchiveFile(reader, { archive: q.archive, path: q.path, maxBytes: MAX_DOWNLOAD })).data;
}
