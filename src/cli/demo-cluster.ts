// The cluster's part of `gorde demo`: node1, node2 and the backup server as witness form a
// cluster (three etcd members on loopback), both demo guests become HA resources on node1,
// node1 dies whole (its agent, fence helper, guests and etcd member killed), both guests
// come back on node2 from their newest backups with their services answering the
// snapshots' data, RPO and RTO printed; node1 returns and starts nothing.
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { JoinClusterBody } from "../api/cluster-routes.ts";
import type { HaResource, Recovery } from "../api/ha-routes.ts";
import { etcdAvailable } from "../cluster/etcd-member.ts";
import { freePort } from "../node/qemu.ts";
import { processesNaming, readLiveRecord } from "../sys/processes.ts";
import { type DemoGuest, type NodeStoryContext, type RunningNode, service, startNodeProcess } from "./demo-nodes.ts";
import type { DemoRecovery } from "./demo-report.ts";

export interface ClusterStoryContext extends NodeStoryContext {
  /** makes the backup server the cluster's witness (its own API, as `gorde cluster witness` would) */
  joinWitness(body: JoinClusterBody): Promise<void>;
  recoveries: DemoRecovery[];
}

async function listen(): Promise<{ address: string; peerPort: number; clientPort: number }> {
  return { address: "127.0.0.1", peerPort: await freePort(), clientPort: await freePort() };
}

/** Kills `pid` if its command line still names `what` (a pid the story read from a file or a log). */
function killIf(pid: number | undefined, what: string): boolean {
  if (!pid) return false;
  try {
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(what)) return false;
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    return false;
  }
}

/**
 * Kills a node whole, as a power cut would, all with SIGKILL: its agent, its fence helper,
 * its guests (every process naming <dataDir>/run: QEMU, lxc-start, whose death takes the
 * container's init along) and its etcd member (etcd.pid). Answers what it found to kill.
 */
export function killNodeWhole(node: { dataDir: string; agent: { kill(signal: NodeJS.Signals): boolean } }): { helperKilled: boolean; etcdKilled: boolean; guestPids: number[] } {
  const pidFile = `${node.dataDir}/state/cluster/etcd/etcd.pid`;
  const etcdPid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, "utf8").trim()) : undefined;
  node.agent.kill("SIGKILL");
  const helper = readLiveRecord(`${node.dataDir}/run/fence-helper.pid`);
  const runDir = `${node.dataDir}/run`;
  const guestPids = processesNaming(fs.existsSync(runDir) ? fs.readdirSync(runDir).map((d) => `${runDir}/${d}`) : []).filter((p) => p !== helper?.pid);
  for (const pid of guestPids) killIf(pid, runDir);
  return { helperKilled: helper !== undefined && killIf(helper.pid, "fence-helper"), etcdKilled: killIf(etcdPid, "etcd"), guestPids };
}

export async function waitGone(pids: number[], ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(50)) {
    if (pids.every((p) => !fs.existsSync(`/proc/${p}`) || fs.readFileSync(`/proc/${p}/stat`, "utf8").includes(") Z "))) return true;
  }
  return false;
}

