// A VM disk's live view as a block image to back up: data extents from NBD block status
// (base:allocation), chunks changed since the last backup from the exported dirty bitmap,
// and reads over gorde's NBD client.
import type { BlockReader } from "../client/image-archive.ts";
import { type Extent, NbdClient } from "./nbd-client.ts";

/** Merged [start, end) ranges of the extents `keep` selects. */
function ranges(extents: Extent[], keep: (flags: number) => boolean): [number, number][] {
  const out: [number, number][] = [];
  for (const e of extents) {
    if (!keep(e.flags)) continue;
    const last = out.at(-1);
    if (last && last[1] === e.offset) last[1] = e.offset + e.length;
    else out.push([e.offset, e.offset + e.length]);
  }
  return out;
}

/**
 * `dirtyBitmap`: the exported bitmap of changes since snapshot `changedSince`; a backup whose
 * base is another snapshot reads the whole disk.
 */
export async function openNbdSource(opts: {
  socket: string;
  exportName: string;
  dirtyBitmap?: string;
  changedSince?: string;
}): Promise<BlockReader & { close(): Promise<void> }> {
  const dirtyCtx = opts.dirtyBitmap ? `qemu:dirty-bitmap:${opts.dirtyBitmap}` : undefined;
  const nbd = await NbdClient.connect({ socket: opts.socket, exportName: opts.exportName, metaContexts: ["base:allocation", ...(dirtyCtx ? [dirtyCtx] : [])] });
  return {
    name: `NBD export ${opts.exportName}`,
    size: nbd.size,
    // Bit 1 (zero): reads as zeros, so no need to read it.
    dataExtents: async () => ranges(await nbd.blockStatus("base:allocation", 0, nbd.size), (f) => (f & 2) === 0),
    changedExtents: dirtyCtx
      ? async (base) => (base === opts.changedSince ? ranges(await nbd.blockStatus(dirtyCtx, 0, nbd.size), (f) => (f & 1) === 1) : undefined)
      : undefined,
    read: async (buf, pos) => void (await nbd.read(pos, buf.length, buf)),
    close: () => nbd.close(),
  };
}
