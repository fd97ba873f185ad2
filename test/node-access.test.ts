// The permission matrix of `gorde node`: every route of the node's API table (its guests,
// their backups, restores and drills, its storage, tasks, plan, users and ACLs, the cluster
// and HA routes) called by one principal of every role and token kind, against a real node
// with real containers and a real backup server on loopback. Each answer's status is
// asserted exactly; after every refused request the node's data directory and the server's
// datastore must be exactly as they were before it. The server's own matrix is
// server-access.test.ts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { NODE_ROUTES, type NodeRouteName } from "../src/api/node-routes.ts";
import { type Response, ServerConnection } from "../src/api/connection.ts";
import { routePath } from "../src/api/route.ts";
import { lxcAvailable } from "../src/node/lxc.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const lxc = lxcAvailable();
const etcd = spawnSync("etcd", ["--version"]).status === 0;
const why = !lxc.ok ? lxc.why : !etcd ? "etcd is not installed (scripts/setup.sh installs it as root)" : undefined;
if (why) console.error(`\n*** SKIPPED: the node's permission matrix: ${why}. ***\n`);

const NODE_PASSWORD = "node-admin-1";
const STORE = "store";

/** The callers; every matrix row has one expected status per caller, in this order. */
const PRINCIPALS = [
  "admin", //       A   Admin on /
  "g-admin", //     GA  Admin on /vms/100
  "g-user", //      VU  PVEVMUser on /vms (every guest)
  "g-one", //       V1  PVEVMUser on /vms/100
  "g-one!tok", //   TK  token of g-one, PVEVMUser on /vms/100
  "g-one!bare", //  BR  token of g-one without any ACL entry
  "auditor", //     AU  PVEAuditor on /
  "ds-user", //     DS  PVEDatastoreUser on /storage/store
  "nobody", //      NA  NoAccess on /
  "g-new", //       NW  Admin on /vms/300 (a guest that does not exist yet)
] as const;
type Who = (typeof PRINCIPALS)[number];
type Row = [number, number, number, number, number, number, number, number, number, number];

const ACL: [Who, string, string][] = [
  ["g-admin", "/vms/100", "Admin"],
  ["g-user", "/vms", "PVEVMUser"],
  ["g-one", "/vms/100", "PVEVMUser"],
  ["g-one!tok", "/vms/100", "PVEVMUser"],
  ["auditor", "/", "PVEAuditor"],
  ["ds-user", `/storage/${STORE}`, "PVEDatastoreUser"],
  ["nobody", "/", "NoAccess"],
  ["g-new", "/vms/300", "Admin"],
];

interface Req {
  params?: Record<string, string | number>;
  query?: Record<string, string | number | boolean | undefined>;
  json?: unknown;
}

interface Case {
  label: string;
  expect: Row;
  req: (who: Who) => Req | Promise<Req>;
  /** after a 2xx: finish or undo what the request did, so the next caller meets the same state */
  ok?: (who: Who, res: Response) => Promise<void>;
  /** a 2xx answer's body as this caller must see it (a list filtered to what it may see) */
  check?: (who: Who, body: unknown) => void;
  /** state outside the disk (etcd's) that a refused request must leave as it was */
  unchanged?: () => Promise<unknown>;
}