/** Answers the nodes as they run at its end (node1 started again). */
export async function clusterStory(ctx: ClusterStoryContext, nodes: [RunningNode, RunningNode], guests: DemoGuest[]): Promise<[RunningNode, RunningNode]> {
  const { say, title, check } = ctx;
  const node2 = nodes[1];
  let node1 = nodes[0];
  const etcd = etcdAvailable();
  if (!etcd.ok) {
    title("The cluster and failover from backup");
    say(`   SKIPPED: ${etcd.why}`);
    return nodes;
  }

  title("The cluster: node1, node2 and the backup server as witness, three etcd members on loopback");
  // node2's restored copies showed the restore; the cluster's ids are unique, so they go.
  for (const g of guests) {
    await node2.client.call("stopGuest", { params: { id: g.id } });
    await node2.client.call("removeGuest", { params: { id: g.id } });
  }
  await node1.client.call("createCluster", { json: { name: "demo", ...(await listen()) } });
  const member = { url: `https://admin@127.0.0.1:${node1.port}`, fingerprint: node1.fingerprint, secret: node1.adminPassword };
  await node2.client.call("joinCluster", { json: { cluster: "demo", member, ...(await listen()) } });
  await ctx.joinWitness({ cluster: "demo", member, ...(await listen()) });
  const status = await node2.client.call("clusterStatus");
  say(`   cluster ${status.cluster}: ${status.quorate ? "quorate" : "NOT QUORATE"}; ${status.nodes.map((n) => `${n.name} ${n.online ? "online" : "offline"} (guests ${n.guests.join(", ") || "none"})`).join(", ")}; witness ${status.witness.online ? "online" : "offline"}`);
  check(status.quorate && status.witness.online && status.nodes.every((n) => n.online), "the cluster has its three members");
  // node1's plan came into the cluster with it; node2 runs it too, for the guests it will own.
  let mine = await node1.client.call("getPlan");
  let theirs = await node2.client.call("getPlan");
  for (const deadline = Date.now() + 15_000; (theirs.text !== mine.text || !mine.cluster || !theirs.cluster) && Date.now() < deadline; await sleep(500)) {
    mine = await node1.client.call("getPlan");
    theirs = await node2.client.call("getPlan");
  }
  say(`   the plan is the cluster's (kept in etcd): node2 runs node1's too, jobs ${theirs.jobs.join(", ") || "none"}, each node for the guests it owns`);
  check(mine.cluster === "demo" && theirs.cluster === "demo" && theirs.text === mine.text, "both nodes run the cluster's plan");

  title("HA: both guests become HA resources on node1; a fresh note and backup of each");
  const sids = guests.map((g) => `${g.kind}:${g.id}`);
  for (const sid of sids) await node1.client.call("addHa", { json: { sid } });
  // Taken out of HA before the nodes stop at the end: a node stopping hands its HA guests over.
  ctx.onStop(async () => {
    for (const sid of sids) await node2.client.call("removeHa", { params: { sid } }).catch(() => undefined);
  });
  const ha = async (n: RunningNode): Promise<HaResource[]> => (await n.client.call("haStatus")).filter((r) => sids.includes(r.sid));
  const until = async (n: RunningNode, ok: (rs: HaResource[]) => boolean, seconds: number): Promise<HaResource[]> => {
    let rs: HaResource[] = [];
    for (const deadline = Date.now() + seconds * 1000; Date.now() < deadline; await sleep(500)) {
      rs = await ha(n).catch(() => []);
      if (ok(rs)) return rs;
    }
    return rs;
  };
  const started = await until(node1, (rs) => rs.length === sids.length && rs.every((r) => r.state === "started" && r.node === "node1"), 30);
  say(`   ${started.map((r) => `${r.sid} ${r.state} on ${r.node}`).join(", ")}`);
  check(started.length === sids.length && started.every((r) => r.state === "started"), "both guests are started HA resources on node1");
  const notes = new Map<number, string>();
  for (const g of guests) {
    const note = `written on ${g.kind} ${g.id} just before node1 failed`;
    await service(g.port, "/cgi-bin/note", { method: "POST", body: note });
    const b = await node1.client.backup(g.id, {});
    notes.set(g.id, note);
    say(`   ${b.snapshot}: ${(b.durationMs / 1000).toFixed(2)} s, note "${note}"`);
  }

  title("node1 dies: its agent, fence helper, guests and etcd member killed");
  const guestPids = (await Promise.all(guests.map((g) => node1.client.call("guestStatus", { params: { id: g.id } })))).flatMap((s) => (s.pid ? [s.pid] : []));
  const killedAt = Date.now();
  const { helperKilled, etcdKilled } = killNodeWhole({ dataDir: node1.dataDir, agent: node1.child });
  const guestsGone = await waitGone(guestPids, 5000);
  say(`   agent killed; fence helper ${helperKilled ? "killed" : "not running"}; etcd member ${etcdKilled ? "killed" : "not running"}; guests ${guestsGone ? "killed" : "STILL RUNNING"}`);
  check(guestsGone, "node1's guests are dead");

  title("node2 takes both guests over once node1's lease has lapsed, and restores them from backup");
  let last = "";
  const back = await (async () => {
    let rs: HaResource[] = [];
    for (const deadline = Date.now() + 180_000; Date.now() < deadline; await sleep(500)) {
      rs = await ha(node2).catch(() => []);
      const line = rs.map((r) => `${r.sid} ${r.state} on ${r.node}`).join(", ");
      if (line !== last) say(`   ${((Date.now() - killedAt) / 1000).toFixed(1).padStart(5)} s: ${line}`);
      last = line;
      if (rs.length === sids.length && rs.every((r) => r.state === "started" && r.node === "node2")) break;
    }
    return rs;
  })();
  const allBack = back.length === sids.length && back.every((r) => r.state === "started" && r.node === "node2");
  if (!allBack) say(`   node2's log, its end:\n${node2.log().trim().split("\n").slice(-40).join("\n")}`);
  check(back.length === sids.length && back.every((r) => r.state === "started" && r.node === "node2"), "both guests run on node2");
  const answeredAfter = (Date.now() - killedAt) / 1000;
  const recoveries: Recovery[] = await node2.client.call("listRecoveries", { query: {} });
  for (const g of guests) {
    const st = await node2.client.call("guestStatus", { params: { id: g.id } });
    const note = await service(st.httpPort, "/cgi-bin/note", undefined, 30_000);
    const r = recoveries.find((x) => x.guest === g.id && x.result === "recovered");
    say(`   ${g.kind} ${g.id} on node2 from ${r?.snapshot}: "${note}"; RPO ${r?.rpoSeconds} s, RTO ${r?.rtoSeconds} s (detection ${r?.detectSeconds} s, fence wait ${r?.fenceSeconds} s, restore ${r?.restoreSeconds} s, boot and checks ${r?.bootSeconds} s)`);
    check(note === notes.get(g.id), `the recovered ${g.kind} answers with its snapshot's data`);
    check(r !== undefined, `the recovery of ${g.kind} ${g.id} is recorded`);
    ctx.recoveries.push({ guest: g.id, node: "node2", snapshot: r!.snapshot ?? "", mode: "restore", rpo_s: r!.rpoSeconds, rto_s: r!.rtoSeconds });
  }
  say(`   both guests' checks passed ${answeredAfter.toFixed(1)} s after node1 was killed`);

  title("node1 returns: it starts nothing, and keeps its old copies aside");
  node1 = await startNodeProcess(ctx, "node1", node1.adminPassword);
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(500)) {
    const s = await node2.client.call("clusterStatus");
    if (s.nodes.every((n) => n.online) && (await node1.client.call("listGuests")).length === 0) break;
  }
  const left = await node1.client.call("listGuests");
  const aside = fs.existsSync(`${node1.dataDir}/displaced`) ? fs.readdirSync(`${node1.dataDir}/displaced`) : [];
  say(`   node1 online again with ${left.length} guests; its old copies kept in ${node1.dataDir}/displaced: ${aside.join(", ") || "none"}`);
  check(left.length === 0, "node1 started none of its old copies");
  check(aside.length === guests.length, "node1's old copies are kept, not deleted");
  const still = await ha(node1);
  check(still.every((r) => r.node === "node2" && r.state === "started"), "the guests stay on node2");
  return [node1, node2];
}
