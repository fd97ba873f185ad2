// Privileges, roles, auth ids and ACL paths of `gorde server`, modelled on Proxmox Backup
// Server. Everything here is pure: the store (auth.ts) does the I/O.
import { REMOTE_NAME_RE } from "../format/names.ts";
import { GordeError } from "../errors.ts";
import { Role } from "../api/access-routes.ts";

export const PRIVILEGES = [
  "Sys.Audit",
  "Sys.Modify",
  "Permissions.Modify",
  "Datastore.Audit",
  "Datastore.Read",
  "Datastore.Backup",
  "Datastore.Prune",
  "Datastore.Modify",
  "Datastore.Verify",
  // remotes: other servers a sync pulls from (PBS's names), on /remote and /remote/<name>
  "Remote.Audit",
  "Remote.Modify",
  "Remote.Read",
  // a node's guests (PVE's names)
  "VM.Audit",
  "VM.PowerMgmt",
  "VM.Backup",
  "VM.Allocate",
  // a node's storages, the backup server's datastores as the node sees them (PVE's names), on /storage/<name>
  "Datastore.AllocateSpace",
] as const;
export type Privilege = (typeof PRIVILEGES)[number];

/** The role names: the API's list, so the schemas and the role table cannot disagree. */
export const ROLE_NAMES = Role.options;
export type RoleName = (typeof ROLE_NAMES)[number];

/** The role table, as PBS defines it. */
export const ROLES: Readonly<Record<RoleName, readonly Privilege[]>> = Object.freeze({
  Admin: PRIVILEGES,
  NoAccess: [],
  DatastoreAdmin: [
    "Datastore.Audit",
    "Datastore.Modify",
    "Datastore.Read",
    "Datastore.Verify",
    "Datastore.Backup",
    "Datastore.Prune",
  ],
  DatastorePowerUser: ["Datastore.Prune", "Datastore.Backup"],
  DatastoreBackup: ["Datastore.Backup"],
  DatastoreReader: ["Datastore.Audit", "Datastore.Read", "Datastore.Verify"],
  DatastoreAudit: ["Datastore.Audit"],
  RemoteAdmin: ["Remote.Audit", "Remote.Modify", "Remote.Read"],
  RemoteAudit: ["Remote.Audit"],
  /** may pull from a remote (with Datastore.Backup on the target datastore) */
  RemoteSyncOperator: ["Remote.Audit", "Remote.Read"],
  /** a node's guests: look only */
  PVEAuditor: ["Sys.Audit", "VM.Audit", "Datastore.Audit"],
  /** a node's storages: browse, and change or forget the snapshots there (notes, protection) */
  PVEDatastoreUser: ["Datastore.Audit", "Datastore.AllocateSpace"],
  /** a node's guests: look, start and stop, back up and restore (not create, configure or remove) */
  PVEVMUser: ["VM.Audit", "VM.PowerMgmt", "VM.Backup"],
});

export function isRoleName(s: string): s is RoleName {
  return (ROLE_NAMES as readonly string[]).includes(s);
}

/** User names, token names, datastore and namespace names. */
export const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;
/** Namespace depth limit, the same as the datastore's. */
export const MAX_NS_DEPTH = 8;

function usage(message: string): GordeError {
  return new GordeError("usage", message);
}

/** `user` or `user!token`. */
export type AuthId = { user: string; token?: string };

export function parseAuthId(s: string): AuthId {
  const bang = s.indexOf("!");
  const user = bang < 0 ? s : s.slice(0, bang);
  const token = bang < 0 ? undefined : s.slice(bang + 1);
  if (!NAME_RE.test(user)) {
    throw usage(`"${s}" is not a valid user name: use letters, digits, '.', '_' and '-' (not first), at most 64.`);
  }
  if (token === undefined) return { user };
  if (!NAME_RE.test(token)) {
    throw usage(`"${s}" is not a valid token id: expected <user>!<token name> with letters, digits, '.', '_', '-'.`);
  }
  return { user, token };
}

export function isValidAuthId(s: string): boolean {
  try {
    parseAuthId(s);
    return true;
  } catch {
    return false;
  }
}

/**
 * Validates an ACL path and returns its components: `/` → [], `/datastore` → ["datastore"],
 * `/datastore/<store>/<ns>...`, `/remote`, `/remote/<name>`, and on a node `/vms`, `/vms/<id>`, `/storage` and `/storage/<name>`. Only the canonical spelling is accepted (no trailing or
 * doubled slash, no `.` or `..`), so one place in the tree has exactly one name.
 */
