// The permission matrix of `gorde server`: every route of the API table, called by one
// principal of every role (and by tokens, and by callers whose credentials are wrong,
// expired, revoked or disabled), against a real server on loopback with real backups of
// several owners. Each answer's status is asserted exactly; after every refused request the
// datastores and the server's state directory must be exactly as they were before it.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http2 from "node:http2";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type Response, ServerConnection } from "../src/api/connection.ts";
import { encodeChunkBatch } from "../src/api/chunk-batch.ts";
import { ROUTES, type RouteName, routePath } from "../src/api/routes.ts";
import { backup, runBackup } from "../src/client/backup.ts";
import { RemoteRepository } from "../src/client/remote.ts";
import { Datastore } from "../src/datastore/datastore.ts";
import { encodeBlob } from "../src/format/blob.ts";
import { decodeFixedIndex } from "../src/format/fixed-index.ts";
import { DIGEST_SIZE } from "../src/format/magic.ts";
import { type Manifest, sealManifest } from "../src/format/manifest.ts";
import { parseGroup } from "../src/format/names.ts";
import { type GordeServer, startServer } from "../src/server/server.ts";
import { tempDir } from "./helpers.ts";

const ADMIN_PASSWORD = "admin-pass-1";
const STORE = "main";

/** The callers with valid credentials; every matrix row has one expected status per caller, in this order. */
const PRINCIPALS = [
  "admin", //          A   Admin on /
  "r-admin", //        RA  Admin on /datastore/main
  "r-dsadmin", //      DA  DatastoreAdmin
  "r-power", //        PW  DatastorePowerUser
  "r-backup", //       BK  DatastoreBackup
  "r-backup!tok", //   TK  token of r-backup, DatastoreBackup of its own
  "r-backup!wide", //  WD  token of r-backup granted Admin on / (never more than its user)
  "backup2", //        B2  DatastoreBackup, another owner
  "r-reader", //       RD  DatastoreReader
  "r-reader!bare", //  BR  token of r-reader without any ACL entry
  "r-audit", //        AU  DatastoreAudit
  "r-noaccess", //     NA  NoAccess
] as const;
type Who = (typeof PRINCIPALS)[number];
type Row = [number, number, number, number, number, number, number, number, number, number, number, number];

/** Roles granted on /datastore/main to the users above (tokens get theirs below). */
const USER_ROLES: Record<string, string> = {
  "r-admin": "Admin",
  "r-dsadmin": "DatastoreAdmin",
  "r-power": "DatastorePowerUser",
  "r-backup": "DatastoreBackup",
  backup2: "DatastoreBackup",
  "r-reader": "DatastoreReader",
  "r-audit": "DatastoreAudit",
  "r-noaccess": "NoAccess",
  "r-disabled": "DatastoreAdmin",
  "r-expired": "DatastoreAdmin",
};

/** The groups of main whose ownership the matrix turns on, and their owners. */
const GROUPS = {
  own: { group: "vm/100", owner: "r-backup" },
  token: { group: "ct/300", owner: "r-backup!tok" },
  power: { group: "vm/400", owner: "r-power" },
  foreign: { group: "vm/200", owner: "backup2" },
} as const;
type GroupKey = keyof typeof GROUPS;
const GROUP_KEYS = Object.keys(GROUPS) as GroupKey[];
/** r-backup's groups holding the long-lived reader and backup sessions of the session routes. */
const READER_GROUP = "vm/500";
const SESSION_GROUP = "vm/501";
const NEW_GROUP = "vm/999";

interface Req {
  store?: string;
  params?: Record<string, string>;
  query?: Record<string, string | number | boolean | undefined>;
  json?: unknown;
  binary?: Buffer;
}

interface Case {
  label: string;
  expect: Row;
  /** the request made by `who` (an auth id, or a stand-in name for a caller without one) */
  req: (who: string) => Req | Promise<Req>;
  /** after a 2xx: finish or undo what the request did, so the next caller meets the same state */
  ok?: (who: Who, res: Response) => Promise<void>;
}

interface BackupFixture {
  sid: string;
  file: string;
  index: Buffer;
  digest: string;
  manifest: Manifest;
  indexUploaded: boolean;
  /** the base's other indexes uploaded too: only the manifest is missing */
  allUploaded: boolean;
  done: boolean;
}

interface ReaderFixture {
  sid: string;
  file: string;
  digest: string;
  done: boolean;
}

let tmp: { dir: string; cleanup(): void };
let server: GordeServer;
let stateDir: string;
let storeDirs: string[];
const conns = new Map<string, ServerConnection>();
const secrets = new Map<string, string>();
let raw: http2.ClientHttp2Session;
/** a finished verify task of r-reader */
let readerTask: string;
let liveBackup: BackupFixture | undefined;
let liveReader: ReaderFixture | undefined;
/** a chunk no snapshot has: what an upload would add */
const freshData = randomBytes(48 * 1024);
const freshChunk = { digest: createHash("sha256").update(freshData).digest("hex"), blob: encodeBlob(freshData), size: freshData.length };
// Another chunk no backup has, for the batch upload (its allowed request must write too).
const batchData = randomBytes(4096);
const batchBody = encodeChunkBatch([{ hex: createHash("sha256").update(batchData).digest("hex"), size: batchData.length, blob: encodeBlob(batchData) }]);

function conn(who: string): ServerConnection {
  const c = conns.get(who);
  if (!c) throw new Error(`no connection for ${who}`);
  return c;
}

async function call(c: ServerConnection, name: RouteName, req: Req = {}): Promise<Response> {
  const r = ROUTES[name];
  return c.request(r.method, routePath(r, { store: req.store ?? STORE, ...req.params }), { query: req.query, json: req.json, binary: req.binary, once: true });
}

/** A request that must succeed; its JSON answer. */
async function ok<T = unknown>(who: string, name: RouteName, req: Req = {}): Promise<T> {
  const res = await call(conn(who), name, req);
  assert.equal(res.status, 200, `${name} as ${who}: ${res.body.toString()}`);
  const text = res.body.toString("utf8");
  return (ROUTES[name].response === "binary" ? res.body : JSON.parse(text)) as T;
}

// ---- the state on disk

const DISK_ROOTS = (): string[] => [...storeDirs, stateDir];

/** Every path under the datastores and the state directory with its type, mode, size, mtime and inode (not atime). */
function diskState(): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string): void => {
    const st = fs.lstatSync(p, { bigint: true });
    out.set(p, `mode=${st.mode.toString(8)} size=${st.size} mtime=${st.mtimeNs} ino=${st.ino}`);
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(path.join(p, n));
  };
  for (const r of DISK_ROOTS()) walk(r);
  return out;
}

function diskChanges(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [p, v] of before) {
    const w = after.get(p);
    if (w === undefined) out.push(`removed ${p}`);
    else if (w !== v) out.push(`changed ${p}: ${v} -> ${w}`);
  }
  for (const p of after.keys()) if (!before.has(p)) out.push(`added ${p}`);
  return out;
}

// ---- fixtures

async function snapshots(group: string, store = STORE): Promise<string[]> {
  const list = await ok<{ snapshot: string; finished: boolean }[]>("admin", "listSnapshots", { store, query: { group } });
  return list.filter((s) => s.finished).map((s) => s.snapshot);
}

async function newest(group: string): Promise<string> {
  const s = (await snapshots(group)).at(-1);
  assert.ok(s, `group ${group} has a snapshot`);
  return s;
}

async function oldest(group: string): Promise<string> {
  const s = (await snapshots(group))[0];
  assert.ok(s, `group ${group} has a snapshot`);
  return s;
}

