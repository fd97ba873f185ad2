// The cluster's state in etcd, through the etcd3 client (gRPC over the members' TLS): the
// etcd membership, and one lease per node that says it is alive. Keys live under /gorde/.
import { noop } from "cockatiel";
import { Etcd3, type IMemberAddResponse, type Lease } from "etcd3";
import { setTimeout as sleep } from "node:timers/promises";
import { GordeError } from "../errors.ts";
import type { MemberTls } from "./etcd-member.ts";

/** An etcd member as the cluster lists it; a member added but not started yet has no name. */
export interface ClusterMember {
  id: string;
  name: string;
  peerUrl: string;
  clientUrl: string | undefined;
  /** added and not yet promoted: it votes in no majority */
  learner: boolean;
}

const PREFIX = "/gorde/";

/** Calls that have not answered in this time fail: a side without quorum never answers. */
const CALL_TIMEOUT_MS = 5000;
const ADD_MEMBER_WAIT_MS = 30_000;

export class ClusterStore {
  readonly client: Etcd3;

  private constructor(client: Etcd3) {
    this.client = client;
  }

  /** A client of the members at `clientUrls`, authenticated by a member's certificate. */
  static connect(clientUrls: string[], tls: MemberTls): ClusterStore {
    const client = new Etcd3({
      hosts: clientUrls,
      credentials: { rootCertificate: Buffer.from(tls.ca), certChain: Buffer.from(tls.cert), privateKey: Buffer.from(tls.key) },
      dialTimeout: CALL_TIMEOUT_MS,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
      // One attempt per call and no host put aside after failures: the caller decides what a
      // failure means (no quorum, a member gone), and a member that returns is used at once.
      faultHandling: { host: () => noop, global: noop },
    });
    return new ClusterStore(client);
  }

  async members(): Promise<ClusterMember[]> {
    const r = await this.client.cluster.memberList({ linearizable: true }).catch((err: unknown) => {
      throw unavailable("list the cluster's members", err);
    });
    return r.members.map((m) => ({ id: m.ID, name: m.name, peerUrl: m.peerURLs[0] ?? "", clientUrl: m.clientURLs[0], learner: m.isLearner }));
  }

  /**
   * Adds a member that will listen at `peerUrl`, as a learner: it counts for no majority
   * until it is promoted, so a host that never starts its member cannot take the cluster's
   * quorum with it (a voting member added and never started would). Answers the initial
   * cluster it must start with (every member's name and peer URL, the new one's included).
   */
  async addMember(name: string, peerUrl: string): Promise<Record<string, string>> {
    const before = await this.members();
    // A member added but never started has no name yet: its address tells it.
    if (before.some((m) => m.name === name)) throw new GordeError("exists", `the cluster has a member named ${name} already.`);
    if (before.some((m) => m.peerUrl === peerUrl)) throw new GordeError("exists", `a member of the cluster listens at ${peerUrl} already.`);
    // etcd adds a voting member only once every started member has been connected for 5 s
    // (strict reconfiguration): right after a member joined, the next one waits.
    const deadline = Date.now() + ADD_MEMBER_WAIT_MS;
    let r: IMemberAddResponse;
    for (;;) {
      try {
        r = await this.client.cluster.memberAdd({ peerURLs: [peerUrl], isLearner: true });
        break;
      } catch (err) {
        if (!/unhealthy cluster/.test((err as Error).message) || Date.now() > deadline) throw unavailable(`add member ${name}`, err);
        await sleep(500);
      }
    }
    const initial: Record<string, string> = {};
    for (const m of r.members) {
      const url = m.peerURLs[0];
      if (!url) continue;
      initial[m.ID === r.member.ID ? name : m.name] = url;
    }
    return initial;
  }

