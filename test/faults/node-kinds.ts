// The fault kinds of a node: its agent SIGKILLed at random points of a guest restore (to a
// new id, and over an existing guest with --force) and of a restore drill, then started
// again on its data directory. After each: the node starts, what it lists is whole (the
// restored guest all there or not there at all, a replaced guest either the old one or the
// new one, never a mix), nothing of the restore or the drill is left (staging, moved-aside
// data, sandboxes, their processes, a drill still "running"), and the operation succeeds.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { DrillRecord } from "../../src/api/node-routes.ts";
import { NodeClient } from "../../src/client/node-client.ts";
import { lxcAvailable } from "../../src/node/lxc.ts";
import { describeTree } from "../helpers.ts";
import { type NodeProcess, freePort, startNodeProcess } from "../server-fixture.ts";
import { ADMIN_PASSWORD, type FaultLab, type ManagedServer, check } from "./lab.ts";
import type { Kind, KindContext, KindResult } from "./kinds.ts";

const NODE_PASSWORD = "faults-node-1";
const SOURCE = 101;
const COPY = 201;

/** A node agent on a fixed port and data directory, so it can be killed and started again as the same node. */
class ManagedNode {
  process!: NodeProcess;
  api!: NodeClient;
  readonly dataDir: string;
  private readonly start: () => Promise<NodeProcess>;

  constructor(dataDir: string, start: () => Promise<NodeProcess>) {
    this.dataDir = dataDir;
    this.start = start;
  }

  async up(): Promise<void> {
    this.process = await this.start();
    this.api = await NodeClient.connect(this.process.url(), { secret: NODE_PASSWORD, fingerprint: this.process.fingerprint });
  }

  /** SIGKILL by its pid (its guests live on, as on a host whose agent dies), then started again. */
  async killAndRestart(): Promise<void> {
    this.api.close();
    await this.process.stop("SIGKILL");
    await this.up();
  }

  async stop(): Promise<void> {
    this.api?.close();
    await this.process?.stop("SIGKILL");
  }

  rootfs(id: number): string {
    return path.join(this.dataDir, "rootfs", String(id));
  }
}

let lab: FaultLab | undefined;
let node: ManagedNode | undefined;
/** The node with container 101 created and backed up once (not running: its files stay as backed up). */
async function theNode(ctx: KindContext, server: ManagedServer): Promise<{ node: ManagedNode; snapshot: string }> {
  if (!node || lab !== ctx.lab) {
    lab = ctx.lab;
    const dataDir = path.join(ctx.lab.root, "node");
    const port = await freePort();
    const srv = server.process;
    node = new ManagedNode(dataDir, () =>
      startNodeProcess({ name: "node1", dataDir, serverUrl: srv.url("store"), serverFingerprint: srv.fingerprint, serverSecret: ADMIN_PASSWORD, adminPassword: NODE_PASSWORD, port }),
    );
    ctx.lab.onClose(async () => {
      await node?.stop();
    });
    await node.up();
    await node.api.call("createGuest", { json: { demo: { kind: "ct", id: SOURCE, httpPort: await freePort() } } });
    await node.api.backup(SOURCE, {});
  }
  const list = await node.api.call("storageSnapshots", { params: { storage: "store" }, query: { group: `ct/${SOURCE}` } });
  return { node, snapshot: list.filter((s) => s.finished).at(-1)!.snapshot };
}

/** What the node left of a restore or drill it was killed in, once started again: nothing. */
function nodeLeftovers(n: ManagedNode): string[] {
  const out: string[] = [];
  for (const f of fs.readdirSync(path.join(n.dataDir, "images"))) if (f.startsWith(".")) out.push(`images/${f}`);
  for (const f of fs.readdirSync(path.join(n.dataDir, "guests"))) if (f.endsWith(".replacing")) out.push(`guests/${f}`);
  for (const f of fs.readdirSync(path.join(n.dataDir, "drills"))) out.push(`drills/${f}`);
  return out;
}

/** Processes other than the node agent that run from the node's data directory (a sandbox's container, a guest). */
function strayProcesses(n: ManagedNode, allowed: number[] = []): string[] {
  const r = spawnSync("pgrep", ["-af", n.dataDir]).stdout.toString().trim();
  return r
    .split("\n")
    .filter(Boolean)
    .filter((l) => !l.startsWith(`${n.process.child.pid} `) && !allowed.some((id) => l.includes(path.join(n.dataDir, "run", String(id)))));
}

function treeDiff(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [p, v] of a) if (b.get(p) !== v) out.push(p || "/");
  for (const p of b.keys()) if (!a.has(p)) out.push(p || "/");
  return out;
}

function count(result: KindResult, outcome: string): void {
  result.outcomes.set(outcome, (result.outcomes.get(outcome) ?? 0) + 1);
}