//                         A    GA   VU   V1   TK   BR   AU   DS   NA   NW
const EVERYONE: Row = /**/ [200, 200, 200, 200, 200, 200, 200, 200, 200, 200];
const ADMIN: Row = /*   */ [200, 403, 403, 403, 403, 403, 403, 403, 403, 403];
const SYS_AUDIT: Row = /**/ [200, 403, 403, 403, 403, 403, 200, 403, 403, 403];
const NODE_STATUS: Row = [200, 200, 200, 200, 200, 403, 200, 403, 403, 200];
const AUDIT_100: Row = /**/ [200, 200, 200, 200, 200, 404, 200, 404, 404, 404];
const POWER_100: Row = /**/ [200, 200, 200, 200, 200, 404, 403, 404, 404, 404];
const ALLOC_100: Row = /**/ [200, 200, 403, 403, 403, 404, 403, 404, 404, 404];
const AUDIT_200: Row = /**/ [200, 404, 200, 404, 404, 404, 200, 404, 404, 404];
const POWER_200: Row = /**/ [200, 404, 200, 404, 404, 404, 403, 404, 404, 404];
const ALLOC_200: Row = /**/ [200, 404, 403, 404, 404, 404, 403, 404, 404, 404];
const STORE_AUDIT: Row = [200, 404, 404, 404, 404, 404, 200, 200, 404, 404];
const STORE_ALLOC: Row = [200, 404, 404, 404, 404, 404, 403, 200, 404, 404];
/** a guest's backup contents: the storage's Audit and VM.Backup on the guest */
const GUEST_DATA: Row = [200, 404, 404, 404, 404, 404, 403, 403, 404, 404];

