// File-system helpers: sorted walks, repository size, restore verification.

import { createHash } from "node:crypto";
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from "node:fs";
import { join } from "node:path";

export function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function sortedEntries(dir: string): string[] {
  return readdirSync(dir).sort(byName);
}

/** Sum of the apparent sizes (st_size) of all regular files below dir. */
export function apparentSize(dir: string): number {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const name of names) {
      const p = join(d, name);
      let st: Stats;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile()) total += st.size;
    }
  }
  return total;
}

const BUF = 4 * 1024 * 1024;

export function sha256File(path: string, buf: Buffer = Buffer.allocUnsafe(BUF)): string {
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

/** Byte-compares two files. Returns null when equal, else a description. */
export function compareFiles(a: string, b: string): string | null {
  let sa: Stats;
  let sb: Stats;
  try {
    sa = lstatSync(a);
  } catch {
    return `missing ${a}`;
  }
  try {
    sb = lstatSync(b);
  } catch {
    return `missing ${b}`;
  }
  if (!sa.isFile() || !sb.isFile()) return "not a regular file";
  if (sa.size !== sb.size) return `size ${sb.size} != ${sa.size}`;
  const ba = Buffer.allocUnsafe(BUF);
  const bb = Buffer.allocUnsafe(BUF);
  const fa = openSync(a, "r");
  const fb = openSync(b, "r");
  try {
    let pos = 0;
    for (;;) {
      const na = readFull(fa, ba);
      const nb = readFull(fb, bb);
      if (na !== nb) return `length differs near byte ${pos}`;
      if (na === 0) return null;
      if (ba.compare(bb, 0, nb, 0, na) !== 0) {
        let i = 0;
        while (i < na && ba[i] === bb[i]) i++;
        return `first difference at byte ${pos + i}`;
      }
      pos += na;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function readFull(fd: number, buf: Buffer): number {
  let off = 0;
  while (off < buf.length) {
    const n = readSync(fd, buf, off, buf.length - off, null);
    if (n === 0) break;
    off += n;
  }
  return off;
}

export interface Entry {
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  size: number;
  mtimeMs: number;
  /** SHA-256 for files, link target for symlinks. */
  content: string;
}

/** Relative path -> entry for everything below root (root itself excluded). */
export function manifest(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const buf = Buffer.allocUnsafe(BUF);
  const walk = (dir: string, rel: string): void => {
    for (const name of sortedEntries(dir)) {
      const p = join(dir, name);
      const r = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(p);
      const mode = st.mode & 0o7777;
      const mtimeMs = Math.floor(st.mtimeMs);
      if (st.isDirectory()) {
        out.set(r, { type: "dir", mode, size: 0, mtimeMs, content: "" });
        walk(p, r);
      } else if (st.isSymbolicLink()) {
        out.set(r, { type: "symlink", mode: 0, size: 0, mtimeMs: 0, content: readlinkSync(p) });
      } else if (st.isFile()) {
        out.set(r, { type: "file", mode, size: st.size, mtimeMs, content: sha256File(p, buf) });
      } else {
        out.set(r, { type: "other", mode, size: 0, mtimeMs: 0, content: "" });
      }
    }
  };
  walk(root, "");
  return out;
}

export interface TreeDiff {
  entries: number;
  missing: number;
  extra: number;
  contentDiffers: number;
  modeDiffers: number;
  mtimeDiffers: number;
  examples: string[];
}

/** Compares a restored tree with its source. Directory mtimes are not compared. */
export function compareTrees(source: Map<string, Entry>, restored: Map<string, Entry>): TreeDiff {
  const d: TreeDiff = {
    entries: source.size,
    missing: 0,
    extra: 0,
    contentDiffers: 0,
    modeDiffers: 0,
    mtimeDiffers: 0,
    examples: [],
  };
  const note = (s: string): void => {
    if (d.examples.length < 5) d.examples.push(s);
  };
  for (const [path, a] of source) {
    const b = restored.get(path);
    if (!b) {
      d.missing++;
      note(`missing ${path}`);
      continue;
    }
    if (a.type !== b.type || a.size !== b.size || a.content !== b.content) {
      d.contentDiffers++;
      note(`differs ${path}`);
      continue;
    }
    if (a.mode !== b.mode && a.type !== "symlink") {
      d.modeDiffers++;
      note(`mode ${path}: ${b.mode.toString(8)} != ${a.mode.toString(8)}`);
    }
    if (a.type === "file" && a.mtimeMs !== b.mtimeMs) {
      d.mtimeDiffers++;
      note(`mtime ${path}`);
    }
  }
  for (const path of restored.keys()) {
    if (!source.has(path)) {
      d.extra++;
      note(`extra ${path}`);
    }
  }
  return d;
}

export function treeDiffOk(d: TreeDiff): boolean {
  return d.missing === 0 && d.extra === 0 && d.contentDiffers === 0;
}

export function describeTreeDiff(d: TreeDiff): string {
  if (treeDiffOk(d)) {
    const meta: string[] = [];
    if (d.modeDiffers > 0) meta.push(`${d.modeDiffers} modes differ`);
    if (d.mtimeDiffers > 0) meta.push(`${d.mtimeDiffers} mtimes differ`);
    return `ok, ${d.entries} entries identical` + (meta.length ? ` (${meta.join(", ")})` : "");
  }
  return `MISMATCH: ${d.missing} missing, ${d.extra} extra, ${d.contentDiffers} differ of ${d.entries}`;
}