async function waitTask(id: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const t = await ok<{ state: string }>("admin", "getTask", { params: { id } });
    if (t.state !== "running") return t.state;
    assert.ok(Date.now() < deadline, `task ${id} ends`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A real backup of a small image file into `group`, as `who`. */
async function backupAs(who: string, group: string, store = STORE): Promise<void> {
  const file = path.join(tmp.dir, `src-${group.replace("/", "-")}-${randomBytes(4).toString("hex")}.img`);
  fs.writeFileSync(file, randomBytes(96 * 1024));
  // and a small file archive, for the routes that browse one
  const tree = `${file}.d`;
  fs.mkdirSync(path.join(tree, "etc"), { recursive: true });
  fs.writeFileSync(path.join(tree, "etc", "hostname"), `${group}\n`);
  const repo = await RemoteRepository.connect(`https://${who}@127.0.0.1:${server.port}/${store}`, { secret: secrets.get(who)!, fingerprint: server.fingerprint });
  try {
    await runBackup(
      {
        group: parseGroup(group),
        sources: [
          { archive: "disk.img", source: file },
          { archive: "root.tree", source: tree },
        ],
      },
      (req) => repo.openBackup(req),
    );
  } finally {
    repo.close();
  }
}

/** Opens a backup session as `who` on `group` with the newest snapshot as its base, and fetches the base's index. */
async function openBackupOn(who: string, group: string): Promise<BackupFixture> {
  const started = await ok<{ session: string; time: number; base: { name: string; manifest: Manifest } | null }>(who, "startBackup", {
    json: { group, keyFingerprint: null },
  });
  assert.ok(started.base, `${group} has a base snapshot`);
  const m = started.base.manifest;
  const file = m.archives[0]!.indexes[0]!.file;
  const index = await ok<Buffer>(who, "backupBaseFile", { params: { session: started.session, file } });
  const digest = decodeFixedIndex(index).digests.toString("hex", 0, DIGEST_SIZE);
  // The base's manifest for the new snapshot: its time, sealed again (its checksum covers the time).
  return { sid: started.session, file, index, digest, manifest: sealManifest({ ...m, time: started.time, unprotected: {} }), indexUploaded: false, allUploaded: false, done: false };
}

/** A new snapshot of `group` made by its owner through the API: the newest one's indexes again. */
/** Uploads every index of the session's base again: the session then lacks only its manifest. */
async function uploadBaseIndexes(who: string, s: BackupFixture): Promise<void> {
  for (const a of s.manifest.archives) {
    for (const { file } of a.indexes) {
      if (file === s.file && s.indexUploaded) continue;
      const index = file === s.file ? s.index : await ok<Buffer>(who, "backupBaseFile", { params: { session: s.sid, file } });
      await ok(who, "uploadIndex", { params: { session: s.sid, file }, binary: index });
    }
  }
}

async function cloneNewest(who: string, group: string): Promise<void> {
  const s = await openBackupOn(who, group);
  await uploadBaseIndexes(who, s);
  await ok(who, "finishBackup", { params: { session: s.sid }, json: s.manifest });
}

/** Gives `key`'s group two finished snapshots again after a forget or prune. */
async function refill(key: GroupKey): Promise<void> {
  const { group, owner } = GROUPS[key];
  while ((await snapshots(group)).length < 2) await cloneNewest(owner, group);
}

/** The open backup session of r-backup on SESSION_GROUP (a new one once finished or aborted). */
async function backupSession(): Promise<BackupFixture> {
  if (!liveBackup || liveBackup.done) liveBackup = await openBackupOn("r-backup", SESSION_GROUP);
  return liveBackup;
}

/** The open reader session of r-backup on the newest snapshot of READER_GROUP, its index fetched. */
async function readerSession(): Promise<ReaderFixture> {
  if (!liveReader || liveReader.done) {
    const r = await ok<{ session: string; manifest: Manifest }>("r-backup", "openReader", { json: { snapshot: await newest(READER_GROUP) } });
    const file = r.manifest.archives[0]!.indexes[0]!.file;
    const index = await ok<Buffer>("r-backup", "readerFile", { params: { session: r.session, file } });
    liveReader = { sid: r.session, file, digest: decodeFixedIndex(index).digests.toString("hex", 0, DIGEST_SIZE), done: false };
  }
  return liveReader;
}

const UNKNOWN_SESSION = "AAAAAAAAAAAAAAAAAAAAAAAA";
const AUTH_ID = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(![A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$/;
const asOwner = (who: string): string => (AUTH_ID.test(who) ? who : "nobody");

// ---- the matrix
//
// Columns: A RA DA PW BK TK WD B2 RD BR AU NA (see PRINCIPALS). 404 is the answer for a
// datastore the caller may not see at all, and for a session or task that is not the caller's.

/** Rows of the four group cases, in the order of GROUP_KEYS: own (r-backup), token (r-backup!tok), power (r-power), foreign (backup2). */
type GroupRows = Record<GroupKey, Row>;

function groupCases(rows: GroupRows, req: (g: (typeof GROUPS)[GroupKey], who: string) => Promise<Req> | Req, ok?: (key: GroupKey, who: Who, res: Response) => Promise<void>): Case[] {
  return GROUP_KEYS.map((key) => ({
    label: `${key} group ${GROUPS[key].group} of ${GROUPS[key].owner}`,
    expect: rows[key],
    req: (who) => req(GROUPS[key], who),
    ok: ok && ((who, res) => ok(key, who, res)),
  }));
}

//                      A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
const EVERYONE: Row = [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200];
const SYSTEM: Row = [200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403];
const VISIBLE: Row = [200, 200, 200, 200, 200, 200, 200, 200, 200, 404, 200, 404];
const MODIFY: Row = [200, 200, 200, 403, 403, 403, 403, 403, 403, 404, 403, 404];
const SELF_BK: Row = [200, 403, 403, 403, 200, 403, 403, 403, 403, 403, 403, 403];
const SESSION_BK: Row = [404, 404, 404, 404, 200, 404, 404, 404, 404, 404, 404, 404];
const NOBODYS: Row = [404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404];
const TASK_RD: Row = [200, 404, 404, 404, 404, 404, 404, 404, 200, 404, 404, 404];

/** listing a group's snapshots: Modify, Read or Audit, or Backup (or Prune) on an owned group */
const LIST: GroupRows = {
  own: [200, 200, 200, 403, 200, 403, 403, 403, 200, 404, 200, 404],
  token: [200, 200, 200, 403, 200, 200, 403, 403, 200, 404, 200, 404],
  power: [200, 200, 200, 200, 403, 403, 403, 403, 200, 404, 200, 404],
  foreign: [200, 200, 200, 403, 403, 403, 403, 200, 200, 404, 200, 404],
};
/** restoring and verifying a snapshot: Modify, Read or Verify, or Backup on an owned group */
const READ: GroupRows = {
  own: [200, 200, 200, 403, 200, 403, 403, 403, 200, 404, 403, 404],
  token: [200, 200, 200, 403, 200, 200, 403, 403, 200, 404, 403, 404],
  power: [200, 200, 200, 200, 403, 403, 403, 403, 200, 404, 403, 404],
  foreign: [200, 200, 200, 403, 403, 403, 403, 200, 200, 404, 403, 404],
};
/** forget, prune: Modify, or Prune on an owned group */
const PRUNE: GroupRows = {
  own: [200, 200, 200, 403, 403, 403, 403, 403, 403, 404, 403, 404],
  token: [200, 200, 200, 403, 403, 403, 403, 403, 403, 404, 403, 404],
  power: [200, 200, 200, 200, 403, 403, 403, 403, 403, 404, 403, 404],
  foreign: [200, 200, 200, 403, 403, 403, 403, 403, 403, 404, 403, 404],
};
/** notes, protection: Modify, or Backup on an owned group */
const NOTES: GroupRows = {
  own: [200, 200, 200, 403, 200, 403, 403, 403, 403, 404, 403, 404],
  token: [200, 200, 200, 403, 200, 200, 403, 403, 403, 404, 403, 404],
  power: [200, 200, 200, 200, 403, 403, 403, 403, 403, 404, 403, 404],
  foreign: [200, 200, 200, 403, 403, 403, 403, 200, 403, 404, 403, 404],
};
/** backing up: Backup on an owned group, whatever else the caller may do */
const BACKUP: GroupRows = {
  own: [403, 403, 403, 403, 200, 403, 403, 403, 403, 404, 403, 404],
  token: [403, 403, 403, 403, 200, 200, 403, 403, 403, 404, 403, 404],
  power: [403, 403, 403, 200, 403, 403, 403, 403, 403, 404, 403, 404],
  foreign: [403, 403, 403, 403, 403, 403, 403, 200, 403, 404, 403, 404],
};
const CHANGE_OWNER: GroupRows = { own: MODIFY, token: MODIFY, power: MODIFY, foreign: MODIFY };

/** A remote nothing listens at; r-backup may sync from it (RemoteSyncOperator on /remote/offsite). */
const REMOTE = "offsite";
const REMOTE_BODY = { name: REMOTE, url: "https://sync@127.0.0.1:1/main", fingerprint: "00".repeat(32), secret: "remote-secret-1" };
/** A remote that exists, on which nobody but admin has a privilege. */
const HIDDEN_REMOTE = "hidden";

const taskOk = async (_who: Who, res: Response): Promise<void> => {
  const { task } = JSON.parse(res.body.toString()) as { task: string };
  await waitTask(task);
};

const CASES: Record<RouteName, Case[]> = {
  version: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  openapi: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  metrics: [{ label: "", expect: SYSTEM, req: () => ({}) }],
  listDatastores: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  datastoreStatus: [{ label: "", expect: VISIBLE, req: () => ({}) }],
  datastoreHistory: [{ label: "", expect: VISIBLE, req: () => ({}) }],
  setMaintenance: [
    {
      label: "offline",
      expect: MODIFY,
      req: () => ({ json: { mode: "offline" } }),
      ok: async () => void (await ok("admin", "setMaintenance", { json: { mode: "none" } })),
    },
  ],
  listGroups: [{ label: "", expect: VISIBLE, req: () => ({}) }],
  listSnapshots: [
    { label: "all groups", expect: VISIBLE, req: () => ({}) },
    ...groupCases(LIST, (g) => ({ query: { group: g.group } })),
  ],
  forgetSnapshot: groupCases(
    PRUNE,
    async (g) => ({ query: { snapshot: await oldest(g.group) } }),
    (key) => refill(key),
  ),
  browseSnapshot: groupCases(READ, async (g) => ({ query: { snapshot: await newest(g.group), archive: "root.tree", path: "etc" } })),
  downloadSnapshotFile: groupCases(READ, async (g) => ({ query: { snapshot: await newest(g.group), archive: "root.tree", path: "etc/hostname" } })),
  setNotes: groupCases(NOTES, async (g, who) => ({ json: { snapshot: await newest(g.group), notes: `written by ${who}` } })),
  setDrill: groupCases(NOTES, async (g, who) => ({ json: { snapshot: await newest(g.group), state: { result: "passed", time: 1_800_000_000, node: who.replace(/[^a-z0-9-]/g, "-"), rtoSeconds: 12.5 } } })),
  setProtected: groupCases(
    NOTES,
    async (g) => ({ json: { snapshot: await newest(g.group), protected: true } }),
    async (key) => void (await ok("admin", "setProtected", { json: { snapshot: await newest(GROUPS[key].group), protected: false } })),
  ),
  setOwner: groupCases(
    CHANGE_OWNER,
    (g, who) => ({ json: { group: g.group, owner: asOwner(who) } }),
    async (key) => void (await ok("admin", "setOwner", { json: { group: GROUPS[key].group, owner: GROUPS[key].owner } })),
  ),
  prune: groupCases(
    PRUNE,
    (g) => ({ json: { group: g.group, keep: { keepLast: 1 } } }),
    (key) => refill(key),
  ),
  gc: [{ label: "", expect: MODIFY, req: () => ({ json: {} }), ok: taskOk }],
  verify: [
    //                              A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
    { label: "whole datastore", expect: [200, 200, 200, 403, 403, 403, 403, 403, 200, 404, 403, 404], req: () => ({ json: {} }), ok: taskOk },
    ...groupCases(READ, async (g) => ({ json: { snapshot: await newest(g.group) } }), (_key, who, res) => taskOk(who, res)),
  ],
  startBackup: [
    ...groupCases(BACKUP, (g) => ({ json: { group: g.group, keyFingerprint: null } }), (_key, who, res) => abortBackupOf(who, res)),
    {
      label: `new group ${NEW_GROUP}`,
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [200, 200, 200, 200, 200, 200, 200, 200, 403, 404, 403, 404],
      req: () => ({ json: { group: NEW_GROUP, keyFingerprint: null } }),
      ok: abortBackupOf,
    },
  ],
  backupBaseFile: sessionCases(async () => {
    const s = await backupSession();
    return { params: { session: s.sid, file: s.file } };
  }, { file: "disk.img.fidx" }),
  backupBaseChunk: sessionCases(async () => {
    const s = await backupSession();
    return { params: { session: s.sid, digest: s.digest } };
  }, { digest: "0".repeat(64) }),
  uploadChunk: sessionCases(
    async () => ({ params: { session: (await backupSession()).sid, digest: freshChunk.digest }, query: { size: freshChunk.size }, binary: freshChunk.blob }),
    { digest: freshChunk.digest },
    { query: { size: freshChunk.size }, binary: freshChunk.blob },
  ),
  uploadChunks: sessionCases(async () => ({ params: { session: (await backupSession()).sid }, binary: batchBody }), {}, { binary: batchBody }),
  uploadIndex: sessionCases(
    async () => {
      const s = await backupSession();
      return { params: { session: s.sid, file: s.file }, binary: s.index };
    },
    { file: "disk.img.fidx" },
    { binary: Buffer.alloc(64) },
    async () => void ((await backupSession()).indexUploaded = true),
  ),
  finishBackup: sessionCases(
    async () => {
      const s = await backupSession();
      // the session is complete: only the manifest is missing
      if (!s.allUploaded) {
        await uploadBaseIndexes("r-backup", s);
        s.indexUploaded = s.allUploaded = true;
      }
      return { params: { session: s.sid }, json: s.manifest };
    },
    {},
    { json: {} },
    async () => void ((await backupSession()).done = true),
  ),
  abortBackup: sessionCases(
    async () => ({ params: { session: (await backupSession()).sid } }),
    {},
    {},
    async () => void ((await backupSession()).done = true),
  ),
  openReader: groupCases(READ, async (g) => ({ json: { snapshot: await newest(g.group) } }), async (_key, who, res) => {
    const { session } = JSON.parse(res.body.toString()) as { session: string };
    await ok(who, "closeReader", { params: { session } });
  }),
  readerFile: sessionCases(async () => {
    const s = await readerSession();
    return { params: { session: s.sid, file: s.file } };
  }, { file: "disk.img.fidx" }),
  readerChunk: sessionCases(async () => {
    const s = await readerSession();
    return { params: { session: s.sid, digest: s.digest } };
  }, { digest: "0".repeat(64) }),
  readerChunks: sessionCases(
    async () => {
      const s = await readerSession();
      return { params: { session: s.sid }, json: { digests: [s.digest] } };
    },
    {},
    { json: { digests: ["0".repeat(64)] } },
  ),
  closeReader: sessionCases(
    async () => ({ params: { session: (await readerSession()).sid } }),
    {},
    {},
    async () => void ((await readerSession()).done = true),
  ),
  listTasks: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  getTask: [{ label: "a task of r-reader", expect: TASK_RD, req: () => ({ params: { id: readerTask } }) }],
  taskLog: [{ label: "a task of r-reader", expect: TASK_RD, req: () => ({ params: { id: readerTask } }) }],
  taskEvents: [{ label: "a task of r-reader", expect: TASK_RD, req: () => ({ params: { id: readerTask } }) }],
  abortTask: [
    {
      // the task has ended: its owner and the admin get past the permission check to 409
      label: "a finished task of r-reader",
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [409, 404, 404, 404, 404, 404, 404, 404, 409, 404, 404, 404],
      req: () => ({ params: { id: readerTask } }),
    },
  ],
  listUsers: [{ label: "", expect: SYSTEM, req: () => ({}) }],
  addUser: [
    {
      label: "",
      expect: SYSTEM,
      req: () => ({ json: { name: "matrix-new", password: "matrix-pass-1" } }),
      ok: async () => void (await ok("admin", "removeUser", { params: { user: "matrix-new" } })),
    },
  ],
  updateUser: [
    { label: "password of r-backup", expect: SELF_BK, req: () => ({ params: { user: "r-backup" }, json: { password: secrets.get("r-backup") } }) },
    { label: "enable flag of r-backup", expect: SYSTEM, req: () => ({ params: { user: "r-backup" }, json: { enable: true } }) },
    { label: "password of r-audit", expect: SYSTEM.map((s, i) => (PRINCIPALS[i] === "r-audit" ? 200 : s)) as Row, req: () => ({ params: { user: "r-audit" }, json: { password: secrets.get("r-audit") } }) },
  ],
  removeUser: [
    {
      label: "user victim",
      expect: SYSTEM,
      req: () => ({ params: { user: "victim" } }),
      ok: async () => void (await ok("admin", "addUser", { json: { name: "victim", password: "victim-pass-1" } })),
    },
  ],
  listTokens: [{ label: "of r-backup", expect: SELF_BK, req: () => ({ params: { user: "r-backup" } }) }],
  addToken: [
    {
      label: "for r-backup",
      expect: SELF_BK,
      req: () => ({ params: { user: "r-backup", token: "matrix" }, json: {} }),
      ok: async () => void (await ok("admin", "removeToken", { params: { user: "r-backup", token: "matrix" } })),
    },
  ],
  removeToken: [
    {
      label: "r-backup!victim",
      expect: SELF_BK,
      req: () => ({ params: { user: "r-backup", token: "victim" } }),
      ok: async () => void (await ok("admin", "addToken", { params: { user: "r-backup", token: "victim" }, json: {} })),
    },
  ],
  listAcl: [{ label: "", expect: SYSTEM, req: () => ({}) }],
  // Public: the credentials are the body's, whoever calls.
  login: [{ label: "r-audit's password", expect: EVERYONE, req: () => ({ json: { username: "r-audit", password: secrets.get("r-audit") } }) }],
  logout: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  permissions: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  getPlan: [{ label: "", expect: SYSTEM, req: () => ({}) }],
  applyPlan: [{ label: "a GC job once a year", expect: SYSTEM, req: () => ({ json: { text: "version: 1\nguests: {}\njobs:\n  - { name: yearly-gc, type: gc, schedule: yearly }\n" } }) }],
  listRuns: [{ label: "", expect: SYSTEM, req: () => ({}) }],
  setAcl: [
    {
      label: "Admin on / for r-audit",
      expect: SYSTEM,
      req: () => ({ json: { path: "/", authId: "r-audit", role: "Admin" } }),
      ok: async () => void (await ok("admin", "setAcl", { json: { path: "/", authId: "r-audit", role: "Admin", remove: true } })),
    },
  ],
  listRemotes: [{ label: "", expect: EVERYONE, req: () => ({}) }],
  addRemote: [
    {
      label: "another offsite server",
      expect: SYSTEM,
      req: () => ({ json: { name: "added", url: "https://sync@127.0.0.1:1/main", fingerprint: "11".repeat(32), secret: "remote-secret-2" } }),
      ok: async () => void (await ok("admin", "removeRemote", { params: { name: "added" } })),
    },
  ],
  removeRemote: [
    {
      label: REMOTE,
      expect: SYSTEM,
      req: () => ({ params: { name: REMOTE } }),
      ok: async () => void (await ok("admin", "addRemote", { json: REMOTE_BODY })),
    },
  ],
  sync: [
    {
      // Backup on the target and Remote.Read on the remote: the task starts (and fails at once: nothing listens there)
      label: `from ${REMOTE}, which is not there`,
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [200, 403, 403, 403, 200, 403, 200, 403, 403, 404, 403, 404],
      req: () => ({ json: { remote: REMOTE } }),
      ok: taskOk,
    },
    {
      // only those who may read every remote learn that it does not exist
      label: "from an unknown remote",
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [404, 403, 403, 403, 403, 403, 403, 403, 403, 404, 403, 404],
      req: () => ({ json: { remote: "nowhere" } }),
    },
  ],
  clusterStatus: [{ label: "in no cluster", expect: SYSTEM, req: () => ({}) }],
  admitMember: [
    {
      // Only an administrator learns that this server is in no cluster.
      label: "to a server in no cluster",
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [404, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403],
      req: () => ({ json: { name: "node9", peerUrl: "https://127.0.0.1:1", role: "node" } }),
    },
  ],
  joinCluster: [
    {
      // (this server as the member: it is in no cluster, so nothing is joined)
      label: "through a host in no cluster",
      //       A    RA   DA   PW   BK   TK   WD   B2   RD   BR   AU   NA
      expect: [404, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403],
      req: () => ({
        json: { cluster: "lab", member: { url: `https://admin@127.0.0.1:${server.port}`, fingerprint: server.fingerprint, secret: ADMIN_PASSWORD }, address: "127.0.0.1" },
      }),
    },
  ],
};

/**
 * A session route: the live session of r-backup (only r-backup may use it), and an unknown
 * session id (nobody may). `unknownParams`, `unknownBody`: the rest of the second request.
 */
function sessionCases(
  req: () => Promise<Req>,
  unknownParams: Record<string, string>,
  unknownBody: Partial<Req> = {},
  done?: () => Promise<void>,
): Case[] {
  return [
    { label: "r-backup's session", expect: SESSION_BK, req: () => req(), ok: done && (() => done()) },
    { label: "unknown session", expect: NOBODYS, req: () => ({ params: { session: UNKNOWN_SESSION, ...unknownParams }, ...unknownBody }) },
  ];
}

/** Routes whose allowed requests in the matrix write to the datastore or the state directory at once. */
const WRITING = new Set<RouteName>([
  "setMaintenance",
  "forgetSnapshot",
  "setNotes",
  "setDrill",
  "setProtected",
  "setOwner",
  "prune",
  "startBackup",
  "uploadChunk",
  "uploadChunks",
  "uploadIndex",
  "finishBackup",
  "abortBackup",
  "addRemote",
  "removeRemote",
  "addUser",
  "updateUser",
  "removeUser",
  "addToken",
  "removeToken",
  "setAcl",
]);

/** What a refusal says: a 403 comes only from a permission check; a 404 hides a datastore, session or task. */
const REFUSAL: Record<number, RegExp> = {
  403: /^permission denied: \S+ may not /,
  404: /^no datastore \S+\.$|^no such (backup|reader) session |^no task |^no remote nowhere; |^\S+ is in no cluster\.$/,
  409: /^task \S+ is not running\.$/,
};

function errorOf(res: Response): string {
  try {
    const j = JSON.parse(res.body.toString("utf8")) as { error?: unknown };
    return typeof j.error === "string" ? j.error : "";
  } catch {
    return "";
  }
}

async function abortBackupOf(who: Who, res: Response): Promise<void> {
  const { session } = JSON.parse(res.body.toString()) as { session: string };
  await ok(who, "abortBackup", { params: { session } });
}

/** Makes the request of `c` as every principal; the mismatches, and disk changes after refusals. */
async function runCase(name: RouteName, c: Case): Promise<string[]> {
  const problems: string[] = [];
  for (let i = 0; i < PRINCIPALS.length; i++) {
    const who = PRINCIPALS[i]!;
    const req = await c.req(who);
    const before = diskState();
    const res = await call(conn(who), name, req);
    const where = `${name}${c.label ? ` [${c.label}]` : ""} as ${who}`;
    if (res.status !== c.expect[i]) problems.push(`${where}: ${res.status}, expected ${c.expect[i]}: ${res.body.toString().slice(0, 200)}`);
    if (res.status >= 400) {
      // the refusal comes from the permission check, not from something missing
      const why = REFUSAL[res.status];
      if (why && !why.test(errorOf(res))) problems.push(`${where}: ${res.status} for another reason: ${errorOf(res)}`);
      const changes = diskChanges(before, diskState());
      if (changes.length) problems.push(`${where} was refused but changed the disk: ${changes.join("; ")}`);
    } else {
      // the same request, allowed, does change the disk: so the check above would see it
      if (WRITING.has(name) && diskChanges(before, diskState()).length === 0) problems.push(`${where} was allowed but changed nothing on disk`);
      await c.ok?.(who, res);
    }
  }
  return problems;
}

// ---- callers without valid credentials

interface BadCaller {
  label: string;
  /** the Authorization header (absent: none) */
  authorization?: string;
  /** who it claims to be */
  authId?: string;
}

const basic = (authId: string, secret: string): string => `Basic ${Buffer.from(`${authId}:${secret}`).toString("base64")}`;
/** Refused without a password check. */
let badCallers: BadCaller[];
/**
 * Refused after a password check: each costs a deliberately slow scrypt, so every route
 * gets one of them in turn (the check is the same for every route) to keep the test fast.
 */
let badPasswords: BadCaller[];

function rawRequest(method: string, p: string, authorization: string | undefined, req: Req): Promise<Response> {
  let full = p;
  if (req.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(req.query)) if (v !== undefined) q.set(k, String(v));
    if (q.size) full += `?${q.toString()}`;
  }
  const headers: http2.OutgoingHttpHeaders = { ":method": method, ":path": full };
  if (authorization !== undefined) headers.authorization = authorization;
  let body: Buffer | undefined = req.binary;
  if (req.json !== undefined) {
    body = Buffer.from(JSON.stringify(req.json));
    headers["content-type"] = "application/json";
  } else if (body) {
    headers["content-type"] = "application/octet-stream";
  }
  if (body) headers["content-length"] = body.length;
  return new Promise((resolve, reject) => {
    const stream = raw.request(headers, { endStream: !body });
    let status = 0;
    const parts: Buffer[] = [];
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (b: Buffer) => parts.push(b));
    stream.on("end", () => resolve({ status, body: Buffer.concat(parts) }));
    stream.on("error", reject);
    if (body) stream.end(body);
  });
}

// The timeout guards against a hang only: on two loaded cores the matrix takes minutes.
void describe("gorde server: the permission matrix", { timeout: 600_000 }, () => {
  before(async () => {
    tmp = tempDir("gorde-access-");
    stateDir = path.join(tmp.dir, "state");
    storeDirs = [path.join(tmp.dir, "ds-main"), path.join(tmp.dir, "ds-other")];
    server = await startServer({
      stateDir,
      host: "127.0.0.1",
      port: 0,
      datastores: { main: storeDirs[0]!, other: storeDirs[1]! },
      adminPassword: ADMIN_PASSWORD,
      authFailureDelayMs: 0,
      // every route is called with wrong passwords from this one address: the matrix is
      // about 401 and 403; throttling has its own tests (server-login.test.ts)
      loginLimits: { userAddress: { burst: 10_000, refillMs: 1 }, address: { burst: 10_000, refillMs: 1 }, user: { burst: 10_000, refillMs: 1 } },
    });
    const connect = async (authId: string, secret: string): Promise<ServerConnection> => {
      secrets.set(authId, secret);
      const c = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId, secret, fingerprint: server.fingerprint });
      conns.set(authId, c);
      return c;
    };
    await connect("admin", ADMIN_PASSWORD);

    // users, one per role on /datastore/main, and the ones that will be refused
    await Promise.all(
      Object.entries(USER_ROLES).map(async ([user, role]) => {
        const expire = user === "r-expired" ? 1 : undefined;
        await ok("admin", "addUser", { json: { name: user, password: `${user}-pass-1`, expire } });
        await ok("admin", "setAcl", { json: { path: "/datastore/main", authId: user, role } });
        secrets.set(user, `${user}-pass-1`);
      }),
    );
    await ok("admin", "addUser", { json: { name: "victim", password: "victim-pass-1" } });
    // tokens: their ACL entries are their own; a token never gets more than its user
    const token = async (user: string, name: string, acl: { path: string; role: string } | null, expire?: number): Promise<string> => {
      const t = await ok<{ tokenId: string; secret: string }>("admin", "addToken", { params: { user, token: name }, json: { expire } });
      if (acl) await ok("admin", "setAcl", { json: { ...acl, authId: t.tokenId } });
      secrets.set(t.tokenId, t.secret);
      return t.secret;
    };
    await token("r-backup", "tok", { path: "/datastore/main", role: "DatastoreBackup" });
    await token("r-backup", "wide", { path: "/", role: "Admin" });
    await token("r-reader", "bare", null);
    await token("r-backup", "old", { path: "/datastore/main", role: "DatastoreBackup" }, 1);
    await token("r-backup", "gone", { path: "/datastore/main", role: "DatastoreBackup" });
    await token("r-backup", "victim", null);
    await token("r-disabled", "tok", { path: "/datastore/main", role: "DatastoreAdmin" });
    for (const who of PRINCIPALS) if (who !== "admin") await connect(who, secrets.get(who)!);
    // the first check of each password is slow on purpose (scrypt): have them all at once
    await Promise.all(PRINCIPALS.map(async (who) => assert.equal((await call(conn(who), "listDatastores")).status, 200, who)));

    // Credentials that worked once and are then revoked or disabled must stop working at
    // once (a successful check is cached by the server).
    await Promise.all(
      ["r-backup!gone", "r-disabled", "r-disabled!tok"].map(async (who) => {
        const c = await connect(who, secrets.get(who)!);
        assert.equal((await call(c, "datastoreStatus")).status, 200, who);
        c.close();
      }),
    );
    await ok("admin", "removeToken", { params: { user: "r-backup", token: "gone" } });
    await ok("admin", "updateUser", { params: { user: "r-disabled" }, json: { enable: false } });
    badCallers = [
      { label: "no credentials" },
      { label: "not Basic", authorization: "Bearer abc" },
      { label: "an empty secret", authorization: basic("r-backup", ""), authId: "r-backup" },
      { label: "expired token", authorization: basic("r-backup!old", secrets.get("r-backup!old")!), authId: "r-backup!old" },
      { label: "revoked token", authorization: basic("r-backup!gone", secrets.get("r-backup!gone")!), authId: "r-backup!gone" },
      { label: "token of a disabled user", authorization: basic("r-disabled!tok", secrets.get("r-disabled!tok")!), authId: "r-disabled!tok" },
      { label: "wrong token secret", authorization: basic("r-backup!tok", secrets.get("r-backup!wide")!), authId: "r-backup!tok" },
    ];
    badPasswords = [
      { label: "wrong password", authorization: basic("r-backup", "wrong-password-1"), authId: "r-backup" },
      { label: "unknown user", authorization: basic("ghost", "ghost-pass-1"), authId: "ghost" },
      { label: "disabled user", authorization: basic("r-disabled", secrets.get("r-disabled")!), authId: "r-disabled" },
      { label: "expired user", authorization: basic("r-expired", secrets.get("r-expired")!), authId: "r-expired" },
      { label: "token secret as the user's password", authorization: basic("r-backup", secrets.get("r-backup!tok")!), authId: "r-backup" },
    ];
    raw = http2.connect(`https://127.0.0.1:${server.port}`, { rejectUnauthorized: false });
    raw.on("error", () => undefined);

    // real backups of several owners: two snapshots in each group of the matrix
    const owners: [string, string][] = [
      ...GROUP_KEYS.map((k): [string, string] => [GROUPS[k].owner, GROUPS[k].group]),
      ["r-backup", READER_GROUP],
      ["r-backup", SESSION_GROUP],
    ];
    await Promise.all(
      owners.map(async ([who, group]) => {
        await backupAs(who, group);
        if (group !== READER_GROUP && group !== SESSION_GROUP) await backupAs(who, group);
      }),
    );
    await backupAs("admin", "vm/100", "other");
    await ok("admin", "addRemote", { json: REMOTE_BODY });
    await ok("admin", "addRemote", { json: { ...REMOTE_BODY, name: HIDDEN_REMOTE, secret: "remote-secret-3" } });
    await ok("admin", "setAcl", { json: { path: `/remote/${REMOTE}`, authId: "r-backup", role: "RemoteSyncOperator" } });
    const v = await ok<{ task: string }>("r-reader", "verify", { json: { snapshot: await newest(GROUPS.own.group) } });
    readerTask = v.task;
    assert.equal(await waitTask(readerTask), "ok");
  });

  after(async () => {
    raw?.close();
    for (const c of conns.values()) c.close();
    await server?.close();
    tmp?.cleanup();
  });

  void it("has a matrix row for every route of the API table, and no row for a route it does not have", () => {
    assert.deepEqual(Object.keys(CASES).sort(), Object.keys(ROUTES).sort());
    for (const name of Object.keys(ROUTES) as RouteName[]) {
      assert.ok(CASES[name].length > 0, name);
      // refused means 403 or 404; 409 only where the caller got past the check to a finished task
      for (const c of CASES[name]) for (const st of c.expect) assert.ok([200, 403, 404, 409].includes(st), `${name} [${c.label}]: ${st}`);
    }
  });

  void it("the owners of the groups are who made them", async () => {
    const groups = await ok<{ group: string; owner: string; count: number }[]>("admin", "listGroups");
    for (const { group, owner } of Object.values(GROUPS)) {
      const g = groups.find((x) => x.group === group);
      assert.deepEqual({ owner: g?.owner, count: g?.count }, { owner, count: 2 }, group);
    }
  });

  for (const name of Object.keys(ROUTES) as RouteName[]) {
    void it(`${ROUTES[name].method} ${ROUTES[name].path}: every role gets exactly its status`, async () => {
      const cases = CASES[name] as Case[] | undefined;
      assert.ok(cases && cases.length > 0, `route ${name} has no row in the permission matrix`);
      const problems: string[] = [];
      for (const c of cases) problems.push(...(await runCase(name, c)));
      assert.deepEqual(problems, []);
    });
  }

  void it("every route refuses callers without valid credentials with 401 (public routes answer) and changes nothing", async () => {
    const problems: string[] = [];
    for (const [n, name] of (Object.keys(ROUTES) as RouteName[]).entries()) {
      const route = ROUTES[name];
      const c = CASES[name][0]!;
      const callers = [...badCallers, badPasswords[n % badPasswords.length]!];
      const reqs: Req[] = [];
      for (const b of callers) reqs.push(await c.req(b.authId ?? "nobody"));
      const before = diskState();
      const results = await Promise.all(
        callers.map(async (b, i) => {
          const req = reqs[i]!;
          const res = await rawRequest(route.method, routePath(route, { store: STORE, ...req.params }), b.authorization, req);
          return { b, res };
        }),
      );
      for (const { b, res } of results) {
        const want = route.access === "public" ? 200 : 401;
        if (res.status !== want) problems.push(`${name} with ${b.label}: ${res.status}, expected ${want}`);
      }
      if (route.access !== "public") {
        const changes = diskChanges(before, diskState());
        if (changes.length) problems.push(`${name} without valid credentials changed the disk: ${changes.join("; ")}`);
      }
    }
    assert.deepEqual(problems, []);
  });

  void it("a datastore the caller has no privilege on does not exist for it (404), and neither does an unknown one", async () => {
    const problems: string[] = [];
    for (const name of Object.keys(ROUTES) as RouteName[]) {
      if (!ROUTES[name].path.includes("{store}")) continue;
      const c = CASES[name][0]!;
      for (const [i, who] of PRINCIPALS.entries()) {
        const req = await c.req(who);
        for (const store of i === 0 ? ["nope"] : ["other", "nope"]) {
          const before = diskState();
          const res = await call(conn(who), name, { ...req, store });
          if (res.status !== 404 || errorOf(res) !== `no datastore ${store}.`) problems.push(`${name} on ${store} as ${who}: ${res.status} ${errorOf(res)}, expected 404`);
          const changes = diskChanges(before, diskState());
          if (changes.length) problems.push(`${name} on ${store} as ${who} changed the disk: ${changes.join("; ")}`);
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  void it("listings show each caller only what it may see", async () => {
    const names = async (who: Who): Promise<string[]> => (await ok<{ name: string }[]>(who, "listDatastores")).map((d) => d.name).sort();
    assert.deepEqual(await names("admin"), ["main", "other"]);
    for (const who of ["r-admin", "r-backup", "r-backup!tok", "r-backup!wide", "r-reader", "r-audit"] as const) assert.deepEqual(await names(who), ["main"], who);
    for (const who of ["r-noaccess", "r-reader!bare"] as const) assert.deepEqual(await names(who), [], who);

    const groups = async (who: Who): Promise<string[]> => (await ok<{ group: string }[]>(who, "listGroups")).map((g) => g.group).sort();
    const all = ["ct/300", "vm/100", "vm/200", "vm/400", "vm/500", "vm/501"];
    assert.deepEqual(await groups("r-audit"), all, "DatastoreAudit lists every group");
    assert.deepEqual(await groups("r-reader"), all);
    assert.deepEqual(await groups("r-dsadmin"), all);
    assert.deepEqual(await groups("r-backup"), ["ct/300", "vm/100", "vm/500", "vm/501"], "a user sees its groups and its tokens'");
    assert.deepEqual(await groups("r-backup!tok"), ["ct/300"], "a token sees only its own groups");
    assert.deepEqual(await groups("r-backup!wide"), [], "a token granted Admin sees no more than its user's own");
    assert.deepEqual(await groups("r-power"), ["vm/400"]);
    assert.deepEqual(await groups("backup2"), ["vm/200"]);

    const snaps = async (who: Who): Promise<string[]> => [
      ...new Set((await ok<{ snapshot: string }[]>(who, "listSnapshots")).map((s) => s.snapshot.split("/").slice(0, 2).join("/"))),
    ];
    assert.deepEqual((await snaps("backup2")).sort(), ["vm/200"]);
    assert.deepEqual((await snaps("r-backup!tok")).sort(), ["ct/300"]);

    const tasks = async (who: Who): Promise<string[]> => (await ok<{ id: string }[]>(who, "listTasks")).map((t) => t.id);
    assert.ok((await tasks("r-reader")).includes(readerTask));
    assert.ok((await tasks("admin")).includes(readerTask), "Sys.Audit lists every task");
    for (const who of ["r-audit", "r-reader!bare", "r-dsadmin", "r-backup!wide"] as const) assert.ok(!(await tasks(who)).includes(readerTask), who);
  });

  void it("DatastoreAudit lists snapshots but cannot read, restore or change them", async () => {
    const snap = await newest(GROUPS.foreign.group);
    const listed = await ok<{ snapshot: string }[]>("r-audit", "listSnapshots", { query: { group: GROUPS.foreign.group } });
    assert.ok(listed.some((s) => s.snapshot === snap));
    const before = diskState();
    for (const [name, req] of [
      ["openReader", { json: { snapshot: snap } }],
      ["verify", { json: { snapshot: snap } }],
      ["setNotes", { json: { snapshot: snap, notes: "x" } }],
      ["forgetSnapshot", { query: { snapshot: snap } }],
      ["startBackup", { json: { group: GROUPS.foreign.group, keyFingerprint: null } }],
    ] as [RouteName, Req][]) {
      assert.equal((await call(conn("r-audit"), name, req)).status, 403, name);
    }
    assert.deepEqual(diskChanges(before, diskState()), []);
  });

  void it("a DatastoreBackup token cannot read, prune, forget, back up into or give away another owner's group", async () => {
    for (const key of ["own", "foreign", "power"] as const) {
      const { group } = GROUPS[key];
      const snap = await newest(group);
      const before = diskState();
      for (const [name, req] of [
        ["openReader", { json: { snapshot: snap } }],
        ["prune", { json: { group, keep: { keepLast: 1 } } }],
        ["forgetSnapshot", { query: { snapshot: await oldest(group) } }],
        ["startBackup", { json: { group, keyFingerprint: null } }],
        ["setOwner", { json: { group, owner: "r-backup!tok" } }],
        ["setProtected", { json: { snapshot: snap, protected: true } }],
      ] as [RouteName, Req][]) {
        const res = await call(conn("r-backup!tok"), name, req);
        assert.equal(res.status, 403, `${name} on ${group}: ${res.body.toString()}`);
        assert.match(errorOf(res), /^permission denied: r-backup!tok may not /);
      }
      assert.deepEqual(diskChanges(before, diskState()), [], group);
      assert.equal((await snapshots(group)).length, 2);
    }
  });

  void it("a DatastoreReader may restore and verify but not back up or forget", async () => {
    const { group } = GROUPS.foreign;
    const before = diskState();
    for (const [name, req] of [
      ["startBackup", { json: { group, keyFingerprint: null } }],
      ["startBackup", { json: { group: NEW_GROUP, keyFingerprint: null } }],
      ["forgetSnapshot", { query: { snapshot: await oldest(group) } }],
      ["prune", { json: { group, keep: { keepLast: 1 } } }],
    ] as [RouteName, Req][]) {
      assert.equal((await call(conn("r-reader"), name, req)).status, 403, name);
    }
    assert.deepEqual(diskChanges(before, diskState()), []);
    const r = await ok<{ session: string }>("r-reader", "openReader", { json: { snapshot: await newest(group) } });
    await ok("r-reader", "closeReader", { params: { session: r.session } });
  });

  void it("NoAccess sees nothing: no datastore, no group, no snapshot, no task", async () => {
    assert.deepEqual(await ok("r-noaccess", "listDatastores"), []);
    for (const name of ["datastoreStatus", "listGroups", "listSnapshots"] as const) {
      assert.equal((await call(conn("r-noaccess"), name)).status, 404, name);
    }
    assert.deepEqual(await ok("r-noaccess", "listTasks"), []);
    assert.equal((await call(conn("r-noaccess"), "getTask", { params: { id: readerTask } })).status, 404);
  });

  void it("the sessions of the matrix still work for their owner, and their groups are intact", async () => {
    const s = await backupSession();
    assert.equal((await call(conn("r-backup"), "backupBaseFile", { params: { session: s.sid, file: s.file } })).status, 200);
    await ok("r-backup", "abortBackup", { params: { session: s.sid } });
    s.done = true;
    const r = await readerSession();
    assert.equal((await call(conn("r-backup"), "readerChunk", { params: { session: r.sid, digest: r.digest } })).status, 200);
    await ok("r-backup", "closeReader", { params: { session: r.sid } });
    r.done = true;
    const groups = await ok<{ group: string; owner: string }[]>("admin", "listGroups");
    for (const { group, owner } of Object.values(GROUPS)) assert.equal(groups.find((g) => g.group === group)?.owner, owner, group);
    assert.ok(!groups.some((g) => g.group === NEW_GROUP), "aborted backups left no group");
  });

  void it("remotes: only an administrator adds or removes them; a backup user lists only those granted to it", async () => {
    const before = diskState();
    for (const who of ["r-backup", "r-dsadmin", "r-admin", "r-backup!wide"] as const) {
      const add = await call(conn(who), "addRemote", { json: { ...REMOTE_BODY, name: "mine" } });
      assert.equal(add.status, 403, `${who} adds a remote`);
      assert.match(errorOf(add), /^permission denied: \S+ may not add remotes\.$/);
      assert.equal((await call(conn(who), "removeRemote", { params: { name: REMOTE } })).status, 403, `${who} removes a remote`);
    }
    assert.deepEqual(diskChanges(before, diskState()), []);
    const names = async (who: Who): Promise<string[]> => (await ok<{ name: string }[]>(who, "listRemotes")).map((r) => r.name);
    assert.deepEqual(await names("admin"), [HIDDEN_REMOTE, REMOTE]);
    assert.deepEqual(await names("r-backup"), [REMOTE], "RemoteSyncOperator on one remote sees that one");
    for (const who of ["backup2", "r-backup!tok", "r-dsadmin", "r-audit", "r-noaccess"] as const) assert.deepEqual(await names(who), [], who);
    // a backup user without Remote.Read cannot sync at all
    const res = await call(conn("backup2"), "sync", { json: { remote: REMOTE } });
    assert.equal(res.status, 403);
    assert.equal(errorOf(res), `permission denied: backup2 may not sync from remote ${REMOTE}.`);
  });

  void it("remotes are listed without their secrets, which stay in a file of mode 0600", async () => {
    const listed = JSON.stringify(await ok("admin", "listRemotes"));
    assert.deepEqual(JSON.parse(listed), [
      { name: HIDDEN_REMOTE, url: "https://sync@127.0.0.1:1/main", fingerprint: Array(32).fill("00").join(":") },
      { name: REMOTE, url: "https://sync@127.0.0.1:1/main", fingerprint: Array(32).fill("00").join(":") },
    ]);
    const secretsFile = path.join(stateDir, "remote-secrets.json");
    assert.equal(fs.statSync(secretsFile).mode & 0o777, 0o600);
    assert.match(fs.readFileSync(secretsFile, "utf8"), /remote-secret-1/);
    assert.doesNotMatch(fs.readFileSync(path.join(stateDir, "remotes.json"), "utf8"), /remote-secret/);
    assert.doesNotMatch(listed, /remote-secret/);
  });

  void it("a sync names a remote: a URL is refused, and an unknown remote answers as one the caller may not read", async () => {
    const before = diskState();
    for (const body of [
      { remote: "https://127.0.0.1:1/main" },
      { remote: "https://admin@offsite.example:8007/main" },
      { remote: "https://127.0.0.1:1/main", fingerprint: "00".repeat(32), authId: "admin", secret: "x" },
    ]) {
      const res = await call(conn("admin"), "sync", { json: body });
      assert.equal(res.status, 400, JSON.stringify(body));
      if (!("fingerprint" in body)) assert.match(errorOf(res), /^request body remote is invalid: a sync names a remote, not a URL: an administrator adds the server first with `gorde remote add`\.$/);
    }
    const forbidden = await call(conn("r-backup"), "sync", { json: { remote: HIDDEN_REMOTE } });
    const unknown = await call(conn("r-backup"), "sync", { json: { remote: "nowhere" } });
    assert.equal(forbidden.status, 403);
    assert.deepEqual([unknown.status, errorOf(unknown)], [forbidden.status, errorOf(forbidden).replace(HIDDEN_REMOTE, "nowhere")]);
    assert.deepEqual(diskChanges(before, diskState()), []);
  });

  void it("remote add refuses bad names, URLs and fingerprints, and a name taken", async () => {
    const before = diskState();
    const bad: [Record<string, string>, RegExp][] = [
      [{ name: "" }, /name is invalid/],
      [{ name: "off.site" }, /name is invalid: a remote name/],
      [{ name: "1site" }, /name is invalid/],
      [{ name: "-site" }, /name is invalid/],
      [{ name: "off site" }, /name is invalid/],
      [{ name: "x".repeat(33) }, /name is invalid/],
      [{ name: "https://x" }, /name is invalid/],
      [{ url: "http://sync@127.0.0.1:1/main" }, /url is invalid/],
      [{ url: "https://127.0.0.1:1/main" }, /names no valid user/],
      [{ url: "https://sync@127.0.0.1:1" }, /names no datastore/],
      [{ url: "https://sync:pw@127.0.0.1:1/main" }, /carries no password/],
      [{ url: "https://sync@127.0.0.1:1/main?x=1" }, /query or fragment/],
      [{ url: "https://sync@127.0.0.1:1/main/ns" }, /names no valid datastore/],
      [{ url: "https://sync@127.0.0.1:99999/main" }, /not a repository URL/],
      [{ fingerprint: "abc" }, /not a SHA-256 fingerprint/],
      [{ secret: "" }, /secret is invalid/],
    ];
    for (const [change, why] of bad) {
      const res = await call(conn("admin"), "addRemote", { json: { ...REMOTE_BODY, name: "fresh", ...change } });
      assert.equal(res.status, 400, `${JSON.stringify(change)}: ${errorOf(res)}`);
      assert.match(errorOf(res), why, JSON.stringify(change));
    }
    const taken = await call(conn("admin"), "addRemote", { json: REMOTE_BODY });
    assert.deepEqual([taken.status, errorOf(taken)], [409, `remote ${REMOTE} exists already; remove it first to change it.`]);
    assert.equal((await call(conn("admin"), "removeRemote", { params: { name: "nowhere" } })).status, 404);
    assert.deepEqual(diskChanges(before, diskState()), []);
  });

  void it("a sync that cannot reach its remote says so with the remote's name and a short reason", async () => {
    const { task } = await ok<{ task: string }>("r-backup", "sync", { json: { remote: REMOTE } });
    assert.equal(await waitTask(task), "failed");
    const t = await ok<{ error: string; target: string }>("r-backup", "getTask", { params: { id: task } });
    assert.equal(t.error, `cannot connect to remote ${REMOTE}: connection refused.`);
    assert.equal(t.target, `remote ${REMOTE}`);
    const log = await ok<{ lines: string[] }>("r-backup", "taskLog", { params: { id: task } });
    assert.doesNotMatch(log.lines.join("\n"), /127\.0\.0\.1|:1\b|sync@/);
  });

  // Last: it adds groups to main.
  void it("sync pulls only into groups the caller owns or creates, never into an ownerless group with snapshots", async () => {
    // a group written straight into the datastore directory has no owner
    const local = await Datastore.open(storeDirs[0]!);
    const file = path.join(tmp.dir, "ownerless.img");
    fs.writeFileSync(file, randomBytes(64 * 1024));
    try {
      await backup(local, { group: parseGroup("vm/777"), sources: [{ archive: "disk.img", source: file }], time: 1_700_000_000 });
    } finally {
      local.close();
    }
    assert.equal((await ok<{ group: string; owner: string | null }[]>("admin", "listGroups")).find((g) => g.group === "vm/777")?.owner, null);

    // a second server, where the caller may read everything, has vm/777, vm/778 and vm/200
    const source = await startServer({
      stateDir: path.join(tmp.dir, "source-state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { src: path.join(tmp.dir, "ds-source") },
      adminPassword: ADMIN_PASSWORD,
      authFailureDelayMs: 0,
    });
    try {
      for (const group of ["vm/777", "vm/778", "vm/200"]) {
        const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${source.port}/src`, { secret: ADMIN_PASSWORD, fingerprint: source.fingerprint });
        try {
          await runBackup({ group: parseGroup(group), sources: [{ archive: "disk.img", source: file }] }, (req) => repo.openBackup(req));
        } finally {
          repo.close();
        }
      }
      const before = await snapshots("vm/777");
      await ok("admin", "addRemote", { json: { name: "source", url: `https://admin@127.0.0.1:${source.port}/src`, fingerprint: source.fingerprint, secret: ADMIN_PASSWORD } });
      await ok("admin", "setAcl", { json: { path: "/remote/source", authId: "r-backup", role: "RemoteSyncOperator" } });
      const { task } = await ok<{ task: string }>("r-backup", "sync", { json: { remote: "source" } });
      assert.equal(await waitTask(task), "ok");
      const groups = await ok<{ group: string; owner: string | null }[]>("admin", "listGroups");
      const owner = (g: string): string | null | undefined => groups.find((x) => x.group === g)?.owner;
      assert.equal(owner("vm/778"), "r-backup", "a new group becomes the caller's");
      assert.equal(owner("vm/200"), "backup2", "another owner's group is left alone");
      assert.equal(owner("vm/777"), null, "an ownerless group with snapshots is not taken over");
      assert.deepEqual(await snapshots("vm/777"), before);
      assert.equal((await call(conn("r-backup"), "openReader", { json: { snapshot: before[0] } })).status, 403);
      assert.deepEqual((await snapshots("vm/200")).length, 2);
    } finally {
      await source.close();
    }
  });
});