void describe("the node's permission matrix", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-node-access-");
  let server: ServerProcess;
  let node: NodeProcess;
  let dataDir: string;
  let storeDir: string;
  const conns = new Map<Who, ServerConnection>();
  const secrets = new Map<Who, string>();
  /** the snapshots of guests 100 and 200, and what the cases need of them */
  let snap100: string;
  let snap200: string;
  let ct100Config: unknown;
  let adminTask: string;
  let oneTask: string;
  let drill100: number;

  const conn = (who: Who): ServerConnection => conns.get(who)!;
  const call = (who: Who, name: NodeRouteName, req: Req = {}): Promise<Response> => {
    const r = NODE_ROUTES[name];
    const params = Object.fromEntries(Object.entries(req.params ?? {}).map(([k, v]) => [k, String(v)]));
    return conn(who).request(r.method, routePath(r, params), { query: req.query, json: req.json, once: true });
  };
  const ok = async <T = unknown>(who: Who, name: NodeRouteName, req: Req = {}): Promise<T> => {
    const res = await call(who, name, req);
    assert.ok(res.status >= 200 && res.status < 300, `${name} as ${who}: ${res.status} ${res.body.toString()}`);
    return (NODE_ROUTES[name].response === "text" ? res.body.toString() : JSON.parse(res.body.toString())) as T;
  };
  /** Follows a node task to its end; its state. */
  const waitTask = async (id: string): Promise<string> => {
    const deadline = Date.now() + 180_000;
    for (;;) {
      const t = await ok<{ state: string }>("admin", "getTask", { params: { id } });
      if (t.state !== "running") return t.state;
      assert.ok(Date.now() < deadline, `task ${id} ends`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const taskOf = (res: Response): string => (JSON.parse(res.body.toString()) as { task: string }).task;
  const snapshotsOf = async (group: string): Promise<string[]> =>
    (await ok<{ snapshot: string; finished: boolean }[]>("admin", "storageSnapshots", { params: { storage: STORE }, query: { group } })).filter((s) => s.finished).map((s) => s.snapshot);
  /** A new snapshot of guest 200 (stopped), backed up by admin. */
  const backup200 = async (): Promise<string> => {
    const task = await ok<{ task: string }>("admin", "backupGuest", { params: { id: 200 }, json: {} });
    assert.equal(await waitTask(task.task), "ok");
    return (await snapshotsOf("ct/200")).at(-1)!;
  };
  const demoCt = async (id: number): Promise<void> => {
    await ok("admin", "createGuest", { json: { demo: { kind: "ct", id, httpPort: await freePort() } } });
  };

  // ---- the state on disk: every path of the node's data directory and of the datastore

  const diskState = (): Map<string, string> => {
    const out = new Map<string, string>();
    // etcd writes its own files as it runs: what the cluster holds is checked through the API (`unchanged`).
    const etcdData = path.join(dataDir, "state", "cluster", "etcd");
    const walk = (p: string): void => {
      if (p === etcdData) return;
      const st = fs.lstatSync(p, { bigint: true });
      out.set(p, `mode=${st.mode.toString(8)} size=${st.size} mtime=${st.mtimeNs} ino=${st.ino}`);
      if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(path.join(p, n));
    };
    walk(dataDir);
    walk(storeDir);
    return out;
  };
  const diskChanges = (before: Map<string, string>, after: Map<string, string>): string[] => {
    const out: string[] = [];
    for (const [p, v] of before) {
      const w = after.get(p);
      if (w === undefined) out.push(`removed ${p}`);
      else if (w !== v) out.push(`changed ${p}: ${v} -> ${w}`);
    }
    for (const p of after.keys()) if (!before.has(p)) out.push(`added ${p}`);
    return out;
  };

  before(async () => {
    storeDir = path.join(tmp.dir, STORE);
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { [STORE]: storeDir } });
    dataDir = path.join(tmp.dir, "node1");
    node = await startNodeProcess({ name: "node1", dataDir, serverUrl: server.url(STORE), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
    const connect = (who: Who, secret: string): Promise<ServerConnection> => ServerConnection.connect({ host: "127.0.0.1", port: node.port, authId: who, secret, fingerprint: node.fingerprint });
    secrets.set("admin", NODE_PASSWORD);
    conns.set("admin", await connect("admin", NODE_PASSWORD));
    for (const who of PRINCIPALS) {
      if (who === "admin" || who.includes("!")) continue;
      const password = `${who}-password`;
      await ok("admin", "addUser", { json: { name: who, password } });
      secrets.set(who, password);
    }
    for (const who of ["g-one!tok", "g-one!bare"] as const) {
      const [user, token] = who.split("!") as [string, string];
      const t = await ok<{ secret: string }>("admin", "addToken", { params: { user, token }, json: {} });
      secrets.set(who, t.secret);
    }
    for (const [authId, p, role] of ACL) await ok("admin", "setAcl", { json: { path: p, authId, role } });
    for (const who of PRINCIPALS) if (who !== "admin") conns.set(who, await connect(who, secrets.get(who)!));
    // spares the access routes remove
    await ok("admin", "addUser", { json: { name: "spare", password: "spare-password" } });
    await ok("admin", "addToken", { params: { user: "g-one", token: "spare" }, json: {} });

    // Two containers, each backed up once; a drill of the first; a task of admin and one of g-one.
    await demoCt(100);
    await demoCt(200);
    ct100Config = await ok("admin", "guestConfig", { params: { id: 100 } });
    snap200 = await backup200();
    const t = await ok<{ task: string }>("g-one", "backupGuest", { params: { id: 100 }, json: {} });
    assert.equal(await waitTask(t.task), "ok");
    oneTask = t.task;
    snap100 = (await snapshotsOf("ct/100")).at(-1)!;
    const d = await ok<{ task: string; drill: number }>("admin", "startDrill", { json: { guest: 100 } });
    assert.equal(await waitTask(d.task), "ok");
    drill100 = d.drill;
    const tasks = await ok<{ id: string; authId: string; type: string }[]>("admin", "listTasks");
    adminTask = tasks.find((x) => x.authId === "admin" && x.type === "backup")!.id;
  });

  after(async () => {
    for (const c of conns.values()) c.close();
    await node?.stop();
    await server?.stop();
    const left = spawnSync("pgrep", ["-af", tmp.dir]).stdout.toString().trim();
    tmp.cleanup();
    assert.equal(left, "", "no process of the test's guests is left");
  });

  /** The cases in the order they run: createCluster last (it makes the node a cluster of one). */
  const cases = (): [NodeRouteName, Case[]][] => [
    ["version", [{ label: "", expect: EVERYONE, req: () => ({}) }]],
    ["nodeStatus", [{ label: "", expect: NODE_STATUS, req: () => ({}) }]],
    [
      "listGuests",
      [
        {
          label: "(only the guests it may see)",
          expect: EVERYONE,
          req: () => ({}),
          check: (who, body) => {
            const i = PRINCIPALS.indexOf(who);
            const want = [AUDIT_100[i] === 200 ? 100 : 0, AUDIT_200[i] === 200 ? 200 : 0].filter(Boolean);
            assert.deepEqual((body as { id: number }[]).map((g) => g.id).sort(), want);
          },
        },
      ],
    ],
    [
      "createGuest",
      [
        {
          label: "a new guest 300",
          expect: [200, 403, 403, 403, 403, 403, 403, 403, 403, 200],
          req: async () => ({ json: { demo: { kind: "ct", id: 300, httpPort: await freePort() } } }),
          ok: async () => void (await ok("admin", "removeGuest", { params: { id: 300 } })),
        },
        { label: "guest 100, which exists", expect: [409, 409, 403, 403, 403, 403, 403, 403, 403, 403], req: async () => ({ json: { demo: { kind: "ct", id: 100, httpPort: await freePort() } } }) },
      ],
    ],
    ["guestStatus", [{ label: "100", expect: AUDIT_100, req: () => ({ params: { id: 100 } }) }, { label: "200", expect: AUDIT_200, req: () => ({ params: { id: 200 } }) }]],
    ["guestConfig", [{ label: "100", expect: AUDIT_100, req: () => ({ params: { id: 100 } }) }, { label: "200", expect: AUDIT_200, req: () => ({ params: { id: 200 } }) }]],
    ["guestLog", [{ label: "100", expect: AUDIT_100, req: () => ({ params: { id: 100 } }) }, { label: "200", expect: AUDIT_200, req: () => ({ params: { id: 200 } }) }]],
    ["setGuestConfig", [{ label: "100, its own config again", expect: ALLOC_100, req: () => ({ params: { id: 100 }, json: ct100Config }) }]],
    [
      "startGuest",
      [
        { label: "100", expect: POWER_100, req: () => ({ params: { id: 100 } }), ok: async () => void (await ok("admin", "stopGuest", { params: { id: 100 } })) },
        { label: "200", expect: POWER_200, req: () => ({ params: { id: 200 } }), ok: async () => void (await ok("admin", "stopGuest", { params: { id: 200 } })) },
      ],
    ],
    ["stopGuest", [{ label: "100 (stopped)", expect: POWER_100, req: () => ({ params: { id: 100 } }) }]],
    [
      "backupGuest",
      [
        {
          label: "100",
          expect: [200, 200, 200, 200, 200, 404, 403, 404, 404, 404],
          req: () => ({ params: { id: 100 }, json: {} }),
          ok: async (_who, res) => assert.equal(await waitTask(taskOf(res)), "ok"),
        },
      ],
    ],
    [
      "restoreGuest",
      [
        {
          // VM.Backup on the new guest and on the snapshot's guest, whose data it is
          label: "100's snapshot as a new guest 300",
          expect: [200, 403, 200, 403, 403, 403, 403, 403, 403, 403],
          req: () => ({ json: { snapshot: snap100, id: 300 } }),
          ok: async (_who, res) => {
            assert.equal(await waitTask(taskOf(res)), "ok");
            await ok("admin", "removeGuest", { params: { id: 300 } });
          },
        },
        {
          label: "100's snapshot over guest 100 (--force: and VM.Allocate)",
          expect: [200, 200, 403, 403, 403, 403, 403, 403, 403, 403],
          req: () => ({ json: { snapshot: snap100, force: true } }),
          ok: async (_who, res) => assert.equal(await waitTask(taskOf(res)), "ok"),
        },
      ],
    ],
    [
      "startDrill",
      [
        {
          label: "of 100",
          expect: POWER_100,
          req: () => ({ json: { guest: 100, snapshot: snap100 } }),
          ok: async (_who, res) => assert.equal(await waitTask(taskOf(res)), "ok"),
        },
      ],
    ],
    [
      "listDrills",
      [
        { label: "all (only of guests it may see)", expect: EVERYONE, req: () => ({}), check: (who, body) => assert.equal((body as unknown[]).length > 0, AUDIT_100[PRINCIPALS.indexOf(who)] === 200) },
        { label: "of 100", expect: AUDIT_100, req: () => ({ query: { guest: 100 } }) },
        { label: "of 200", expect: AUDIT_200, req: () => ({ query: { guest: 200 } }) },
      ],
    ],
    ["getDrill", [{ label: "of 100", expect: [200, 200, 200, 200, 200, 404, 200, 404, 404, 404], req: () => ({ params: { id: drill100 } }) }]],
    [
      "listStorages",
      [{ label: "(only to who may see it)", expect: EVERYONE, req: () => ({}), check: (who, body) => assert.equal((body as unknown[]).length, STORE_AUDIT[PRINCIPALS.indexOf(who)] === 200 ? 1 : 0) }],
    ],
    ["storageStatus", [{ label: "", expect: STORE_AUDIT, req: () => ({ params: { storage: STORE } }) }, { label: "another", expect: NOBODY, req: () => ({ params: { storage: "other" } }) }]],
    ["storageHistory", [{ label: "", expect: STORE_AUDIT, req: () => ({ params: { storage: STORE } }) }]],
    ["storageSnapshots", [{ label: "", expect: STORE_AUDIT, req: () => ({ params: { storage: STORE } }) }]],
    ["browseArchive", [{ label: "100's snapshot", expect: GUEST_DATA, req: () => ({ params: { storage: STORE }, query: { snapshot: snap100, archive: "root.tree" } }) }]],
    ["downloadFile", [{ label: "100's /etc/hostname", expect: GUEST_DATA, req: () => ({ params: { storage: STORE }, query: { snapshot: snap100, archive: "root.tree", path: "/etc/hostname" } }) }]],
    ["setStorageNotes", [{ label: "200's snapshot", expect: STORE_ALLOC, req: () => ({ params: { storage: STORE }, json: { snapshot: snap200, notes: "checked" } }) }]],
    [
      "setStorageProtected",
      [
        {
          label: "200's snapshot",
          expect: STORE_ALLOC,
          req: () => ({ params: { storage: STORE }, json: { snapshot: snap200, protected: true } }),
          ok: async () => void (await ok("admin", "setStorageProtected", { params: { storage: STORE }, json: { snapshot: snap200, protected: false } })),
        },
      ],
    ],
    [
      "forgetStorageSnapshot",
      [
        {
          label: "200's newest snapshot",
          expect: STORE_ALLOC,
          req: () => ({ params: { storage: STORE }, query: { snapshot: snap200 } }),
          ok: async () => {
            snap200 = await backup200();
          },
        },
      ],
    ],
    ["listTasks", [{ label: "(filtered)", expect: EVERYONE, req: () => ({}) }]],
    [
      "getTask",
      [
        { label: "admin's", expect: SYS_AUDIT_404, req: () => ({ params: { id: adminTask } }) },
        { label: "g-one's", expect: [200, 404, 404, 200, 404, 404, 200, 404, 404, 404], req: () => ({ params: { id: oneTask } }) },
      ],
    ],
    ["taskLog", [{ label: "g-one's", expect: [200, 404, 404, 200, 404, 404, 200, 404, 404, 404], req: () => ({ params: { id: oneTask } }) }]],
    ["taskEvents", [{ label: "g-one's (ended)", expect: [200, 404, 404, 200, 404, 404, 200, 404, 404, 404], req: () => ({ params: { id: oneTask } }) }]],
    ["abortTask", [{ label: "g-one's (ended)", expect: [409, 404, 404, 409, 404, 404, 403, 404, 404, 404], req: () => ({ params: { id: oneTask } }) }]],
    ["getPlan", [{ label: "", expect: SYS_AUDIT, req: () => ({}) }]],
    ["applyPlan", [{ label: "a yearly backup", expect: ADMIN, req: () => ({ json: { text: "version: 1\nguests: {}\njobs:\n  - { name: yearly, type: backup, schedule: yearly, guests: all }\n" } }) }]],
    ["listRuns", [{ label: "", expect: SYS_AUDIT, req: () => ({}) }]],
    ["listUsers", [{ label: "", expect: SYS_AUDIT, req: () => ({}) }]],
    ["addUser", [{ label: "", expect: ADMIN, req: () => ({ json: { name: "newcomer", password: "newcomer-password" } }), ok: async () => void (await ok("admin", "removeUser", { params: { user: "newcomer" } })) }]],
    ["updateUser", [{ label: "nobody's comment", expect: ADMIN, req: () => ({ params: { user: "nobody" }, json: { comment: "changed" } }) }]],
    [
      "removeUser",
      [{ label: "spare", expect: ADMIN, req: () => ({ params: { user: "spare" } }), ok: async () => void (await ok("admin", "addUser", { json: { name: "spare", password: "spare-password" } })) }],
    ],
    ["listTokens", [{ label: "g-one's", expect: SELF_ONE, req: () => ({ params: { user: "g-one" } }) }]],
    [
      "addToken",
      [{ label: "to g-one", expect: SELF_ONE, req: () => ({ params: { user: "g-one", token: "fresh" }, json: {} }), ok: async () => void (await ok("admin", "removeToken", { params: { user: "g-one", token: "fresh" } })) }],
    ],
    [
      "removeToken",
      [{ label: "g-one!spare", expect: SELF_ONE, req: () => ({ params: { user: "g-one", token: "spare" } }), ok: async () => void (await ok("admin", "addToken", { params: { user: "g-one", token: "spare" }, json: {} })) }],
    ],
    ["listAcl", [{ label: "", expect: SYS_AUDIT, req: () => ({}) }]],
    [
      "setAcl",
      [
        {
          label: "PVEAuditor on /vms/200 to g-one",
          expect: ADMIN,
          req: () => ({ json: { path: "/vms/200", authId: "g-one", role: "PVEAuditor" } }),
          ok: async () => void (await ok("admin", "setAcl", { json: { path: "/vms/200", authId: "g-one", role: "PVEAuditor", remove: true } })),
        },
      ],
    ],
    ["login", [{ label: "with its own credentials", expect: EVERYONE, req: (who) => ({ json: { username: who, password: secrets.get(who) } }) }]],
    ["logout", [{ label: "(no web session)", expect: EVERYONE, req: () => ({}) }]],
    ["permissions", [{ label: "", expect: EVERYONE, req: () => ({}) }]],
    ["clusterStatus", [{ label: "(in no cluster)", expect: SYS_AUDIT, req: () => ({}) }]],
    [
      "joinCluster",
      [
        {
          label: "through a node in no cluster",
          expect: [404, 403, 403, 403, 403, 403, 403, 403, 403, 403],
          req: () => ({ json: { cluster: "lab", address: "127.0.0.1", member: { url: `https://admin@127.0.0.1:${node.port}`, secret: NODE_PASSWORD, fingerprint: node.fingerprint } } }),
        },
      ],
    ],
    ["admitMember", [{ label: "(in no cluster)", expect: [404, 403, 403, 403, 403, 403, 403, 403, 403, 403], req: () => ({ json: { name: "node2", peerUrl: "https://127.0.0.1:2380", role: "node" } }) }]],
    ["removeGuest", [{ label: "200", expect: ALLOC_200, req: () => ({ params: { id: 200 } }), ok: async () => demoCt(200) }]],
    ["haStatus", [{ label: "(in no cluster)", expect: NOBODY, req: () => ({}) }]],
    [
      "createCluster",
      [
        {
          label: "a cluster of this node alone",
          expect: ADMIN,
          req: async () => ({ json: { name: "lab", address: "127.0.0.1", peerPort: await freePort(), clientPort: await freePort() } }),
          // The node's plan becomes the cluster's a moment later (its plan file rewritten):
          // waited for, or that write would show up beside the next refused request.
          ok: async () => {
            for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(100)) {
              if ((await ok<{ cluster: string | null }>("admin", "getPlan")).cluster === "lab") return;
            }
            throw new Error("the node's plan did not become the plan of cluster lab within 30 s");
          },
        },
      ],
    ],
    // A cluster of one from here on.
    ["clusterStatus", [{ label: "(a cluster of one)", expect: SYS_AUDIT, req: () => ({}) }]],
    [
      "addHa",
      [
        {
          label: "ct:100",
          expect: ADMIN,
          req: () => ({ json: { sid: "ct:100", state: "stopped" } }),
          unchanged: () => ok("admin", "haStatus"),
          ok: async () => void (await ok("admin", "removeHa", { params: { sid: "ct:100" } })),
        },
      ],
    ],
    [
      "removeHa",
      [
        {
          label: "ct:200",
          expect: ADMIN,
          req: async () => {
            const has = (await ok<{ sid: string }[]>("admin", "haStatus")).some((r) => r.sid === "ct:200");
            if (!has) await ok("admin", "addHa", { json: { sid: "ct:200", state: "stopped" } });
            return { params: { sid: "ct:200" } };
          },
          unchanged: () => ok("admin", "haStatus"),
        },
      ],
    ],
    ["haStatus", [{ label: "ct:200 only to who sees it", expect: EVERYONE, req: () => ({}), check: (who, body) => assert.deepEqual((body as { sid: string }[]).map((r) => r.sid), AUDIT_200[PRINCIPALS.indexOf(who)] === 200 ? ["ct:200"] : []) }]],
    ["listRecoveries", [{ label: "(none yet)", expect: EVERYONE, req: () => ({}) }]],
  ];

  void it("answers every route as each role and token may, and a refused request changes nothing", async () => {
    const all = cases();
    // Every route of the node's table is in the matrix.
    const covered = new Set(all.map(([name]) => name));
    assert.deepEqual(
      Object.keys(NODE_ROUTES).filter((n) => !covered.has(n as NodeRouteName)),
      [],
      "every route of NODE_ROUTES has its row",
    );
    const wrong: string[] = [];
    let calls = 0;
    for (const [name, list] of all) {
      for (const c of list) {
        for (let i = 0; i < PRINCIPALS.length; i++) {
          const who = PRINCIPALS[i]!;
          const want = c.expect[i]!;
          const req = await c.req(who);
          const before = diskState();
          const beforeElse = await c.unchanged?.();
          const res = await call(who, name, req);
          calls++;
          if (res.status !== want) wrong.push(`${name} ${c.label} as ${who}: ${res.status}, expected ${want} (${res.body.toString().slice(0, 200)})`);
          if (res.status >= 200 && res.status < 300) {
            if (c.check) {
              try {
                c.check(who, JSON.parse(res.body.toString()));
              } catch (e) {
                wrong.push(`${name} ${c.label} as ${who}: ${(e as Error).message.split("\n")[0]}`);
              }
            }
            await c.ok?.(who, res);
          } else {
            if (c.unchanged) assert.deepEqual(await c.unchanged(), beforeElse, `${name} ${c.label} as ${who} was refused and changed nothing`);
            const changes = diskChanges(before, diskState());
            if (changes.length) wrong.push(`${name} ${c.label} as ${who} was refused (${res.status}) but changed: ${changes.slice(0, 5).join("; ")}`);
            if (res.status < 400 || res.status >= 500 || !/^\{"error":"/.test(res.body.toString())) wrong.push(`${name} ${c.label} as ${who}: a refusal without its one-sentence error: ${res.status} ${res.body.toString().slice(0, 200)}`);
          }
        }
      }
    }
    console.log(`node permission matrix: ${all.length} routes, ${calls} calls, ${PRINCIPALS.length} callers`);
    assert.deepEqual(wrong, []);
  });
});

const NOBODY: Row = [404, 404, 404, 404, 404, 404, 404, 404, 404, 404];
const SYS_AUDIT_404: Row = [200, 404, 404, 404, 404, 404, 200, 404, 404, 404];
/** Permissions.Modify on /, or the user itself (g-one; not its tokens) */
const SELF_ONE: Row = [200, 403, 403, 200, 403, 403, 403, 403, 403, 403];
