// Shared test helpers: temp dirs and a complete description of a directory tree.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { type TreeEntry, encodeEnd, encodeEntry, encodedSize, streamHeader } from "../src/format/tree-entry.ts";
import { lgetxattr, llistxattr } from "../src/sys/posix.ts";

export function tempDir(prefix = "gorde-test-"): { dir: string; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export const isRoot = process.geteuid?.() === 0;

/** mulberry32: a small seeded generator of numbers in [0, 1), so that a test's random data is the same on every run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Everything a restore must bring back, per path (names as hex, so non-UTF-8 is exact). */
export function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const rootBuf = Buffer.from(root);
  const links = new Map<string, string>();
  const visit = (abs: Buffer, rel: string): void => {
    const st = fs.lstatSync(abs, { bigint: true });
    const parts: string[] = [
      `mode=${st.mode.toString(8)}`,
      `uid=${st.uid}`,
      `gid=${st.gid}`,
      `mtime=${st.mtimeNs}`,
      `nlink=${st.isDirectory() ? "-" : st.nlink}`,
    ];
    if (st.isFile()) {
      parts.push(`size=${st.size}`, `sha=${createHash("sha256").update(fs.readFileSync(abs)).digest("hex")}`);
      const id = `${st.dev}:${st.ino}`;
      if (st.nlink > 1n) {
        if (!links.has(id)) links.set(id, rel);
        parts.push(`linkgroup=${links.get(id)}`);
      }
    }
    if (st.isSymbolicLink()) parts.push(`target=${fs.readlinkSync(abs, { encoding: "buffer" }).toString("hex")}`);
    if (st.isCharacterDevice() || st.isBlockDevice()) parts.push(`rdev=${st.rdev}`);
    const xattrs = llistxattr(abs)
      .sort(Buffer.compare)
      .map((n) => `${n.toString("hex")}=${lgetxattr(abs, n).toString("hex")}`);
    if (xattrs.length) parts.push(`xattrs=${xattrs.join(",")}`);
    out.set(rel, parts.join(" "));
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(abs, { encoding: "buffer" }).sort(Buffer.compare)) {
        visit(Buffer.concat([abs, Buffer.from("/"), name]), `${rel}/${name.toString("hex")}`);
      }
    }
  };
  visit(rootBuf, "");
  return out;
}

/** A file-archive entry for hand-built archives: owned by the current user, typical modes. */
export function treeEntry(kind: TreeEntry["kind"], p: string, extra: Partial<TreeEntry> = {}): TreeEntry {
  return {
    kind,
    path: Buffer.from(p),
    mode: (kind === "dir" ? 0o040755 : kind === "symlink" ? 0o120777 : 0o100644) >>> 0,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    mtimeNs: 1_700_000_000_000_000_000n,
    ctimeNs: 1_700_000_000_000_000_000n,
    ino: 0n,
    size: 0,
    offset: 0,
    rdev: 0n,
    link: Buffer.alloc(0),
    xattrs: [],
    ...extra,
  };
}

/** An entry stream of `entries`, its end record saying `count` (a lie when told to). */
export function entryStream(entries: TreeEntry[], count = entries.length): Buffer {
  const parts = [streamHeader()];
  let prevEnd = 0;
  for (const e of entries) {
    const b = Buffer.alloc(encodedSize(e));
    encodeEntry(e, b, 0, prevEnd);
    if (e.kind === "file") prevEnd = e.offset + e.size;
    parts.push(b);
  }
  parts.push(encodeEnd(count));
  return Buffer.concat(parts);
}
