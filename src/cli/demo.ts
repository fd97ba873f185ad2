// `gorde demo`: the story on this machine, step by step, checking each step. The backup
// server's story first: a server on loopback with its own certificate, a cluster user with
// an API token, a VM disk image and a container directory (encrypted on the client) backed
// up through HTTPS twice (the second incremental), dedup shown, retention applied, garbage
// collected and verified as server tasks, restored bit for bit, and pulled to an offsite
// server. Then the nodes' story (demo-nodes.ts): real guests on one node, backed up live,
// restored as working guests on another, restore drills of both (and of a broken snapshot,
// which must fail), and a plan whose scheduled backups run by themselves. Last the cluster
// (demo-cluster.ts): both guests HA on node1, node1 killed, both back on node2 from backup;
// and the web interface of node2 and of the server, as a browser uses it (demo-web.ts). With
// --json the story goes to stderr and stdout gets one document at the end (demo-report.ts).
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServerConnection } from "../api/connection.ts";
import { ROUTES } from "../api/routes.ts";
import { type BackupResult, runBackup } from "../client/backup.ts";
import { createKeyFile, loadMasterKey } from "../client/key-file.ts";
import { RemoteRepository } from "../client/remote.ts";
import { restoreArchive } from "../client/restore.ts";
import { parseGroup } from "../format/names.ts";
import { startServer } from "../server/server.ts";
import { clusterStory } from "./demo-cluster.ts";
import { nodeStory } from "./demo-nodes.ts";
import { WEB_PATHS, checkWebInterface } from "./demo-web.ts";
import { type DemoReport, DemoSteps } from "./demo-report.ts";
import { formatBytes } from "./progress-bar.ts";

export interface DemoOptions {
  keep: boolean;
  /** the human story */
  out(s: string): void;
  /** given the --json document once the demo has stopped everything, whether it worked or not */
  report?(r: DemoReport): void;
  signal: AbortSignal;
}

const IMAGE_SIZE = 256 * 1024 * 1024;

export async function runDemo(opts: DemoOptions): Promise<number> {
  const steps = new DemoSteps();
  try {
    await story(opts, steps);
    steps.end(true);
  } catch (err) {
    steps.end(false);
    opts.report?.(steps.report());
    throw err;
  }
  opts.report?.(steps.report());
  return 0;
}

