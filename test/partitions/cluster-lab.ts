// A whole cluster in the partition tests' namespaces: the backup server with the witness at
// 10.231.7.3, node1 and node2 at 10.231.7.1 and .2, formed with the command line run inside
// the namespaces, one HA container on each node, each backed up once (a failover restores
// from it). The lab knows each process, restarts what a fault killed and tells what it saw.
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { HaResource } from "../../src/api/ha-routes.ts";
import { ELECTION_TIMEOUT_MS } from "../../src/cluster/etcd-member.ts";
import { HA_LOOP_MS, LEASE_TTL_S, RECOVERY_DELAY_MS, SELF_FENCE_AFTER_MS } from "../../src/cluster/ha-timing.ts";
import { killNodeWhole } from "../../src/cli/demo-cluster.ts";
import { tempDir } from "../helpers.ts";
import { type NodeProcess, type Run, type ServerProcess, gorde, startNodeProcess, startServerProcess } from "../server-fixture.ts";
import { CopyWatcher } from "./copy-watcher.ts";
import { ADDRESS, type Host, NetLab } from "./net-lab.ts";

export type NodeName = "node1" | "node2";
export const NODES: readonly NodeName[] = ["node1", "node2"];
export const SERVER_PORT = 8007;
const NODE_PORT = 8006;
/** The HA containers: 101 starts on node1, 102 on node2. */
export const GUESTS: Record<number, NodeName> = { 101: "node1", 102: "node2" };
const IDS = Object.keys(GUESTS).map(Number);

/**
 * From the moment a quorate side has a healthy node to every HA guest running there
 * (docs/cluster.md, "Partition tests"): a new etcd leader within two election timeouts, the
 * lost node's lease lapsing (TTL), one HA loop to see it, the recovery delay, and 20 s for a
 * container's restore from the server and its start on two loaded cores.
 */
export const RECOVERY_BOUND_MS = 2 * ELECTION_TIMEOUT_MS + LEASE_TTL_S * 1000 + HA_LOOP_MS + RECOVERY_DELAY_MS + 20_000;
/** From a node losing quorum to its HA guests killed: the self-fence, plus sampling and reaping slack. */
export const FENCE_BOUND_MS = SELF_FENCE_AFTER_MS + 3000;

const NODE_PASSWORD = "node-admin-1";
const SERVER_PASSWORD = "admin-pass-1";

export class ClusterLab {
  readonly net: NetLab;
  readonly watcher: CopyWatcher;
  server: ServerProcess | undefined;
  readonly nodes: Record<NodeName, NodeProcess | undefined> = { node1: undefined, node2: undefined };
  private readonly logs: Record<NodeName, string[]> = { node1: [], node2: [] };
  private readonly tmp: { dir: string; cleanup(): void };

  private constructor(net: NetLab, tmp: { dir: string; cleanup(): void }) {
    this.net = net;
    this.tmp = tmp;
    this.watcher = new CopyWatcher({ node1: this.dataDir("node1"), node2: this.dataDir("node2") }, IDS);
  }

  dataDir(n: NodeName): string {
    return path.join(this.tmp.dir, n);
  }

  /** The lab, formed: three members, both containers HA, running and backed up. */
  static async start(): Promise<ClusterLab> {
    const lab = new ClusterLab(NetLab.create(), tempDir("gorde-partitions-"));
    try {
      await lab.startServer();
      for (const n of NODES) await lab.startNode(n);
      const addr = (h: Host): string[] => ["--address", ADDRESS[h], "--peer-port", "2380", "--client-port", "2379"];
      const node1 = lab.node("node1");
      const joinArgs = (h: Host): string[] => ["lab", node1.url(), "--member-fingerprint", node1.fingerprint, ...addr(h)];
      const member = { GORDE_MEMBER_PASSWORD: NODE_PASSWORD };
      lab.ok(await lab.cli("node1", ["cluster", "create", "lab", ...addr("node1")]), "cluster create");
      lab.ok(await lab.cli("node2", ["cluster", "join", ...joinArgs("node2")], member), "cluster join");
      const server = lab.server!;
      lab.ok(await gorde(["cluster", "witness", ...joinArgs("witness"), "--server", `https://admin@${ADDRESS.witness}:${SERVER_PORT}`, "--fingerprint", server.fingerprint], { GORDE_PASSWORD: SERVER_PASSWORD, ...member }, 120_000, lab.net.ns.witness), "cluster witness");
      for (const [id, n] of Object.entries(GUESTS)) {
        lab.ok(await lab.cli(n, ["guest", "create", id, "--demo", "ct", "--port", String(8000 + Number(id))]), `guest create ${id}`);
        lab.ok(await lab.cli(n, ["ha", "add", `ct:${id}`, "--max-restart", "5", "--max-relocate", "5"]), `ha add ct:${id}`);
      }
      await lab.expectRunning("the HA containers started", 90_000, GUESTS);
      for (const [id, n] of Object.entries(GUESTS)) lab.ok(await lab.cli(n, ["guest", "backup", id]), `guest backup ${id}`);
      return lab;
    } catch (e) {
      await lab.close();
      throw e;
    }
  }

