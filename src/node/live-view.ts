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
  /** removes the export and the filter, in the one order QEMU accepts */
  close(): Promise<void>;
}

/**
 * `node` is the disk's raw block node (disk0), `device` the guest's device id (vblk0).
 * On any failure the steps done so far are undone before the error is thrown.
 */
export async function openLiveView(qmp: Qmp, opts: { node: string; device: string; size: number; fleeceFile: string; socket: string }): Promise<LiveView> {
  const { node, device } = opts;
  const fleece = `${node}-fleece`;
  const cbw = `${node}-cbw`;
  const snap = `${node}-snap`;
  const exportName = node;
  const undo: (() => Promise<unknown>)[] = [];
  const step = async (doIt: () => Promise<unknown>, undoIt?: () => Promise<unknown>): Promise<void> => {
    await doIt();
    if (undoIt) undo.unshift(undoIt);
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
    // This is the point in time.
    await step(
      () => qmp.execute("qom-set", { path: `/machine/peripheral/${device}`, property: "drive", value: cbw }),
      () => qmp.execute("qom-set", { path: `/machine/peripheral/${device}`, property: "drive", value: node }),
    );
    await step(
      () => qmp.execute("blockdev-add", { driver: "snapshot-access", "node-name": snap, file: cbw }),
      () => qmp.execute("blockdev-del", { "node-name": snap }),
    );
    await step(
      () => qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: opts.socket } } }),
      () => qmp.execute("nbd-server-stop"),
    );
    const exportId = `${node}-export`;
    await step(
      () => qmp.execute("block-export-add", { type: "nbd", id: exportId, "node-name": snap, name: exportName, writable: false }),
      async () => {
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
      },
    );
  } catch (err) {
    for (const u of undo) await u().catch(() => undefined);
    throw err instanceof GordeError ? err : new GordeError("io", `cannot open a live view of ${node}: ${(err as Error).message}.`);
  }
  let closed = false;
  return {
    socket: opts.socket,
    exportName,
    async close() {
      if (closed) return;
      closed = true;
      const errors: string[] = [];
      for (const u of undo) await u().catch((e: Error) => errors.push(e.message));
      if (errors.length) throw new GordeError("io", `the live view of ${node} did not close cleanly: ${errors[0]}`);
    },
  };
}

