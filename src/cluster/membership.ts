// A host's place in its cluster: what it keeps of it (<state>/cluster/: cluster.json, the
// cluster's CA, its etcd member's directory), its etcd member, started with the host, and
// for a node the lease that says it is alive. A host in no cluster keeps its local state
// (the embedded default); `create` makes a cluster of one node, `admit` lets another host
// in, `join` starts this host's member in a cluster that admitted it.
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Lease } from "etcd3";
import { z } from "zod";
import { type ClusterStatus, type JoinBundle, JoinBundleSchema } from "../api/cluster-routes.ts";
import { GordeError } from "../errors.ts";
import { type CertificateAuthority, createCertificateAuthority, issueCertificate } from "../host/tls.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";
import { ClusterStore } from "./cluster-store.ts";
import { LEASE_RENEW_MS, LEASE_TTL_S, RENEW_TIMEOUT_MS, monotonicMs } from "./ha-timing.ts";
import { type EtcdMember, type MemberTls, healthy, memberFiles, startEtcdMember } from "./etcd-member.ts";

export const DEFAULT_PEER_PORT = 2380;
export const DEFAULT_CLIENT_PORT = 2379;

const ClusterFileSchema = z.strictObject({
  cluster: z.string(),
  member: z.string(),
  role: z.enum(["node", "witness"]),
  peerUrl: z.string(),
  clientUrl: z.string(),
  /** the client URLs of every member this host knew when it joined, its own first */
  clientUrls: z.array(z.string()),
});
type ClusterFile = z.infer<typeof ClusterFileSchema>;

export interface ListenAt {
  address: string;
  peerPort?: number;
  clientPort?: number;
}

export interface MembershipOptions {
  /** the host's state directory: the cluster's files go to <stateDir>/cluster/ */
  stateDir: string;
  /** the node's name; "witness" for the backup host */
  member: string;
  role: "node" | "witness";
  /** a node's guest ids, published with its lease */
  guests?: () => number[];
  /** told each time the node's lease was renewed: when (monotonicMs) the renewal was sent */
  onRenewed?: (sentAt: number) => void;
  log: (line: string) => void;
}

export class ClusterMembership {
  private readonly o: MembershipOptions;
  private file: ClusterFile | undefined;
  private etcd: EtcdMember | undefined;
  private store: ClusterStore | undefined;
  private lease: Lease | undefined;
  /** the member's TLS pair and the cluster's CA certificate */
  private memberTls: MemberTls | undefined;
  /** one change of membership at a time (create, join) */
  private busy = false;
  /** the next renewal of the node's lease (its guest list republished with it when it changed) */
  private renewTimer: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private published = "";
  /** when (monotonicMs) the last renewal of the lease that etcd answered was sent */
  private renewedAt: number | undefined;
  /** the same, in ms since the epoch (published for the others) */
  private renewedWall: number | undefined;
  /** how many leases this host was granted: a new one means the old one lapsed, and what was decided under it is void */
  private generation = 0;

  private constructor(o: MembershipOptions) {
    this.o = o;
  }

  private get dir(): string {
    return path.join(this.o.stateDir, "cluster");
  }

