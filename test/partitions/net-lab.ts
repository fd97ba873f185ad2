// The partition tests' network: node1, node2 and the witness each in a network namespace of
// their own, joined by a bridge in a fourth namespace, with addresses in 10.231.7.0/24 and no
// default route anywhere (a packet for an address with no route is refused in the namespace,
// it never leaves the machine). Links are cut with `ip link … down`, or with nft drop rules
// inside the namespaces: between two hosts, or to one port of a host. This process sends
// nothing to these addresses: what talks to them runs inside the namespaces.
import { spawnSync } from "node:child_process";
import fs from "node:fs";

export type Host = "node1" | "node2" | "witness";
export const HOSTS: readonly Host[] = ["node1", "node2", "witness"];
export const ADDRESS: Record<Host, string> = { node1: "10.231.7.1", node2: "10.231.7.2", witness: "10.231.7.3" };
const PREFIX = "gorde";
const TABLE = "gorde_partition";

function run(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.error?.message ?? r.stderr.trim()}`);
}

function netnsNames(): string[] {
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.split("\n").map((l) => l.split(" ")[0]!).filter(Boolean) : [];
}

/** Whether this machine can make the test's namespaces (root, iproute2, nftables), or why not. */
export function netnsAvailable(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: "network namespaces need root" };
  for (const [cmd, pkg] of [
    ["ip", "iproute2"],
    ["nft", "nftables"],
    ["nsenter", "util-linux"],
  ] as const) {
    if (spawnSync(cmd, ["--version"]).error) return { ok: false, why: `${cmd} is not installed (Debian's ${pkg}; scripts/setup.sh installs it as root)` };
  }
  const probe = `${PREFIX}${process.pid}-probe`;
  const r = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (r.status !== 0) return { ok: false, why: `ip netns add failed: ${r.stderr.trim()}` };
  spawnSync("ip", ["netns", "del", probe]);
  return { ok: true };
}

/** What is cut inside one host's namespace: hosts it neither hears nor reaches, its ports closed to all. */
interface Cuts {
  peers: Set<Host>;
  ports: Set<number>;
}

export class NetLab {
  readonly ns: Record<Host | "bridge", string>;
  private readonly cuts = new Map<Host, Cuts>(HOSTS.map((h) => [h, { peers: new Set(), ports: new Set() }]));
  private readonly down = new Set<Host>();

  private constructor(tag: string) {
    this.ns = { bridge: `${tag}-bridge`, node1: `${tag}-node1`, node2: `${tag}-node2`, witness: `${tag}-witness` };
  }

  /** Makes the four namespaces and the bridge; removes those a dead test process left behind. */
  static create(): NetLab {
    for (const name of netnsNames()) {
      const pid = /^gorde(\d+)-/.exec(name)?.[1];
      if (pid && !fs.existsSync(`/proc/${pid}`)) spawnSync("ip", ["netns", "del", name]);
    }
    const lab = new NetLab(`${PREFIX}${process.pid}`);
    try {
      for (const name of Object.values(lab.ns)) {
        run("ip", ["netns", "add", name]);
        run("ip", ["-n", name, "link", "set", "lo", "up"]);
      }
      const br = lab.ns.bridge;
      run("ip", ["-n", br, "link", "add", "br0", "type", "bridge"]);
      run("ip", ["-n", br, "link", "set", "br0", "up"]);
      for (const h of HOSTS) {
        // The pair is made in the bridge's namespace, its other end moved into the host's as eth0.
        run("ip", ["-n", br, "link", "add", `v-${h}`, "type", "veth", "peer", "name", "eth0", "netns", lab.ns[h]]);
        run("ip", ["-n", br, "link", "set", `v-${h}`, "master", "br0", "up"]);
        run("ip", ["-n", lab.ns[h], "addr", "add", `${ADDRESS[h]}/24`, "dev", "eth0"]);
        run("ip", ["-n", lab.ns[h], "link", "set", "eth0", "up"]);
      }
    } catch (e) {
      lab.destroy();
      throw e;
    }
    return lab;
  }

  /** The host's link down: it reaches nobody and nobody reaches it. */
  linkDown(h: Host): void {
    run("ip", ["-n", this.ns[h], "link", "set", "eth0", "down"]);
    this.down.add(h);
  }

  linkUp(h: Host): void {
    run("ip", ["-n", this.ns[h], "link", "set", "eth0", "up"]);
    this.down.delete(h);
  }

  /** `a` and `b` no longer hear each other (both still hear the third). */
  split(a: Host, b: Host): void {
    this.cuts.get(a)!.peers.add(b);
    this.cuts.get(b)!.peers.add(a);
    this.apply(a);
    this.apply(b);
  }

  unsplit(a: Host, b: Host): void {
    this.cuts.get(a)!.peers.delete(b);
    this.cuts.get(b)!.peers.delete(a);
    this.apply(a);
    this.apply(b);
  }

  /** Nobody reaches TCP port `port` of `h` (its other ports answer). */
  blockPort(h: Host, port: number): void {
    this.cuts.get(h)!.ports.add(port);
    this.apply(h);
  }

  unblockPort(h: Host, port: number): void {
    this.cuts.get(h)!.ports.delete(port);
    this.apply(h);
  }

  /** Every link up and every rule gone. */
  healAll(): void {
    for (const h of [...this.down]) this.linkUp(h);
    for (const h of HOSTS) {
      const c = this.cuts.get(h)!;
      if (c.peers.size || c.ports.size) {
        c.peers.clear();
        c.ports.clear();
        this.apply(h);
      }
    }
  }

  /** What is cut now, in words (for a failure's message). */
  describe(): string {
    const parts = [...this.down].map((h) => `${h} link down`);
    for (const h of HOSTS) {
      const c = this.cuts.get(h)!;
      for (const p of c.peers) if (h < p) parts.push(`${h} ⟂ ${p}`);
      for (const port of c.ports) parts.push(`${h}:${port} blocked`);
    }
    return parts.join(", ") || "nothing cut";
  }

  destroy(): void {
    for (const name of Object.values(this.ns)) spawnSync("ip", ["netns", "del", name]);
  }

  /** Rewrites the host's drop rules in one nft transaction (the table made, so that it can be deleted, then made anew). */
  private apply(h: Host): void {
    const c = this.cuts.get(h)!;
    const input = [...[...c.peers].map((p) => `ip saddr ${ADDRESS[p]} drop`), ...[...c.ports].map((port) => `tcp dport ${port} drop`)];
    const output = [...c.peers].map((p) => `ip daddr ${ADDRESS[p]} drop`);
    const script = [
      `table inet ${TABLE}`,
      `delete table inet ${TABLE}`,
      `table inet ${TABLE} {`,
      `  chain input {`,
      `    type filter hook input priority 0; policy accept;`,
      ...input.map((r) => `    ${r}`),
      `  }`,
      `  chain output {`,
      `    type filter hook output priority 0; policy accept;`,
      ...output.map((r) => `    ${r}`),
      `  }`,
      `}`,
      "",
    ].join("\n");
    run("nsenter", [`--net=/run/netns/${this.ns[h]}`, "--", "nft", "-f", "-"], script);
  }
}