  node(n: NodeName): NodeProcess {
    const p = this.nodes[n];
    if (!p) throw new Error(`${n} is not running`);
    return p;
  }

  /** The CLI against node `n`, run in its namespace. */
  cli(n: NodeName, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Run> {
    const p = this.node(n);
    return gorde([...args, "--node", p.url(), "--fingerprint", p.fingerprint], { GORDE_PASSWORD: NODE_PASSWORD, ...env }, timeoutMs, this.net.ns[n]);
  }

  /** `ha status` as node `n` sees it; undefined when it does not answer in time (a node without quorum may not). */
  async haStatus(n: NodeName): Promise<HaResource[] | undefined> {
    if (!this.nodes[n]) return undefined;
    const r = await this.cli(n, ["ha", "status", "--json"], {}, 15_000);
    return r.code === 0 ? (JSON.parse(r.out) as HaResource[]) : undefined;
  }

  async startServer(): Promise<void> {
    this.server = await startServerProcess({ stateDir: path.join(this.tmp.dir, "server"), datastores: { store: path.join(this.tmp.dir, "store") }, host: ADDRESS.witness, port: SERVER_PORT, netns: this.net.ns.witness, adminPassword: SERVER_PASSWORD });
  }

  async stopServer(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.server?.stop(signal);
    this.server = undefined;
  }

  async startNode(n: NodeName): Promise<NodeProcess> {
    const p = await startNodeProcess({
      name: n,
      dataDir: this.dataDir(n),
      serverUrl: `https://admin@${ADDRESS.witness}:${SERVER_PORT}/store`,
      serverFingerprint: this.server!.fingerprint,
      serverSecret: SERVER_PASSWORD,
      adminPassword: NODE_PASSWORD,
      host: ADDRESS[n],
      port: NODE_PORT,
      netns: this.net.ns[n],
    });
    this.nodes[n] = p;
    return p;
  }

  /** Whatever of the lab is down, started again (the server first: a node needs its fingerprint). */
  async restartMissing(): Promise<void> {
    if (!this.server) await this.startServer();
    for (const n of NODES) if (!this.nodes[n]) await this.startNode(n);
  }

  /** Every link up, every agent continued, whatever is down started again. */
  async healAll(): Promise<void> {
    this.net.healAll();
    for (const n of NODES) this.nodes[n]?.child.kill("SIGCONT");
    await this.restartMissing();
  }

  /** The node's agent SIGKILLed, its fence helper and etcd member left running. */
  async killAgent(n: NodeName): Promise<void> {
    const p = this.node(n);
    this.logs[n].push(p.stderr());
    await p.stop("SIGKILL");
    this.nodes[n] = undefined;
  }

  /** The whole node killed: agent, fence helper and etcd member. */
  async killWhole(n: NodeName): Promise<void> {
    const p = this.node(n);
    this.logs[n].push(p.stderr());
    killNodeWhole({ dataDir: this.dataDir(n), agent: p.child });
    await p.stop("SIGKILL");
    this.nodes[n] = undefined;
  }

  stopAgent(n: NodeName): void {
    this.node(n).child.kill("SIGSTOP");
  }

  continueAgent(n: NodeName): void {
    this.node(n).child.kill("SIGCONT");
  }

  /** Everything node `n`'s agents wrote, the running one's last. */
  logOf(n: NodeName): string {
    return [...this.logs[n], this.nodes[n]?.stderr() ?? ""].join("");
  }

  /** Where each guest runs now: the node of its one copy, or why not one. */
  placement(): Record<number, string> {
    const out: Record<number, string> = {};
    for (const id of IDS) {
      const running = this.watcher.runningNow(id);
      out[id] = running.length === 1 ? running[0]!.node : `${running.length} copies`;
    }
    return out;
  }

  /**
   * Waits until every HA guest runs as exactly one copy (on the nodes `on` names, if given)
   * and a node reports it started; answers where each runs. Throws with the lab's state after `ms`.
   */
  async expectRunning(what: string, ms: number, on?: Partial<Record<number, NodeName>>): Promise<Record<number, NodeName>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const where = this.placement();
      const placed = IDS.every((id) => NODES.includes(where[id] as NodeName) && (!on?.[id] || on[id] === where[id]));
      if (placed) {
        const seenBy = NODES.find((n) => n === where[IDS[0]!]) ?? "node1";
        const status = await this.haStatus(seenBy);
        if (status && IDS.every((id) => status.find((r) => r.sid === `ct:${id}`)?.state === "started")) return where as Record<number, NodeName>;
      }
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s; placement ${JSON.stringify(where)}\n${await this.diagnose()}`);
      await sleep(250);
    }
  }

  /** Waits until none of `ids` runs anywhere; throws after `ms`. */
  async expectStopped(what: string, ids: number[], ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (ids.some((id) => this.watcher.runningNow(id).length > 0)) {
      if (Date.now() > deadline) throw new Error(`${what}: still running after ${ms / 1000} s; placement ${JSON.stringify(this.placement())}\n${await this.diagnose()}`);
      await sleep(100);
    }
  }

  /** For `ms`, no copy starts or ends. */
  async expectSteady(what: string, ms: number): Promise<void> {
    const before = this.watcher.copies.map((c) => `${c.pid}:${c.end}`).join(",");
    await sleep(ms);
    const after = this.watcher.copies.map((c) => `${c.pid}:${c.end}`).join(",");
    if (before !== after) throw new Error(`${what}: copies started or ended; placement ${JSON.stringify(this.placement())}\n${await this.diagnose()}`);
  }

  /** What a failure message needs: the cuts, the copies, the HA status and each node's last log lines. */
  async diagnose(): Promise<string> {
    const lines = [`network: ${this.net.describe()}`, "copies:"];
    for (const c of this.watcher.copies) lines.push(`  ${c.guest} on ${c.node} pid ${c.pid} ${new Date(c.start).toISOString()} – ${c.end === null ? "running" : new Date(c.end).toISOString()}`);
    for (const n of NODES) {
      const s = await this.haStatus(n).catch(() => undefined);
      lines.push(`${n} ha status: ${s ? s.map((r) => `${r.sid} ${r.state}@${r.node}${r.reason ? ` (${r.reason})` : ""}`).join("; ") : "no answer"}`);
      lines.push(`${n} log:\n${this.logOf(n).slice(-2500)}`);
    }
    return lines.join("\n");
  }

  ok(r: Run, what: string): void {
    assert.equal(r.code, 0, `${what}: ${r.err}`);
  }

  async close(): Promise<void> {
    this.watcher.stop();
    this.net.healAll();
    for (const n of NODES) this.nodes[n]?.child.kill("SIGCONT");
    // Out of HA first: a node stopping would otherwise hand its guests to the other.
    const n = NODES.find((x) => this.nodes[x]);
    if (n) for (const id of IDS) await this.cli(n, ["ha", "remove", `ct:${id}`], {}, 30_000).catch(() => undefined);
    for (const x of NODES) {
      await this.nodes[x]?.stop();
      // What a killed agent left (its fence helper, its guests, its etcd member) goes too.
      killNodeWhole({ dataDir: this.dataDir(x), agent: { kill: () => true } });
    }
    await this.server?.stop();
    this.net.destroy();
    this.tmp.cleanup();
  }
}