  /** Opens the host's membership: in a cluster, its etcd member starts (and its lease, for a node). */
  static async open(o: MembershipOptions): Promise<ClusterMembership> {
    const m = new ClusterMembership(o);
    const text = await fsp.readFile(path.join(m.dir, "cluster.json"), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw new GordeError("io", `cannot read ${path.join(m.dir, "cluster.json")}: ${err.message}.`);
    });
    if (text === undefined) return m;
    const parsed = ClusterFileSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new GordeError("invalid", `${path.join(m.dir, "cluster.json")} is not a cluster file gorde wrote.`);
    m.file = parsed.data;
    m.memberTls = memberFilesTls(path.join(m.dir, "etcd"));
    await m.startMember({}, "existing", undefined, true);
    return m;
  }

  get cluster(): string | undefined {
    return this.file?.cluster;
  }

  get member(): string {
    return this.o.member;
  }

  get role(): "node" | "witness" {
    return this.o.role;
  }

  /** The cluster's state, while this host is in a cluster. */
  get clusterStore(): ClusterStore | undefined {
    return this.store;
  }

  /** Which lease the node holds (a new number each time one was granted after the last lapsed). */
  get leaseGeneration(): number {
    return this.generation;
  }

  /** How long ago (ms) the last answered renewal of the node's lease was sent; Infinity without a lease. */
  leaseAge(): number {
    return this.renewedAt === undefined ? Infinity : monotonicMs() - this.renewedAt;
  }

  /** Refuses a second cluster, or a change while one is under way. */
  assertFree(): void {
    if (this.file) throw new GordeError("exists", `${this.o.member} is in cluster ${this.file.cluster} already.`);
    if (this.busy) throw new GordeError("locked", `${this.o.member} is joining or creating a cluster already.`);
  }

  /** Makes a cluster of this node alone: its CA, its member, its lease. */
  async create(name: string, at: ListenAt): Promise<void> {
    await this.change(async () => {
      if (this.o.role !== "node") throw new GordeError("usage", "a cluster is created on a node, not on the backup server.");
      const ca = await createCertificateAuthority(name);
      const urls = memberUrls(at);
      await this.writeCa(ca);
      this.memberTls = { ca: ca.cert, ...(await issueCertificate(ca, this.o.member, [at.address])) };
      this.file = { cluster: name, member: this.o.member, role: this.o.role, ...urls, clientUrls: [urls.clientUrl] };
      await this.startMember({ [this.o.member]: urls.peerUrl }, "new");
      await this.saveFile();
      this.o.log(`created cluster ${name}: etcd member ${this.o.member} at ${urls.peerUrl}`);
    });
  }

  /** Lets host `name` into this cluster: it becomes an etcd member; what it needs to start is the answer. */
  async admit(name: string, peerUrl: string, role: "node" | "witness"): Promise<JoinBundle> {
    const { file, store } = this.joined();
    if ((role === "witness") !== (name === "witness")) throw new GordeError("usage", "the backup host joins as the member named witness, and only it.");
    const address = new URL(peerUrl).hostname.replace(/^\[|\]$/g, "");
    if (net.isIP(address) === 0) throw new GordeError("usage", `${peerUrl} names no IP address.`);
    const initialCluster = await store.addMember(name, peerUrl);
    const ca = await this.readCa();
    const pair = await issueCertificate(ca, name, [address]);
    this.o.log(`admitted ${role} ${name} (${peerUrl}) to cluster ${file.cluster}`);
    const members = await store.members();
    const clientUrls = members.flatMap((m) => (m.clientUrl ? [m.clientUrl] : []));
    return { cluster: file.cluster, ca, ...pair, initialCluster, clientUrls: clientUrls.length ? clientUrls : file.clientUrls };
  }

  /** Starts this host's member in the cluster that admitted it. */
  async join(given: JoinBundle, at: ListenAt): Promise<void> {
    // What the member answered is checked like any input: its shape, and https URLs only.
    const parsed = JoinBundleSchema.safeParse(given);
    if (!parsed.success || ![...Object.values(parsed.data.initialCluster), ...parsed.data.clientUrls].every((u) => u.startsWith("https://"))) {
      throw new GordeError("invalid", "the member node answered no valid admission (CA, certificate, members).");
    }
    const bundle = parsed.data;
    await this.change(async () => {
      const urls = memberUrls(at);
      const viaOthers = async (fn: (store: ClusterStore) => Promise<void>): Promise<void> => {
        const others = ClusterStore.connect(bundle.clientUrls.filter((u) => u !== urls.clientUrl), this.memberTls!);
        try {
          await fn(others);
        } finally {
          others.close();
        }
      };
      if (bundle.initialCluster[this.o.member] !== urls.peerUrl) throw new GordeError("invalid", "the cluster admitted another address than this host's.");
      await this.writeCa(bundle.ca);
      this.memberTls = { ca: bundle.ca.cert, cert: bundle.cert, key: bundle.key };
      // The members that admitted it first: until it is promoted, its own answers no client.
      this.file = { cluster: bundle.cluster, member: this.o.member, role: this.o.role, ...urls, clientUrls: [...bundle.clientUrls.filter((u) => u !== urls.clientUrl), urls.clientUrl] };
      try {
        // Promoted through the members that admitted it: a learner answers no client.
        await this.startMember(bundle.initialCluster, "existing", () => viaOthers((store) => store.promote(this.o.member)));
      } catch (err) {
        // A learner that will never start is taken out again (it holds no vote, so this works).
        await viaOthers((store) => store.removeMember(this.o.member)).catch(() => undefined);
        throw err;
      }
      await this.saveFile();
      this.o.log(`joined cluster ${bundle.cluster} as ${this.o.role} ${this.o.member}`);
    });
  }

  /** The cluster as this host sees it. */
  async status(): Promise<ClusterStatus> {
    const file = this.file;
    if (!file || !this.store) return { cluster: null, quorate: false, nodes: [], witness: { online: false } };
    const store = this.store;
    const tls = this.memberTls!;
    let quorate = true;
    let nodes: ClusterStatus["nodes"] = [];
    let witness = false;
    try {
      const [known, alive, members] = await Promise.all([store.list("nodes/"), store.list("alive/"), store.members()]);
      nodes = [...known.keys()].sort().map((name) => {
        const a = alive.get(name);
        return { name, online: a !== undefined, guests: a === undefined ? [] : parseAlive(a).guests };
      });
      const w = members.find((m) => m.name === "witness");
      witness = w?.clientUrl !== undefined && (await healthy(w.clientUrl, tls));
    } catch {
      // No answer: this side has no majority. Only this host is known to be up.
      quorate = false;
      if (file.role === "node") nodes = [{ name: file.member, online: true, guests: this.o.guests?.() ?? [] }];
      witness = file.role === "witness";
    }
    return { cluster: file.cluster, quorate, nodes, witness: { online: witness } };
  }

  /** Stops the lease (the node shows offline once it lapses) and the etcd member. */
  async close(): Promise<void> {
    clearTimeout(this.renewTimer);
    clearTimeout(this.retry);
    // A node that stops says so at once (without a majority the call gives up after 5 s and
    // the lease lapses by itself).
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
    this.store?.close();
    this.store = undefined;
    await this.etcd?.stop();
    this.etcd = undefined;
  }

  private joined(): { file: ClusterFile; store: ClusterStore } {
    if (!this.file || !this.store) throw new GordeError("not-found", `${this.o.member} is in no cluster.`);
    return { file: this.file, store: this.store };
  }

  private async change(fn: () => Promise<void>): Promise<void> {
    this.assertFree();
    this.busy = true;
    try {
      await fn();
    } catch (err) {
      // Nothing half-made stays: the next attempt starts clean.
      await this.close();
      this.file = undefined;
      await fsp.rm(this.dir, { recursive: true, force: true });
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Starts the member and connects to the cluster; `before` runs before a node announces itself (a joiner's promotion). */
  private async startMember(initialCluster: Record<string, string>, state: "new" | "existing", before?: () => Promise<void>, restart = false): Promise<void> {
    const file = this.file!;
    const tls = this.memberTls!;
    this.etcd = await startEtcdMember({
      dir: path.join(this.dir, "etcd"),
      name: file.member,
      peerUrl: file.peerUrl,
      clientUrl: file.clientUrl,
      initialCluster: { ...initialCluster, [file.member]: file.peerUrl },
      state,
      cluster: file.cluster,
      tls,
      // A host starting again must start even when the others are down: it waits for them.
      waitForLeader: !restart,
      adopt: restart,
    });
    if (this.etcd.adopted) this.o.log(`etcd member ${file.member} was running (pid ${this.etcd.pid}): taken over`);
    // The host's own member only: its answers are the majority's (linearizable), and it fails
    // only when this host is cut off. A client that also used the other members would see
    // every call sent to a member that is down fail (etcd's client picks one per call).
    this.store = ClusterStore.connect([file.clientUrl], tls);
    await before?.();
    if (file.role !== "node") return;
    if (!restart) return this.announce();
    // Starting again, the node does not wait for a majority: it announces itself once there is one.
    let told = false;
    const attempt = async (): Promise<void> => {
      try {
        await this.announce();
        if (told) this.o.log(`the cluster answers again; node ${file.member} is online in it`);
      } catch (err) {
        if (!this.store) return;
        if (!told) this.o.log(`node ${file.member} cannot announce itself in cluster ${file.cluster} yet: ${(err as Error).message}`);
        told = true;
        this.retry = setTimeout(() => void attempt(), 2000);
      }
    };
    void attempt();
  }

  /** The node's permanent key and its alive key under its lease. */
  private async announce(): Promise<void> {
    await this.store!.put(`nodes/${this.o.member}`, JSON.stringify({ joined: true }));
    await this.keepAlive();
  }

  /**
   * The node's alive key, bound to a lease the node renews itself every LEASE_RENEW_MS: the
   * time each answered renewal was sent is what the fence deadline counts from (etcd's
   * client library renews on its own clock and does not say which renewal was answered).
   * A lease that lapsed is granted anew.
   */
  private async keepAlive(): Promise<void> {
    const store = this.store!;
    const sent = monotonicMs();
    const lease = store.lease(LEASE_TTL_S);
    await lease.grant();
    this.lease = lease;
    // Fresh only once its alive key stands under the new lease: a survivor takes a node's
    // guests only while that key is absent (ClusterGuests.take).
    this.renewedWall = Date.now() - (monotonicMs() - sent);
    await this.publish(true);
    this.generation++;
    this.renewed(sent);
    let failing = false;
    const renew = async (): Promise<void> => {
      if (this.lease !== lease || !this.store) return;
      const at = monotonicMs();
      try {
        await lease.keepaliveOnce({ deadline: Date.now() + RENEW_TIMEOUT_MS });
        if (this.lease !== lease || !this.store) return;
        this.renewed(at);
        if (failing) this.o.log(`the cluster lease of ${this.o.member} is renewed again`);
        failing = false;
        await this.publish(true).catch(() => undefined);
      } catch (err) {
        if (this.lease !== lease || !this.store) return;
        if (lease.revoked()) {
          // Lapsed: the node was offline for the others. A new lease, a new alive key.
          this.o.log(`the cluster lease of ${this.o.member} lapsed (${(err as Error).message}); asking for a new one`);
          this.lease = undefined;
          this.renewTimer = setTimeout(() => void this.keepAlive().catch((e: Error) => this.retryKeepAlive(e)), LEASE_RENEW_MS);
          return;
        }
        if (!failing) this.o.log(`the cluster lease of ${this.o.member} could not be renewed: ${(err as Error).message}`);
        failing = true;
      }
      this.renewTimer = setTimeout(() => void renew(), Math.max(0, LEASE_RENEW_MS - (monotonicMs() - at)));
    };
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void renew(), LEASE_RENEW_MS);
  }

  private retryKeepAlive(err: Error): void {
    if (!this.store) return;
    this.o.log(`no new cluster lease for ${this.o.member}: ${err.message}`);
    this.renewTimer = setTimeout(() => void this.keepAlive().catch((e: Error) => this.retryKeepAlive(e)), LEASE_RENEW_MS);
  }

  private renewed(sentAt: number): void {
    // A late renewal eats into the fence margin: said, so an operator sees a node that is too loaded.
    if (this.renewedAt !== undefined && sentAt - this.renewedAt > 2 * LEASE_RENEW_MS) this.o.log(`the cluster lease of ${this.o.member} was renewed ${((sentAt - this.renewedAt) / 1000).toFixed(1)} s after the last renewal (every ${LEASE_RENEW_MS / 1000} s is the rule)`);
    this.renewedWall = Date.now() - (monotonicMs() - sentAt);
    this.renewedAt = sentAt;
    this.o.onRenewed?.(sentAt);
  }

  /**
   * Puts the node's alive key: its guests, and when (ms since the epoch) its last answered
   * renewal was sent — what a survivor counts a failure's RTO from once the key is gone.
   */
  private async publish(always: boolean): Promise<void> {
    const value = JSON.stringify({ guests: [...(this.o.guests?.() ?? [])].sort((a, b) => a - b), renewedAt: this.renewedWall });
    if (!always && value === this.published) return;
    if (!this.store || !this.lease) return;
    await this.store.putWithLease(this.lease, `alive/${this.o.member}`, value);
    this.published = value;
  }

  private async writeCa(ca: CertificateAuthority): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(path.join(this.dir, "ca.key"), ca.key, { mode: 0o600 });
    await writeFileAtomic(path.join(this.dir, "ca.pem"), ca.cert, { mode: 0o644 });
  }

  private async readCa(): Promise<CertificateAuthority> {
    return { cert: await fsp.readFile(path.join(this.dir, "ca.pem"), "utf8"), key: await fsp.readFile(path.join(this.dir, "ca.key"), "utf8") };
  }

  private async saveFile(): Promise<void> {
    await writeFileAtomic(path.join(this.dir, "cluster.json"), JSON.stringify(this.file, null, 2) + "\n", { mode: 0o600 });
  }
}

