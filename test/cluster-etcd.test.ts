// The cluster's etcd, for real: three members on 127.0.0.1 (node1, node2 and the witness),
// formed as `gorde cluster create` and `join` will: the first alone, then each added to the
// running cluster. TLS everywhere with the cluster's CA; a majority keeps the state
// writable, a minority cannot write, and the state is back when the majority is.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ClusterStore } from "../src/cluster/cluster-store.ts";
import { type EtcdMember, type MemberTls, etcdAvailable, healthy, startEtcdMember } from "../src/cluster/etcd-member.ts";
import { createCertificateAuthority, issueCertificate } from "../src/host/tls.ts";
import { tempDir } from "./helpers.ts";
import { freePort } from "./server-fixture.ts";

const avail = etcdAvailable();
const why = avail.ok ? undefined : avail.why;
if (why) console.error(`\n*** SKIPPED: cluster etcd tests: ${why}. ***\n`);

interface Planned {
  name: string;
  dir: string;
  peerUrl: string;
  clientUrl: string;
  tls: MemberTls;
}

void describe("the cluster's etcd", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-etcd-");
  const planned: Planned[] = [];
  const running = new Map<string, EtcdMember>();
  let store: ClusterStore | undefined;

  before(async () => {
    const ca = await createCertificateAuthority("lab");
    for (const name of ["node1", "node2", "witness"]) {
      const pair = await issueCertificate(ca, name, ["127.0.0.1"]);
      planned.push({
        name,
        dir: `${tmp.dir}/${name}`,
        peerUrl: `https://127.0.0.1:${await freePort()}`,
        clientUrl: `https://127.0.0.1:${await freePort()}`,
        tls: { ca: ca.cert, ...pair },
      });
    }
  });

  after(async () => {
    store?.close();
    for (const m of running.values()) await m.stop();
    tmp.cleanup();
  });

  const start = async (p: Planned, initialCluster: Record<string, string>, state: "new" | "existing"): Promise<EtcdMember> => {
    const m = await startEtcdMember({ dir: p.dir, name: p.name, peerUrl: p.peerUrl, clientUrl: p.clientUrl, initialCluster, state, cluster: "lab", tls: p.tls, waitForLeader: true });
    running.set(p.name, m);
    return m;
  };
  const stop = async (name: string): Promise<void> => {
    await running.get(name)?.stop();
    running.delete(name);
  };

  void it("forms three members one by one; every member reads what one wrote", async () => {
    const [n1, n2, w] = planned as [Planned, Planned, Planned];
    await start(n1, { node1: n1.peerUrl }, "new");
    store = ClusterStore.connect([n1.clientUrl], n1.tls);
    await store.put("probe", "written alone");
    for (const p of [n2, w]) {
      const initial = await store.addMember(p.name, p.peerUrl);
      assert.equal(initial[p.name], p.peerUrl);
      assert.equal((await store.members()).find((m) => m.peerUrl === p.peerUrl)?.learner, true, "added as a learner: no vote yet");
      await start(p, initial, "existing");
      await store.promote(p.name);
    }
    const members = await store.members();
    assert.deepEqual(members.map((m) => m.name).sort(), ["node1", "node2", "witness"]);
    assert.ok(members.every((m) => !m.learner), "every member votes");
    await store.put("probe", "written by three");
    for (const p of planned) {
      const one = ClusterStore.connect([p.clientUrl], p.tls);
      try {
        assert.equal(await one.get("probe"), "written by three", `${p.name} reads the cluster's value`);
      } finally {
        one.close();
      }
    }
    await assert.rejects(store.addMember("node2", `https://127.0.0.1:${await freePort()}`), /has a member named node2 already/);
  });

  void it("refuses a client whose certificate another CA signed", async () => {
    const other = await createCertificateAuthority("other");
    const stranger = { ca: planned[0]!.tls.ca, ...(await issueCertificate(other, "stranger", ["127.0.0.1"])) };
    assert.equal(await healthy(planned[0]!.clientUrl, stranger), false);
    const c = ClusterStore.connect([planned[0]!.clientUrl], stranger);
    try {
      await assert.rejects(c.get("probe"), /the cluster did not answer/);
    } finally {
      c.close();
    }
  });

  void it("writes with two of three members up, not with one, and again once two are back", async () => {
    const [n1, n2] = planned as [Planned, Planned, Planned];
    await stop("witness");
    await store!.put("probe", "two of three");
    assert.equal(await store!.get("probe"), "two of three");

    await stop("node2");
    // A write the minority cannot commit times out. (etcd may still apply it once the
    // majority is back: a timeout is not a refusal, which is why the cluster's changes are
    // transactions that compare before they change.)
    await assert.rejects(store!.put("minority", "not confirmed"), /the cluster did not answer[^]*majority/);
    await assert.rejects(store!.get("probe"), /the cluster did not answer/, "a linearizable read needs the majority too");
    assert.equal(await healthy(n1.clientUrl, n1.tls), false, "a member without quorum is not healthy");

    // node2 starts again from its own data (etcd ignores the initial cluster then): the
    // majority is back, and with it the state.
    await start(n2, Object.fromEntries(planned.map((p) => [p.name, p.peerUrl])), "existing");
    assert.equal(await store!.get("probe"), "two of three");
    await store!.put("probe", "two again");
    assert.equal(await store!.get("probe"), "two again");
  });
});