export function parseAclPath(s: string): string[] {
  if (s === "/") return [];
  const bad = (why: string): GordeError => usage(`"${s}" is not a valid ACL path: ${why}.`);
  if (!s.startsWith("/")) throw bad("it must start with '/'");
  const parts = s.slice(1).split("/");
  if (parts[0] === "vms") {
    if (parts.length > 2 || (parts.length === 2 && !/^[1-9]\d{2,8}$/.test(parts[1]!))) throw bad("expected /vms or /vms/<guest id>");
    return parts;
  }
  if (parts[0] === "storage") {
    if (parts.length > 2 || (parts.length === 2 && !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(parts[1]!))) throw bad("expected /storage or /storage/<storage name>");
    return parts;
  }
  if (parts[0] === "remote") {
    if (parts.length > 2 || (parts.length === 2 && !REMOTE_NAME_RE.test(parts[1]!))) throw bad("expected /remote or /remote/<remote name>");
    return parts;
  }
  if (parts[0] !== "datastore") throw bad("expected /, /datastore, /datastore/<store>[/<namespace>...], /remote, /remote/<name>, /vms, /vms/<guest id>, /storage or /storage/<name>");
  if (parts.length > 2 + MAX_NS_DEPTH) throw bad(`namespaces are at most ${MAX_NS_DEPTH} levels deep`);
  for (const p of parts.slice(1)) {
    if (p === "") throw bad("it has an empty component");
    // NAME_RE refuses "." and ".." already (no leading dot); say why when it happens.
    if (p.startsWith(".")) throw bad(`"${p}" may not start with '.'`);
    if (!NAME_RE.test(p)) throw bad(`"${p}" is not a valid datastore or namespace name`);
  }
  return parts;
}

/** The ACL path of a datastore or of a namespace in it. */
export function datastoreAclPath(store: string, ns: readonly string[] = []): string {
  const p = ["", "datastore", store, ...ns].join("/");
  parseAclPath(p);
  return p;
}

/** The ACL path of a remote, or of all remotes. */
export function remoteAclPath(name?: string): string {
  const p = name === undefined ? "/remote" : `/remote/${name}`;
  parseAclPath(p);
  return p;
}

export interface AclEntry {
  path: string;
  authId: string;
  role: RoleName;
  propagate: boolean;
}

/**
 * The roles `authId` has on `path` (the components from parseAclPath), by the PBS rule:
 * walk from `/` down the path; at each level the entries of this auth id that apply there
 * (propagating ones, or any on the target itself) replace what was inherited; NoAccess at a
 * level wins over the other roles of that level.
 */
export function effectiveRoles(entries: readonly AclEntry[], authId: string, path: readonly string[]): Set<RoleName> {
  const mine = entries.filter((e) => e.authId === authId);
  let roles = new Set<RoleName>();
  for (let depth = 0; depth <= path.length; depth++) {
    const here = depth === 0 ? "/" : `/${path.slice(0, depth).join("/")}`;
    const last = depth === path.length;
    const level = new Set<RoleName>();
    let noAccess = false;
    for (const e of mine) {
      if (e.path !== here || !(e.propagate || last)) continue;
      if (e.role === "NoAccess") noAccess = true;
      level.add(e.role);
    }
    if (noAccess) roles = new Set(["NoAccess"]);
    else if (level.size > 0) roles = level;
  }
  return roles;
}

export function rolePrivileges(roles: Iterable<RoleName>): Set<Privilege> {
  const out = new Set<Privilege>();
  for (const r of roles) for (const p of ROLES[r]) out.add(p);
  return out;
}

/**
 * Whether `authId` owns a group whose owner is `owner` (PBS's check_backup_owner): the owner
 * itself, or the user whose token owns the group.
 */
export function ownsGroup(authId: string, owner: string): boolean {
  if (owner === authId) return true;
  const bang = owner.indexOf("!");
  return bang >= 0 && !authId.includes("!") && owner.slice(0, bang) === authId;
}

export interface GroupAccess {
  /** see the group and its snapshots */
  list: boolean;
  /** read and restore its snapshots */
  read: boolean;
  /** add snapshots to it */
  backup: boolean;
  /** prune it and forget its snapshots */
  prune: boolean;
  /** edit notes, protect and unprotect snapshots */
  notes: boolean;
  verify: boolean;
  changeOwner: boolean;
}

/**
 * What privileges on a group's datastore/namespace allow on that group. `owned` comes from
 * ownsGroup; a group that does not exist yet counts as owned (a backup creates it for its
 * caller).
 */
export function groupAccess(privs: ReadonlySet<Privilege>, owned: boolean): GroupAccess {
  const modify = privs.has("Datastore.Modify");
  const ownBackup = owned && privs.has("Datastore.Backup");
  const ownPrune = owned && privs.has("Datastore.Prune");
  const read = modify || privs.has("Datastore.Read") || ownBackup;
  return {
    list: read || privs.has("Datastore.Audit") || ownPrune,
    read,
    // as in PBS, even Modify does not allow adding to someone else's group: change its owner first
    backup: ownBackup,
    prune: modify || ownPrune,
    notes: modify || ownBackup,
    verify: privs.has("Datastore.Verify") || ownBackup,
    changeOwner: modify,
  };
}