/** The TLS files an etcd member of this host was started with. */
function memberFilesTls(etcdDir: string): MemberTls {
  const f = memberFiles(etcdDir);
  try {
    return { ca: fs.readFileSync(f.ca, "utf8"), cert: fs.readFileSync(f.cert, "utf8"), key: fs.readFileSync(f.key, "utf8") };
  } catch (err) {
    throw new GordeError("io", `cannot read the TLS files of this host's etcd member in ${etcdDir}: ${(err as Error).message}.`);
  }
}

const AliveSchema = z.object({ guests: z.array(z.number().int()), renewedAt: z.number().optional() });

/** A node's alive key: its guests and its last renewal (nothing when the value is not gorde's). */
export function parseAlive(value: string): { guests: number[]; renewedAt?: number } {
  try {
    const r = AliveSchema.safeParse(JSON.parse(value));
    return r.success ? r.data : { guests: [] };
  } catch {
    return { guests: [] };
  }
}

function memberUrls(at: ListenAt): { peerUrl: string; clientUrl: string } {
  const host = net.isIPv6(at.address) ? `[${at.address}]` : at.address;
  return { peerUrl: `https://${host}:${at.peerPort ?? DEFAULT_PEER_PORT}`, clientUrl: `https://${host}:${at.clientPort ?? DEFAULT_CLIENT_PORT}` };
}
