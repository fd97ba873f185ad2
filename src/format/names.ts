// Names that become path components: groups, ids, namespaces, archives, snapshot times.
// Everything here is validated before it touches the file system (docs/format.md, "Names").
import { GordeError } from "../errors.ts";

export const BACKUP_TYPES = ["vm", "ct", "host"] as const;
export type BackupType = (typeof BACKUP_TYPES)[number];

export interface Group {
  type: BackupType;
  id: string;
}

export interface SnapshotRef extends Group {
  /** unix seconds */
  time: number;
}

const ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const ARCHIVE_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,120}\.(img|tree)$/;
const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

function usage(message: string): GordeError {
  return new GordeError("usage", message);
}

export function isBackupType(s: string): s is BackupType {
  return (BACKUP_TYPES as readonly string[]).includes(s);
}

export function parseGroup(s: string): Group {
  const parts = s.split("/");
  const [type, id] = parts;
  if (parts.length !== 2 || type === undefined || id === undefined || !isBackupType(type)) {
    throw usage(`"${s}" is not a backup group: expected vm/<id>, ct/<id> or host/<name>.`);
  }
  if (!ID_RE.test(id)) {
    throw usage(`"${id}" is not a valid backup id: use letters, digits, '.', '_' and '-' (not first).`);
  }
  return { type, id };
}

export function formatGroup(g: Group): string {
  return `${g.type}/${g.id}`;
}

export function parseNamespace(s: string | undefined): string[] {
  if (s === undefined || s === "" || s === "/") return [];
  const parts = s.split("/").filter((p) => p !== "");
  if (parts.length > 8) throw usage(`namespace "${s}" is deeper than 8 levels.`);
  for (const p of parts) {
    if (!ID_RE.test(p)) throw usage(`"${p}" is not a valid namespace name.`);
  }
  return parts;
}

export function parseArchiveName(s: string): { name: string; kind: "img" | "tree" } {
  const m = ARCHIVE_RE.exec(s);
  if (!m) {
    throw usage(`"${s}" is not a valid archive name: expected <name>.img or <name>.tree with letters, digits, '.', '_', '-'.`);
  }
  return { name: s, kind: m[1] as "img" | "tree" };
}

export function formatTime(t: number): string {
  return new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Parses YYYY-MM-DDTHH:MM:SSZ exactly (the form snapshot directories use). */
export function parseSnapshotTime(s: string): number | undefined {
  const m = TIME_RE.exec(s);
  if (!m) return undefined;
  const t = Date.parse(s);
  if (Number.isNaN(t) || formatTime(t / 1000) !== s) return undefined;
  return t / 1000;
}

/** Parses any ISO 8601 date-time the CLI accepts for --time; whole seconds. */
export function parseTimeOption(s: string): number {
  const t = Date.parse(s);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}T/.test(s)) throw usage(`"${s}" is not an ISO 8601 date-time.`);
  if (t % 1000 !== 0) throw usage(`"${s}" has fractions of a second; snapshot times are whole seconds.`);
  return t / 1000;
}

export function formatSnapshot(r: SnapshotRef): string {
  return `${r.type}/${r.id}/${formatTime(r.time)}`;
}

/** `<type>/<id>/<time>` or `<type>/<id>/latest`. */
export function parseSnapshotRef(s: string): Group & { time: number | "latest" } {
  const i = s.lastIndexOf("/");
  if (i < 0 || !s.slice(0, i).includes("/")) throw usage(`"${s}" is not a snapshot: expected <type>/<id>/<YYYY-MM-DDTHH:MM:SSZ> or <type>/<id>/latest.`);
  const group = parseGroup(s.slice(0, i));
  const t = s.slice(i + 1);
  if (t === "latest") return { ...group, time: "latest" };
  const time = parseSnapshotTime(t);
  if (time === undefined) throw usage(`"${t}" is not a snapshot time: expected YYYY-MM-DDTHH:MM:SSZ (UTC) or latest.`);
  return { ...group, time };
}

/**
 * Remote names: a letter, then letters, digits, '_' and '-', at most 32. No dot and no
 * colon, so a host name or a URL is never taken for a remote's name.
 */
export const REMOTE_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

/** Why `s` is not a remote name (a sync or a sync job gave a URL, most likely). */
export function remoteNameProblem(s: string): string {
  return s.includes("://")
    ? "a sync names a remote, not a URL: an administrator adds the server first with `gorde remote add`"
    : "a remote name: a letter, then letters, digits, '_' or '-', at most 32";
}