  /** Makes the learner `name` a voting member once it has caught up with the leader (waits for that). */
  async promote(name: string): Promise<void> {
    const deadline = Date.now() + ADD_MEMBER_WAIT_MS;
    for (;;) {
      // A started member is listed by its name once it has published it through the leader.
      const m = (await this.members()).find((x) => x.name === name);
      if (!m) {
        if (Date.now() > deadline) throw new GordeError("not-found", `the cluster has no member named ${name}.`);
        await sleep(300);
        continue;
      }
      try {
        await this.client.cluster.memberPromote({ ID: m.id });
        return;
      } catch (err) {
        // A learner still catching up: "can only promote a learner member which is in sync with leader".
        if (!/in sync with leader|unhealthy cluster|not started/i.test((err as Error).message) || Date.now() > deadline) throw unavailable(`make ${name} a voting member`, err);
        await sleep(300);
      }
    }
  }

  async removeMember(name: string): Promise<void> {
    const m = (await this.members()).find((x) => x.name === name);
    if (!m) throw new GordeError("not-found", `the cluster has no member named ${name}.`);
    await this.client.cluster.memberRemove({ ID: m.id }).catch((err: unknown) => {
      throw unavailable(`remove member ${name}`, err);
    });
  }

  async get(key: string): Promise<string | null> {
    return this.client
      .get(PREFIX + key)
      .string()
      .catch((err: unknown) => {
        throw unavailable(`read ${key}`, err);
      });
  }

  async put(key: string, value: string): Promise<void> {
    await this.client
      .put(PREFIX + key)
      .value(value)
      .catch((err: unknown) => {
        throw unavailable(`write ${key}`, err);
      });
  }

  /** The keys under `prefix` (without the prefix) and their values. */
  async list(prefix: string): Promise<Map<string, string>> {
    const all = await this.client
      .getAll()
      .prefix(PREFIX + prefix)
      .strings()
      .catch((err: unknown) => {
        throw unavailable(`read ${prefix}`, err);
      });
    return new Map(Object.entries(all).map(([k, v]) => [k.slice(PREFIX.length + prefix.length), v]));
  }

  /**
   * Applies `changes` (a value, or null: deleted) only if every key of `expected` still
   * holds its value (null: does not exist), in one transaction; answers false, changing
   * nothing, when someone changed one first. What moves the cluster's state (a guest's
   * owner, an HA resource's state) goes only this way.
   */
  async swap(expected: Record<string, string | null>, changes: Record<string, string | null>): Promise<boolean> {
    const entries = Object.entries(expected);
    if (entries.length === 0) throw new GordeError("usage", "a transaction of the cluster's state compares at least one key.");
    const [[k0, v0], ...more] = entries as [[string, string | null], ...[string, string | null][]];
    const compare = (k: string, v: string | null): [string, "Create" | "Value", "==", string | number] => (v === null ? [PREFIX + k, "Create", "==", 0] : [PREFIX + k, "Value", "==", v]);
    let txn = this.client.if(...compare(k0, v0));
    for (const [k, v] of more) txn = txn.and(...compare(k, v));
    const ops = Object.entries(changes).map(([k, v]) => (v === null ? this.client.delete().key(PREFIX + k) : this.client.put(PREFIX + k).value(v)));
    const r = await txn
      .then(...ops)
      .commit()
      .catch((err: unknown) => {
        throw unavailable(`change ${Object.keys(changes).join(", ")}`, err);
      });
    return r.succeeded;
  }

  /** Grants a lease of `ttlSeconds` that nobody renews but its owner (`Lease.keepaliveOnce`). */
  lease(ttlSeconds: number): Lease {
    return this.client.lease(ttlSeconds, { autoKeepAlive: false });
  }

  /** Puts a key that lives as long as `lease`. */
  async putWithLease(lease: Lease, key: string, value: string): Promise<void> {
    await lease
      .put(PREFIX + key)
      .value(value)
      .catch((err: unknown) => {
        throw unavailable(`write ${key}`, err);
      });
  }

  close(): void {
    this.client.close();
  }
}

/** A call the cluster did not answer: no quorum on this side, or no member reachable. */
function unavailable(what: string, err: unknown): GordeError {
  const message = err instanceof Error ? err.message : String(err);
  return new GordeError("io", `cannot ${what}: the cluster did not answer (${message.replace(/\.$/, "")}); is a majority of its members up and reachable?`, { cause: err });
}