/** A random moment of `workMs` (and a little past it) to kill at. */
function killAt(ctx: KindContext, workMs: number): number {
  return ctx.lab.random() * workMs * 1.1;
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

/** Why the node's containers cannot run here, if they cannot. */
function withoutLxc(): string | undefined {
  const l = lxcAvailable();
  return l.ok ? undefined : l.why;
}

export function guestRestore(server: (lab: FaultLab) => Promise<ManagedServer>): Kind {
  return {
    id: "guest-restore",
    name: "guest restore (node agent killed)",
    unavailable: withoutLxc,
    async run(ctx, result) {
      const { node: n, snapshot } = await theNode(ctx, await server(ctx.lab));
      const want = describeTree(n.rootfs(SOURCE));
      const workMs = await timed(() => n.api.restore({ snapshot, id: COPY }));
      await n.api.call("removeGuest", { params: { id: COPY } });
      for (let i = 0; i < ctx.faults; i++) {
        // Even faults restore to a new id; odd ones over an existing guest that differs from the snapshot.
        const force = i % 2 === 1;
        let old: Map<string, string> | undefined;
        if (force) {
          await n.api.restore({ snapshot, id: COPY });
          fs.writeFileSync(path.join(n.rootfs(COPY), "etc", "motd"), `the old guest of round ${i}\n`);
          old = describeTree(n.rootfs(COPY));
        }
        const at = killAt(ctx, workMs);
        const started = performance.now();
        const { task } = await n.api.call("restoreGuest", { json: { snapshot, id: COPY, force } });
        const wait = at - (performance.now() - started);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const state = (await n.api.call("getTask", { params: { id: task } })).state;
        await n.killAndRestart();
        result.faults++;
        if (state === "running") result.midway++;
        const ids = (await n.api.call("listGuests")).map((g) => g.id);
        check(ids.includes(SOURCE), `guest ${SOURCE} is gone after the node was killed mid-restore`);
        let outcome: string;
        if (!ids.includes(COPY)) {
          check(!force, `the guest a restore --force was replacing is gone after the node was killed`);
          check(!fs.existsSync(n.rootfs(COPY)), `a restore killed before its end left ${n.rootfs(COPY)} without a guest`);
          outcome = "not there (killed before its end)";
        } else {
          const now = describeTree(n.rootfs(COPY));
          const isNew = treeDiff(want, now).length === 0;
          const isOld = old !== undefined && treeDiff(old, now).length === 0;
          check(isNew || isOld, `guest ${COPY} after a killed restore is neither the snapshot nor the old guest: ${treeDiff(isOld ? old! : want, now).slice(0, 5).join(", ")}`);
          outcome = isNew ? "the snapshot, whole" : "the old guest, whole";
        }
        count(result, `${force ? "over a guest" : "to a new id"}: ${outcome}`);
        const left = nodeLeftovers(n);
        check(left.length === 0, `the node left after a killed restore: ${left.join(", ")}`);
        ctx.log(`  guest restore #${result.faults}${force ? " --force" : ""}: node killed at ${Math.round(at)} ms (task ${state}) → ${outcome}`);
        // The restore again: it must succeed, and give the snapshot.
        await n.api.restore({ snapshot, id: COPY, force: ids.includes(COPY) });
        check(treeDiff(want, describeTree(n.rootfs(COPY))).length === 0, `guest ${COPY} restored again is not the snapshot`);
        await n.api.call("removeGuest", { params: { id: COPY } });
      }
      const stray = strayProcesses(n);
      check(stray.length === 0, `processes left from the node's data directory: ${stray.join("; ")}`);
    },
  };
}

export function drill(server: (lab: FaultLab) => Promise<ManagedServer>): Kind {
  return {
    id: "drill",
    name: "restore drill (node agent killed)",
    unavailable: withoutLxc,
    async run(ctx, result) {
      const { node: n, snapshot } = await theNode(ctx, await server(ctx.lab));
      const passed = async (): Promise<DrillRecord> => {
        const d = await n.api.runDrill({ guest: SOURCE, snapshot });
        check(d.result === "passed", `a drill after the fault did not pass: ${d.result}: ${d.error}`);
        return d;
      };
      const workMs = await timed(passed);
      for (let i = 0; i < ctx.faults; i++) {
        const at = killAt(ctx, workMs);
        const started = performance.now();
        const { task, drill: id } = await n.api.startDrill({ guest: SOURCE, snapshot });
        const wait = at - (performance.now() - started);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const state = (await n.api.call("getTask", { params: { id: task } })).state;
        await n.killAndRestart();
        result.faults++;
        if (state === "running") result.midway++;
        const ids = (await n.api.call("listGuests")).map((g) => g.id);
        check(ids.length === 1 && ids[0] === SOURCE, `the node lists ${ids.join(", ")} after a drill it was killed in (a sandbox left?)`);
        const record = await n.api.call("getDrill", { params: { id } });
        check(record.result !== "running", `drill ${id} still says running after the node that ran it was killed`);
        count(result, `drill recorded ${record.result}`);
        const left = nodeLeftovers(n);
        check(left.length === 0, `the node left after a killed drill: ${left.join(", ")}`);
        const stray = strayProcesses(n);
        check(stray.length === 0, `processes left of a killed drill: ${stray.join("; ")}`);
        ctx.log(`  drill #${result.faults}: node killed at ${Math.round(at)} ms (task ${state}) → drill recorded ${record.result}`);
        await passed();
      }
    },
  };
}
