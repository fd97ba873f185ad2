// A point-in-time view of a running VM's disk, exported over NBD (QEMU fleecing, the
// sequence in shared/notes/qemu-live-backup.md): a copy-before-write filter between the
// guest's device and its disk keeps the old data of every block the guest overwrites in
// a temporary qcow2, and a snapshot-access node over the filter is what the NBD export
// shows. The guest runs on; the view is the instant the filter was put in place.
import { execFile } from "node:child_process";

import fsp from "node:fs/promises";
import { promisify } from "node:util";
import { GordeError } from "../errors.ts";
import type { Qmp } from "./qemu.ts";

const run = promisify(execFile);

export interface LiveView {
  socket: string;
  exportName: string;
  /** the bitmap of changes since the last backup exported with the view (its NBD meta context is qemu:dirty-bitmap:<name>) */
  exportedBitmap?: string;
  /**
   * Removes the export and the filter, in the one order QEMU accepts. With bitmaps: after
   * a good backup the old one goes and the new one is the next base; after a failed one
   * the new one is merged back into the old, so no change since the last good backup is lost.
   */
  close(backupOk?: boolean): Promise<void>;
}

/** Removes an NBD export and waits (at most 5 s) until QEMU says it is gone: its clients are then cut off. */
async function deleteExport(qmp: Qmp, exportId: string): Promise<void> {
  const deleted = new Promise<void>((resolve) => {
    const off = qmp.onEvent((ev) => {
      if (ev.event === "BLOCK_EXPORT_DELETED") {
        off();
        resolve();
      }
    });
  });
  await qmp.execute("block-export-del", { id: exportId });
  await Promise.race([deleted, new Promise((r) => setTimeout(r, 5000))]);
}

/**
 * `node` is the disk's raw block node (disk0), `device` the guest's device id (vblk0).
 * On any failure the steps done so far are undone before the error is thrown.
 */
export async function openLiveView(
  qmp: Qmp,
  opts: {
    node: string;
    device: string;
    size: number;
    fleeceFile: string;
    socket: string;
    /** base: the bitmap of the last good backup (absent: a full read); next: the one to start now */
    bitmaps?: { base?: string; next: string };
    /**
     * QEMU has one NBD server: the first view of a VM starts it on `socket`, the views of its
     * other disks export on it too (`true`); close those before the first.
     */
    serverRunning?: boolean;
  },
): Promise<LiveView> {
  const { node, device } = opts;
  const fleece = `${node}-fleece`;
  const cbw = `${node}-cbw`;
  const snap = `${node}-snap`;
  const exportName = node;
  const undo: (() => Promise<unknown>)[] = [];
  /** undo steps of the bitmaps: on close, their fate depends on the backup's outcome */
  const bitmapSteps = new Set<() => Promise<unknown>>();
  const step = async (doIt: () => Promise<unknown>, undoIt?: () => Promise<unknown>, bitmap = false): Promise<void> => {
    await doIt();
    if (undoIt) undo.unshift(undoIt);
    if (undoIt && bitmap) bitmapSteps.add(undoIt);
  };
  try {
    await step(
      () => run("qemu-img", ["create", "-q", "-f", "qcow2", opts.fleeceFile, String(opts.size)]),
      () => fsp.rm(opts.fleeceFile, { force: true }),
    );
    await step(
      () => qmp.execute("blockdev-add", { driver: "qcow2", "node-name": fleece, file: { driver: "file", filename: opts.fleeceFile } }),
      () => qmp.execute("blockdev-del", { "node-name": fleece }),
    );
    // A failing fleece target breaks the view, never the guest's writes.
    await step(
      () => qmp.execute("blockdev-add", { driver: "copy-before-write", "node-name": cbw, file: node, target: fleece, "on-cbw-error": "break-snapshot" }),
      () => qmp.execute("blockdev-del", { "node-name": cbw }),
    );
    const bm = opts.bitmaps;
    // Added before the instant: writes in between are counted in both bitmaps (harmless).
    if (bm) {
      await step(
        () => qmp.execute("block-dirty-bitmap-add", { node, name: bm.next }),
        () => qmp.execute("block-dirty-bitmap-remove", { node, name: bm.next }),
        true,
      );
    }
    // This is the point in time.
    await step(
      () => qmp.execute("qom-set", { path: `/machine/peripheral/${device}`, property: "drive", value: cbw }),
      () => qmp.execute("qom-set", { path: `/machine/peripheral/${device}`, property: "drive", value: node }),
    );
    if (bm?.base) {
      const base = bm.base;
      await step(
        () => qmp.execute("block-dirty-bitmap-disable", { node, name: base }),
        () => qmp.execute("block-dirty-bitmap-enable", { node, name: base }),
        true,
      );
    }
    await step(
      () => qmp.execute("blockdev-add", { driver: "snapshot-access", "node-name": snap, file: cbw }),
      () => qmp.execute("blockdev-del", { "node-name": snap }),
    );
    if (!opts.serverRunning) {
      await step(
        () => qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: opts.socket } } }),
        () => qmp.execute("nbd-server-stop"),
      );
    }
    const exportId = `${node}-export`;
    await step(
      () =>
        qmp.execute("block-export-add", {
          type: "nbd",
          id: exportId,
          "node-name": snap,
          name: exportName,
          writable: false,
          ...(bm?.base ? { bitmaps: [{ node, name: bm.base }] } : {}),
        }),
      () => deleteExport(qmp, exportId),
    );
  } catch (err) {
    for (const u of undo) await u().catch(() => undefined);
    throw err instanceof GordeError ? err : new GordeError("io", `cannot open a live view of ${node}: ${(err as Error).message}.`);
  }
  let closed = false;
  const bm = opts.bitmaps;
  return {
    socket: opts.socket,
    exportName,
    exportedBitmap: bm?.base,
    async close(backupOk = false) {
      if (closed) return;
      closed = true;
      const errors: string[] = [];
      // Everything but the bitmaps is undone; what happens to them depends on the backup.
      const keepBitmaps = undo.filter((u) => !bitmapSteps.has(u));
      for (const u of keepBitmaps) await u().catch((e: Error) => errors.push(e.message));
      if (bm) {
        const run = (cmd: string, args: Record<string, unknown>): Promise<unknown> => qmp.execute(cmd, args).catch((e: Error) => errors.push(e.message));
        if (backupOk) {
          if (bm.base) await run("block-dirty-bitmap-remove", { node, name: bm.base });
        } else if (bm.base) {
          await run("block-dirty-bitmap-enable", { node, name: bm.base });
          await run("block-dirty-bitmap-merge", { node, target: bm.base, bitmaps: [bm.next] });
          await run("block-dirty-bitmap-remove", { node, name: bm.next });
        } else {
          await run("block-dirty-bitmap-remove", { node, name: bm.next });
        }
      }
      if (errors.length) throw new GordeError("io", `the live view of ${node} did not close cleanly: ${errors[0]}`);
    },
  };
}