async function story(opts: DemoOptions, steps: DemoSteps): Promise<void> {
  const say = (s: string): void => opts.out(s + "\n");
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-demo-"));
  let step = 0;
  const check = (ok: boolean, what: string): void => {
    if (!ok) throw new Error(`demo step failed: ${what}`);
  };
  const title = (s: string): void => {
    steps.begin(s);
    say(`\n${++step}. ${s}`);
  };
  const stops: (() => Promise<void>)[] = [];
  try {
    say(`gorde demo — working in ${work}`);
    const img = path.join(work, "vm-100-disk0.raw");
    const tree = path.join(work, "ct-101-rootfs");
    title("Guest data: a raw ext4 disk image and a container root file system");
    makeTree(tree);
    makeImage(img, tree, work);
    // Only in the container (not in the disk image): the encryption check below looks for it.
    const marker = Buffer.from(`container secret ${randomBytes(8).toString("hex")}\n`);
    fs.writeFileSync(path.join(tree, "srv/www/secret.txt"), marker);
    say(`   disk image ${formatBytes(IMAGE_SIZE)} (ext4), directory of ${countFiles(tree)} entries`);

    title("The backup server: HTTPS on loopback, a self-signed certificate the clients pin");
    const adminPassword = randomBytes(12).toString("base64url");
    const server = await startServer({
      stateDir: path.join(work, "server-state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { main: path.join(work, "datastore"), cluster: path.join(work, "cluster-datastore") },
      adminPassword,
    });
    stops.push(() => server.close());
    say(`   listening on 127.0.0.1:${server.port}, fingerprint ${server.fingerprint.slice(0, 23)}…`);
    const admin = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: "admin", secret: adminPassword, fingerprint: server.fingerprint });
    await admin.call(ROUTES, "addUser", { json: { name: "cluster", password: randomBytes(12).toString("base64url") } });
    const token = await admin.call(ROUTES, "addToken", { params: { user: "cluster", token: "node1" }, json: {} });
    for (const store of ["main", "cluster"]) {
      await admin.call(ROUTES, "setAcl", { json: { path: `/datastore/${store}`, authId: "cluster", role: "DatastorePowerUser" } });
      await admin.call(ROUTES, "setAcl", { json: { path: `/datastore/${store}`, authId: token.tokenId, role: "DatastorePowerUser" } });
    }
    admin.close();
    // The operator's view, for the datastore-wide tasks (GC, verify) the cluster may not run.
    const operator = await RemoteRepository.connect(`https://admin@127.0.0.1:${server.port}/main`, { secret: adminPassword, fingerprint: server.fingerprint });
    stops.unshift(() => Promise.resolve(operator.close()));
    say(`   user cluster with role DatastorePowerUser; API token ${token.tokenId} (its secret is shown once)`);
    const url = `https://${token.tokenId}@127.0.0.1:${server.port}/main`;
    const repo = await RemoteRepository.connect(url, { secret: token.secret, fingerprint: server.fingerprint });
    stops.unshift(() => Promise.resolve(repo.close()));

    title("A client-side encryption key for the container (the server never sees it)");
    const keyFile = path.join(work, "ct-101.key");
    const passphrase = randomBytes(12).toString("base64url");
    const { fingerprint: keyFp } = await createKeyFile(keyFile, passphrase);
    const key = await loadMasterKey(keyFile, passphrase);
    say(`   key ${keyFp.slice(0, 23)}…, protected by a passphrase (scrypt)`);

    const day = 86_400;
    const t0 = Math.floor(Date.now() / 1000) - 4 * day;
    const report = (r: BackupResult): void => {
      const s = r.stats;
      say(
        `   ${r.snapshot}: ${formatBytes(s.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s — ` +
          `sent ${formatBytes(s.storedBytes)} for ${formatBytes(s.newBytes)} of new data, reused ${formatBytes(s.reusedBytes)}` +
          (r.base ? `, incremental from ${r.base.split("/").at(-1)}` : ", full"),
      );
    };
    const run = async (time: number) => {
      const vm = await runBackup({ group: { type: "vm", id: "100" }, sources: [{ archive: "disk0.img", source: img }], time, signal: opts.signal }, (req) => repo.openBackup(req));
      const ct = await runBackup(
        { group: { type: "ct", id: "101" }, sources: [{ archive: "root.tree", source: tree }], time, key, signal: opts.signal },
        (req) => repo.openBackup(req),
      );
      report(vm);
      report(ct);
      return [vm, ct] as const;
    };

    title("First backup through the server: full");
    const [vm1] = await run(t0);
    check(vm1.base === null, "the first backup is full");

    title("The guests change: 200 scattered 4 KiB writes to the disk, a few files edited");
    scatterWrites(img, 200);
    editFiles(tree, 5);

    title("Second backup: incremental, only chunks the server lacks are sent");
    const [vm2, ct2] = await run(t0 + day);
    check(vm2.base !== null && ct2.base !== null, "the second backup is incremental");
    check(vm2.stats.newBytes < IMAGE_SIZE / 4, "an incremental image backup sends a small part of the image");

    title("Three more days of backups");
    for (let d = 2; d <= 4; d++) {
      scatterWrites(img, 50);
      editFiles(tree, 2);
      await run(t0 + d * day);
    }

    title("Retention on the server: keep-last 3 (PBS semantics)");
    for (const g of ["vm/100", "ct/101"]) {
      const { plan } = await repo.prune([], parseGroup(g), { keepLast: 3 }, false);
      for (const p of plan) say(`   ${p.snapshot}  ${p.action}`);
      check(plan.filter((p) => p.action === "keep").length === 3, "three snapshots remain");
    }

    title("Garbage collection, a task on the server run by its operator");
    const gc = await operator.runTask("gc", { cutoffSeconds: 0 });
    say(
      `   removed ${gc.removedChunks} chunks (${formatBytes(gc.removedBytes)}); ` +
        `${formatBytes(gc.logicalBytes)} of snapshots stored in ${formatBytes(gc.keptBytes)}: dedup factor ${gc.dedupFactor.toFixed(1)}`,
    );
    check(gc.missingChunks === 0, "no chunk is missing");

    title("Verify on the server: CRC and digest of every chunk (CRC only where encrypted)");
    const v = await operator.runTask("verify", {});
    say(`   ${v.snapshots.length} snapshots, ${v.chunksChecked} chunks checked: ${v.ok ? "all good" : "DAMAGE"}`);
    check(v.ok, "verify finds no damage");
    check(!storeContains(path.join(work, "datastore"), marker), "the server holds no plaintext of the encrypted container");
    say("   the datastore holds no plaintext of the container's files");

    title("Restore the newest snapshots from the server and compare with the originals");
    const rimg = path.join(work, "restored.raw");
    const rtree = path.join(work, "restored-rootfs");
    const restoreFrom = async (name: string, archive: string, target: string, withKey: boolean) => {
      const reader = await repo.openReader([], name);
      try {
        return await restoreArchive(reader, { snapshot: { type: "vm", id: "0", time: "latest" }, archive, target, key: withKey ? key : undefined, signal: opts.signal });
      } finally {
        await reader.close();
      }
    };
    const r1 = await restoreFrom("vm/100/latest", "disk0.img", rimg, false);
    const r2 = await restoreFrom("ct/101/latest", "root.tree", rtree, true);
    const same = hashFile(rimg) === hashFile(img);
    say(`   disk image: ${formatBytes(r1.bytes)} in ${(r1.durationMs / 1000).toFixed(2)} s, ${same ? "identical" : "DIFFERENT"}`);
    check(same, "the restored image is identical");
    const treeSame = hashTree(rtree) === hashTree(tree);
    say(`   directory (decrypted on the client): ${r2.entries} entries in ${(r2.durationMs / 1000).toFixed(2)} s, ${treeSame ? "identical" : "DIFFERENT"}`);
    check(treeSame, "the restored directory is identical");

    title("Offsite copy: a second server pulls every snapshot, only missing chunks");
    const offsitePassword = randomBytes(12).toString("base64url");
    const offsite = await startServer({
      stateDir: path.join(work, "offsite-state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { copy: path.join(work, "offsite-datastore") },
      adminPassword: offsitePassword,
    });
    stops.unshift(() => offsite.close());
    const off = await RemoteRepository.connect(`https://admin@127.0.0.1:${offsite.port}/copy`, { secret: offsitePassword, fingerprint: offsite.fingerprint });
    stops.unshift(() => Promise.resolve(off.close()));
    // An administrator of the offsite server names the source once; a sync names only the remote.
    await off.conn.call(ROUTES, "addRemote", {
      json: { name: "main", url: `https://${token.tokenId}@127.0.0.1:${server.port}/main`, fingerprint: server.fingerprint, secret: token.secret },
    });
    const source = { remote: "main" };
    const s1 = await off.runTask("sync", source);
    say(`   pulled ${s1.snapshots} snapshots, ${s1.chunks} chunks (${formatBytes(s1.bytes)}); the container stays encrypted`);
    check(s1.snapshots === 6, "the offsite server has every snapshot");
    const s2 = await off.runTask("sync", source);
    say(`   a second sync pulls ${s2.snapshots} snapshots and ${s2.chunks} chunks`);
    check(s2.snapshots === 0 && s2.chunks === 0, "a second sync copies nothing");

    const nodeCtx = {
      work,
      serverUrl: `https://${token.tokenId}@127.0.0.1:${server.port}/cluster`,
      serverFingerprint: server.fingerprint,
      serverSecret: token.secret,
      say,
      title,
      check,
      onStop: (stop: () => Promise<void>) => stops.unshift(stop),
      drills: steps.drills,
    };
    const story = await nodeStory(nodeCtx);
    const nodes = await clusterStory(
      {
        ...nodeCtx,
        recoveries: steps.recoveries,
        joinWitness: async (body) => {
          const conn = await ServerConnection.connect({ host: "127.0.0.1", port: server.port, authId: "admin", secret: adminPassword, fingerprint: server.fingerprint });
          try {
            await conn.call(ROUTES, "joinCluster", { json: body });
          } finally {
            conn.close();
          }
        },
      },
      story.nodes,
      story.guests,
    );

    title("The web interface: node2's cluster view and the backup server's own view");
    const node2 = nodes[1];
    const ha = JSON.parse(
      await checkWebInterface({ what: "node2", product: "node", port: node2.port, fingerprint: node2.fingerprint, password: node2.adminPassword }, WEB_PATHS.haStatus, ["POST", WEB_PATHS.stopGuest(story.guests[0]!.id)], check),
    ) as { sid: string; state: string; node: string | null }[];
    check(ha.length === story.guests.length && ha.every((r) => r.state === "started" && r.node === "node2"), "the session sees both guests started on node2, as the HA page shows them");
    const stores = JSON.parse(
      await checkWebInterface({ what: "the backup server", product: "server", port: server.port, fingerprint: server.fingerprint, password: adminPassword }, WEB_PATHS.datastores, ["PUT", WEB_PATHS.maintenance("main")], check),
    ) as { name: string }[];
    check(stores.some((x) => x.name === "main") && stores.some((x) => x.name === "cluster"), "the session sees the server's datastores");
    say(`   https://127.0.0.1:${node2.port}/ — the cluster's view (node2): HA shows ${ha.map((r) => `${r.sid} ${r.state} on ${r.node}`).join(", ")}`);
    say(`   https://127.0.0.1:${server.port}/ — the backup server's own view: datastores ${stores.map((x) => x.name).join(", ")}`);
    say(`   each: its page and script under a content security policy, a login (HttpOnly, Secure, SameSite=Strict cookie and a CSRF token), a write without the token refused (403)${opts.keep ? "" : "; gorde demo --keep keeps them up to open in a browser"}`);

    steps.end(true);
    say("\ndemo finished: every step worked");
    if (opts.keep) {
      say(`--keep: everything stays up until Ctrl-C`);
      say(`   server https://admin@127.0.0.1:${server.port}/main and /cluster, fingerprint ${server.fingerprint}, admin password ${adminPassword}`);
      for (const n of nodes) say(`   ${n.name} https://admin@127.0.0.1:${n.port}, fingerprint ${n.fingerprint}, admin password ${n.adminPassword} (gorde guest list --node …)`);
      await new Promise<void>((resolve) => opts.signal.addEventListener("abort", () => resolve(), { once: true }));
    }
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** True when any file under `dir` contains `needle`. */
function storeContains(dir: string, needle: Buffer): boolean {
  for (const f of fs.readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile() && fs.readFileSync(p).includes(needle)) return true;
  }
  return false;
}

function makeTree(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const src = "/usr/share/doc";
  if (fs.existsSync(src)) fs.cpSync(src, path.join(dir, "usr/share/doc"), { recursive: true, verbatimSymlinks: true });
  fs.mkdirSync(path.join(dir, "srv/www"), { recursive: true });
  fs.mkdirSync(path.join(dir, "etc"), { recursive: true });
  fs.writeFileSync(path.join(dir, "etc/hostname"), "ct101\n");
  fs.writeFileSync(path.join(dir, "srv/www/index.html"), "<p>counter: 0</p>\n");
  fs.writeFileSync(path.join(dir, "srv/www/blob.bin"), randomBytes(8 * 1024 * 1024));
}

function makeImage(img: string, content: string, work: string): void {
  fs.writeFileSync(img, "");
  fs.truncateSync(img, IMAGE_SIZE);
  try {
    execFileSync("mkfs.ext4", ["-q", "-F", "-d", content, img], { stdio: "ignore" });
  } catch {
    // No mkfs.ext4: fill part of the image with the tree's bytes instead.
    const fd = fs.openSync(img, "r+");
    let pos = 0;
    for (const f of fs.readdirSync(content, { recursive: true, encoding: "utf8" })) {
      const p = path.join(content, f);
      if (!fs.lstatSync(p).isFile() || pos > IMAGE_SIZE / 2) continue;
      const data = fs.readFileSync(p);
      fs.writeSync(fd, data, 0, data.length, pos);
      pos += data.length;
    }
    fs.closeSync(fd);
    void work;
  }
}

function scatterWrites(img: string, n: number): void {
  const fd = fs.openSync(img, "r+");
  for (let i = 0; i < n; i++) {
    const block = Math.floor(Math.random() * (IMAGE_SIZE / 4096));
    fs.writeSync(fd, randomBytes(4096), 0, 4096, block * 4096);
  }
  fs.closeSync(fd);
}

function editFiles(tree: string, n: number): void {
  const page = path.join(tree, "srv/www/index.html");
  const count = Number(/counter: (\d+)/.exec(fs.readFileSync(page, "utf8"))?.[1] ?? 0) + 1;
  fs.writeFileSync(page, `<p>counter: ${count}</p>\n`);
  for (let i = 1; i < n; i++) fs.writeFileSync(path.join(tree, `srv/www/note-${count}-${i}.txt`), `note ${count}/${i}\n`);
}

function countFiles(dir: string): number {
  return fs.readdirSync(dir, { recursive: true }).length;
}

function hashFile(file: string): string {
  const h = createHash("sha256");
  const fd = fs.openSync(file, "r");
  const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
  let n: number;
  let pos = 0;
  while ((n = fs.readSync(fd, buf, 0, buf.length, pos)) > 0) {
    h.update(buf.subarray(0, n));
    pos += n;
  }
  fs.closeSync(fd);
  return h.digest("hex");
}

/** Names, types, modes, times and contents of a tree, as one digest. */
function hashTree(root: string): string {
  const h = createHash("sha256");
  for (const rel of fs.readdirSync(root, { recursive: true, encoding: "utf8" }).sort()) {
    const p = path.join(root, rel);
    const st = fs.lstatSync(p, { bigint: true });
    h.update(`${rel}\0${st.mode}\0${st.mtimeNs}\0${st.isDirectory() ? "" : st.size}\0`);
    if (st.isFile()) h.update(fs.readFileSync(p));
    if (st.isSymbolicLink()) h.update(fs.readlinkSync(p));
  }
  return h.digest("hex");
}
