// A node's HA agent (PVE's LRM and CRM in one, on every node): once a second it reads the
// cluster's placements, HA resources and live nodes, and
//
// - fences: when the node's last answered lease renewal is SELF_FENCE_AFTER_MS old, its
//   HA guests are killed (the fence helper, outside this process, does the same at the same
//   deadline in case this process is stuck);
// - keeps its own HA guests as asked: started (restarted up to max-restart times), or stopped;
// - places its guests in the cluster, and moves aside a guest the cluster gave to another
//   node while this one was lost (never starting it, never deleting it);
// - recovers: a guest of a node whose lease has lapsed, RECOVERY_DELAY_MS after it saw it
//   lapse, is taken in one transaction (only if still on the lost node), restored from its
//   newest good backup, started and checked as a drill checks; RPO and RTO recorded.
//
// No HA guest starts unless the node's lease was renewed within START_WITHIN_MS.
import type { HaResource } from "../api/ha-routes.ts";
import { type ClusterView, ClusterGuests, type HaEntry, type Read, shownResource } from "../cluster/ha-store.ts";
import { HA_LOOP_MS, LEASE_TTL_S, RECOVERY_DELAY_MS, RETRY_MAX_MS, RETRY_MS, SELF_FENCE_AFTER_MS, START_WITHIN_MS, monotonicMs } from "../cluster/ha-timing.ts";
import type { ClusterMembership } from "../cluster/membership.ts";
import { GordeError } from "../errors.ts";
import type { RecoveryHistory } from "../jobs/recovery-history.ts";
import type { DrillRunner } from "./drill.ts";
import type { FenceHelper } from "./fence-helper-client.ts";
import type { GuestManager } from "./guests.ts";

/** How often the fence deadline is looked at. */
const FENCE_CHECK_MS = 250;
/** Restarts of a guest that ran this long are forgiven. */
const STABLE_MS = 10 * 60_000;

export interface HaAgentOptions {
  node: string;
  membership: ClusterMembership;
  guests: GuestManager;
  drills: DrillRunner;
  history: RecoveryHistory;
  fence: FenceHelper;
  /** the node's onboot guests are still to start (a node of a cluster starts them once it has read the cluster's state) */
  startOnBoot: boolean;
  /** tells the plan's notification targets */
  notify: (o: { result: "ok" | "failed"; start: number; end: number; message: string; log: string }) => Promise<void>;
  log: (line: string) => void;
}

function seconds(ms: number): number {
  return Math.round(ms / 10) / 100;
}

function sentence(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\.$/, "");
}

/** Failures that are no fault of the backup: the server or the cluster did not answer. Tried again, without end. */
function passing(err: unknown): boolean {
  return err instanceof GordeError ? err.code === "io" || err.code === "locked" : true;
}

export class HaAgent {
  private readonly o: HaAgentOptions;
  private timer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private fencing: Promise<void> | undefined;
  private tick: Promise<void> | undefined;
  private closed = false;
  private readonly closing = new AbortController();
  /** the state as last read; undefined until the cluster answered once */
  private view: ClusterView | undefined;
  /** each node's last renewal as last seen while it was online (ms since the epoch) */
  private readonly lastRenewal = new Map<string, number>();
  /** nodes seen without a lease: since when (monotonic and wall clock) */
  private readonly lost = new Map<string, { mono: number; wall: number }>();
  private readonly recovering = new Map<number, Promise<void>>();
  private readonly retryAfter = new Map<number, number>();
  private readonly retryWait = new Map<number, number>();
  private readonly toldFailure = new Map<number, string>();
  /** restarts of each own HA guest since it last ran for a while */
  private readonly restarts = new Map<number, number>();
  private readonly wasRunning = new Set<number>();
  private readonly runningSince = new Map<number, number>();
  private fenced = false;
  /** HA guests started through mayStart (before the first read, haHere knows them by this) */
  private readonly startedHa = new Set<number>();
  private bootDone: boolean;
  private unansweredSaid = false;
  private readonly said = new Set<string>();

  private constructor(o: HaAgentOptions) {
    this.o = o;
    this.bootDone = !o.startOnBoot;
  }

  static start(o: HaAgentOptions): HaAgent {
    const a = new HaAgent(o);
    const loop = (): void => {
      if (a.closed) return;
      a.tick = a.step().catch((err: unknown) => o.log(`HA agent: ${sentence(err)}`));
      void a.tick.finally(() => {
        if (!a.closed) a.timer = setTimeout(loop, HA_LOOP_MS);
      });
    };
    loop();
    a.fenceTimer = setInterval(() => {
      a.fencing ??= a.fenceCheck().finally(() => (a.fencing = undefined));
    }, FENCE_CHECK_MS);
    return a;
  }

  /** The HA resources as an operator sees them (read from the cluster now). */
  async resources(): Promise<HaResource[]> {
    const view = await this.store().view();
    return [...view.resources].sort(([a], [b]) => a - b).map(([id, r]) => shownResource(id, r.value, view.placements.get(id)?.value, view.online));
  }

  store(): ClusterGuests {
    const s = this.o.membership.clusterStore;
    if (!s) throw new GordeError("not-found", `node ${this.o.node} is in no cluster.`);
    return new ClusterGuests(s);
  }

  /**
   * The gate every start of a guest goes through on a node of a cluster: an HA guest starts
   * only on the node that owns it, read now, under a lease that did not lapse since (the
   * same lease and fresh: while it holds, its alive key keeps any survivor from taking the
   * guest). Without an answer from the cluster nothing starts, as PVE without quorum.
   */
  async mayStart(id: number): Promise<void> {
    const m = this.o.membership;
    if (!m.clusterStore) return;
    if (this.closed) throw new GordeError("locked", `node ${this.o.node} is stopping; guest ${id} is not started.`);
    const generation = m.leaseGeneration;
    let cur: { node: string | undefined; ha: boolean };
    try {
      cur = await this.store().current(id);
    } catch (err) {
      throw new GordeError("io", `guest ${id} is not started: the cluster does not answer, so whether it may run here is not known (${sentence(err)}).`);
    }
    if (!cur.ha) return;
    if (cur.node !== this.o.node) throw new GordeError("locked", `HA guest ${id} belongs to node ${cur.node ?? "none"} in the cluster; it is not started on ${this.o.node}.`);
    if (this.fenced || m.leaseGeneration !== generation || !this.leaseFresh()) throw new GordeError("io", `HA guest ${id} is not started: the cluster lease of ${this.o.node} is not fresh.`);
    // Armed before it starts, whoever starts it: no HA guest runs outside the fence.
    this.startedHa.add(id);
    this.armFence(id);
  }

  /**
   * HA guests placed here as last read; while nothing was read, those the fence helper of the
   * node's previous agent guards (adopted, still running) and those started since.
   */
  private haHere(): number[] {
    const v = this.view;
    if (!v) {
      const guarded = new Set(this.o.fence.inherited?.dirs ?? []);
      return this.o.guests.ids().filter((id) => guarded.has(this.o.guests.runDir(id)) || this.startedHa.has(id));
    }
    return [...v.resources.keys()].filter((id) => v.placements.get(id)?.value.node === this.o.node);
  }

  /**
   * Whether the node's fence deadline has passed: SELF_FENCE_AFTER_MS after the last answered
   * renewal of its lease; before this agent's first one, the deadline the previous agent left
   * its fence helper (its guests, adopted, live by it), else now.
   */
  private fenceDue(): boolean {
    const age = this.o.membership.leaseAge();
    const inherited = this.o.fence.inherited?.deadline;
    if (age === Infinity && inherited !== undefined) return monotonicMs() >= inherited;
    return age >= SELF_FENCE_AFTER_MS;
  }

  /**
   * Kills the node's HA guests once the last answered renewal of its lease is
   * SELF_FENCE_AFTER_MS old. Runs on its own timer: a step of the loop waiting on a cluster
   * that does not answer must not hold it up (the fence helper keeps the same deadline).
   */
  private async fenceCheck(): Promise<void> {
    const { guests, membership } = this.o;
    if (!membership.clusterStore) return;
    const age = membership.leaseAge();
    if (!this.fenceDue()) {
      if (this.fenced) this.o.log(`the cluster lease of ${this.o.node} is renewed again after the fence`);
      this.fenced = false;
      return;
    }
    const here = [...new Set([...this.haHere(), ...this.recovering.keys()])];
    if (!this.fenced) for (const id of here) this.wasRunning.delete(id);
    if (!this.fenced && here.length) this.o.log(`fencing: the cluster lease of ${this.o.node} was ${age === Infinity ? "not renewed since this agent started" : `last renewed ${seconds(age)} s ago`}; killing HA guests ${here.join(", ")} (its fence helper does the same)`);
    this.fenced = true;
    await Promise.all(here.filter((id) => guests.isRunning(id)).map((id) => guests.fence(id).catch((e: unknown) => this.o.log(`fencing guest ${id} failed: ${sentence(e)}`))));
  }

  /** Tells the fence helper which guests are this node's HA guests (those being recovered here too). */
  private armFence(also?: number): void {
    const ids = new Set([...this.haHere(), ...this.recovering.keys()]);
    if (also !== undefined) ids.add(also);
    this.o.fence.arm([...ids].map((id) => this.o.guests.runDir(id)));
  }

  private say(key: string, line: string): void {
    if (this.said.has(key)) return;
    this.said.add(key);
    this.o.log(line);
  }

  private leaseFresh(): boolean {
    return this.o.membership.leaseAge() < START_WITHIN_MS;
  }

  private async step(): Promise<void> {
    const { guests, membership } = this.o;
    if (!membership.clusterStore) return;
    this.armFence();
    // Fenced, the node waits for its lease; the fence itself runs on its own timer (fenceCheck).
    if (this.fenced) await this.fenceCheck();
    if (this.fenced) {
      this.lost.clear();
      return;
    }
    let view: ClusterView;
    try {
      view = await this.store().view();
    } catch (err) {
      // What this node saw of the others is stale now: a node seen lost is waited for anew.
      this.lost.clear();
      if (!this.unansweredSaid) this.o.log(`HA: the cluster does not answer (${sentence(err)}); HA guests here are killed if the lease is not renewed within ${SELF_FENCE_AFTER_MS / 1000} s`);
      this.unansweredSaid = true;
      return;
    }
    if (this.unansweredSaid) this.o.log("HA: the cluster answers again");
    this.unansweredSaid = false;
    this.view = view;
    for (const [node, at] of view.renewedAt) this.lastRenewal.set(node, at);
    await this.placeOwnGuests(view);
    if (!this.bootDone) {
      this.bootDone = true;
      // HA guests are the agent's to start; the others start as they would alone.
      await guests.startOnBoot(new Set(view.resources.keys()));
    }
    for (const [id, r] of view.resources) {
      const placed = view.placements.get(id);
      if (!placed) continue;
      // One resource that fails (a write the cluster refused) does not hold up the others.
      try {
        if (placed.value.node === this.o.node) await this.keep(id, r);
        else if (!view.online.has(placed.value.node)) await this.maybeRecover(id, r, view);
      } catch (err) {
        this.say(`step-${id}-${sentence(err)}`, `HA: ${r.value.sid}: ${sentence(err)}`);
      }
    }
    for (const node of [...this.lost.keys()]) if (view.online.has(node)) this.lost.delete(node);
  }

  /** Places this node's guests that the cluster does not know; moves aside an HA guest the cluster gave away. */
  private async placeOwnGuests(view: ClusterView): Promise<void> {
    const { guests } = this.o;
    for (const id of guests.ids()) {
      const placed = view.placements.get(id)?.value;
      if (placed?.node === this.o.node || this.recovering.has(id) || guests.isBusy(id)) continue;
      const c = guests.config(id);
      if (!placed) {
        await this.store()
          .claim(id, { node: this.o.node, kind: c.kind, name: c.name })
          .catch((e: unknown) => this.say(`claim-${id}`, `guest ${id} could not be placed in the cluster: ${sentence(e)}`));
        continue;
      }
      if (!view.resources.has(id)) {
        this.say(`conflict-${id}`, `guest id ${id} of this node is the id of a guest on node ${placed.node} in the cluster; give one of them another id`);
        continue;
      }
      // Recovered on another node while this one was lost: this copy must never run again.
      if (guests.isRunning(id)) await guests.fence(id);
      const to = await guests.displace(id);
      this.o.log(`guest ${id} was recovered on node ${placed.node} while this node was lost: this node's copy is not started; its configuration and disks are kept in ${to}`);
    }
  }

  /** An HA guest placed here: running when asked to be, stopped when not. */
  private async keep(id: number, r: Read<HaEntry>): Promise<void> {
    const { guests } = this.o;
    const e = r.value;
    if (this.recovering.has(id)) return;
    if (e.state === "recovery") {
      if (guests.isRunning(id)) {
        // Recovered, and only its state was not written (the cluster did not answer then).
        await this.store().setState(id, r, { state: "started", reason: undefined, failedRecoveries: 0, lostNode: undefined, lostAt: undefined });
        return;
      }
      // Taken by this node: its recovery failed, or was cut off by a restart. Again, from backup.
      if ((this.retryAfter.get(id) ?? 0) <= Date.now()) this.startRecovery(id, r);
      return;
    }
    if (!guests.ids().includes(id) || guests.isBusy(id)) return;
    const running = guests.isRunning(id);
    if (e.request === "stopped") {
      if (running) {
        this.o.log(`HA: stopping ${e.sid} as requested`);
        await guests.stop(id).catch((err: unknown) => this.o.log(`HA: ${e.sid} did not stop: ${sentence(err)}`));
      }
      if (e.state !== "stopped") await this.store().setState(id, r, { state: "stopped", reason: undefined });
      this.wasRunning.delete(id);
      return;
    }
    if (running) {
      this.wasRunning.add(id);
      // A guest that ran a while has its restarts forgiven (PVE counts them per failure too).
      if ((this.restarts.get(id) ?? 0) > 0 && (this.runningSince.get(id) ?? Date.now()) < Date.now() - STABLE_MS) this.restarts.delete(id);
      if (!this.runningSince.has(id)) this.runningSince.set(id, Date.now());
      if (e.state !== "started") await this.store().setState(id, r, { state: "started", reason: undefined, failedRecoveries: 0, lostNode: undefined, lostAt: undefined });
      return;
    }
    this.runningSince.delete(id);
    if (e.state === "error") return;
    if (!this.leaseFresh()) return;
    const n = this.wasRunning.has(id) ? (this.restarts.get(id) ?? 0) + 1 : 0;
    if (n > e.maxRestart) {
      await this.store().setState(id, r, { state: "error", reason: `stopped ${n} times on node ${this.o.node} (max-restart ${e.maxRestart}); look at its console, then take it out of HA and add it again (gorde ha remove, gorde ha add)` });
      this.o.log(`HA: ${e.sid} is in error: it stopped more often than max-restart ${e.maxRestart} allows`);
      return;
    }
    this.restarts.set(id, n);
    this.wasRunning.delete(id);
    this.o.log(n === 0 ? `HA: starting ${e.sid}` : `HA: ${e.sid} stopped; starting it again (restart ${n} of ${e.maxRestart})`);
    try {
      this.armFence(id);
      await guests.start(id);
      this.wasRunning.add(id);
    } catch (err) {
      this.wasRunning.add(id);
      this.o.log(`HA: ${e.sid} did not start: ${sentence(err)}`);
    }
  }

  /** A guest of a lost node: taken once the node's lease lapsed and the delay passed. */
  private async maybeRecover(id: number, r: Read<HaEntry>, view: ClusterView): Promise<void> {
    const e = r.value;
    if (e.request !== "started" || e.state === "error" || e.state === "stopped") return;
    const placed = view.placements.get(id)!;
    const from = placed.value.node;
    let lost = this.lost.get(from);
    if (!lost) {
      lost = { mono: monotonicMs(), wall: Date.now() };
      this.lost.set(from, lost);
      this.o.log(`HA: node ${from} has no lease; its HA guests are taken over in ${RECOVERY_DELAY_MS / 1000} s unless it renews it`);
    }
    if (monotonicMs() - lost.mono < RECOVERY_DELAY_MS || !this.leaseFresh()) return;
    // The failure: the lost node's last renewal as it published it (else estimated from the TTL).
    const lostAt = Math.min(this.lastRenewal.get(from) ?? lost.wall - LEASE_TTL_S * 1000, lost.wall);
    const reason = `node ${from} was lost: recovering from backup on ${this.o.node}`;
    const took = await this.store().take(id, { placement: placed, resource: r, to: this.o.node, reason, lostAt });
    if (!took) return;
    this.o.log(`HA: took ${e.sid} from lost node ${from} (its lease lapsed ${seconds(Date.now() - lost.wall)} s ago)`);
    const now = await this.store().view();
    const taken = now.resources.get(id);
    if (taken) this.startRecovery(id, taken, { seenLost: lost.wall, takenAt: Date.now() });
  }

  private startRecovery(id: number, r: Read<HaEntry>, times?: { seenLost: number; takenAt: number }): void {
    const p = this.recover(id, r, times)
      .catch((err: unknown) => this.o.log(`HA: recovery of guest ${id}: ${sentence(err)}`))
      .finally(() => this.recovering.delete(id));
    this.recovering.set(id, p);
  }

  /** Restores a taken guest from its newest good backup, starts it, runs its checks; records RPO and RTO. */
  private async recover(id: number, r: Read<HaEntry>, times?: { seenLost: number; takenAt: number }): Promise<void> {
    const { guests, drills, history } = this.o;
    const e = r.value;
    const kind = e.sid.startsWith("vm:") ? "vm" : "ct";
    const from = e.lostNode ?? "?";
    const failedAt = e.lostAt ?? Date.now();
    const lines: string[] = [];
    const say = (line: string): void => {
      lines.push(`${new Date().toISOString()} ${line}`);
      this.o.log(`HA ${e.sid}: ${line}`);
    };
    const hid = history.begin({ guest: id, sid: e.sid, from, node: this.o.node, failedAt });
    const signal = this.closing.signal;
    let snapshot: string | undefined;
    let rpo: number | undefined;
    let restoredAt: number | undefined;
    try {
      say(`recovering ${e.sid} of lost node ${from} on ${this.o.node}`);
      const plan = await drills.recoveryPlan(id, kind);
      snapshot = plan.snapshot;
      rpo = Math.max(0, Math.round(failedAt / 1000) - plan.time);
      say(`newest good backup: ${plan.snapshot} (its age at the failure ${rpo} s)`);
      // A copy left here from an earlier time is kept aside, never overwritten.
      if (guests.ids().includes(id)) say(`an older copy of guest ${id} on this node moved to ${await guests.displace(id)}`);
      await guests.restore({ snapshot: plan.snapshot, id }, { signal, say });
      restoredAt = Date.now();
      if (!this.leaseFresh()) throw new GordeError("io", `the cluster lease of ${this.o.node} is not fresh; the guest is not started`);
      this.armFence(id);
      const status = await guests.start(id);
      say(`started ${e.sid} (service port ${status.httpPort})`);
      this.wasRunning.add(id);
      const checks = await drills.checkRunning(plan, { port: status.httpPort, signal, say });
      const end = Date.now();
      const rto = seconds(end - failedAt);
      const split = {
        detectSeconds: times ? seconds(times.seenLost - failedAt) : null,
        fenceSeconds: times ? seconds(times.takenAt - times.seenLost) : null,
        restoreSeconds: times ? seconds(restoredAt - times.takenAt) : null,
        bootSeconds: seconds(end - restoredAt),
      };
      say(`recovered: ${checks.length} checks passing; RPO ${rpo} s, RTO ${rto} s`);
      const cur = (await this.store().view()).resources.get(id);
      if (cur) await this.store().setState(id, cur, { state: "started", reason: undefined, failedRecoveries: 0, lostNode: undefined, lostAt: undefined });
      this.retryWait.delete(id);
      this.toldFailure.delete(id);
      history.finish(hid, { end, result: "recovered", error: null, log: lines.join("\n") + "\n", snapshot, rpoSeconds: rpo, rtoSeconds: rto, ...split });
      await this.o.notify({ result: "ok", start: failedAt, end, message: `${e.sid} of lost node ${from} recovered on ${this.o.node} from ${snapshot}: RPO ${rpo} s, RTO ${rto} s`, log: lines.join("\n") }).catch(() => undefined);
    } catch (err) {
      const why = sentence(err);
      say(`not recovered: ${why}`);
      history.finish(hid, { end: Date.now(), result: "failed", error: why, log: lines.join("\n") + "\n", snapshot, rpoSeconds: rpo ?? null });
      // Whatever was made here is taken down: the next attempt starts clean.
      // The copy this recovery made is a copy of the backup: removed, the next attempt starts clean.
      if (guests.ids().includes(id) && restoredAt !== undefined) {
        await guests.stop(id).catch(() => undefined);
        await guests.remove(id, { keepPlacement: true }).catch((e: unknown) => say(`its copy could not be removed: ${sentence(e)}`));
      }
      const cur = (await this.store().view().catch(() => undefined))?.resources.get(id);
      if (cur && !signal.aborted) {
        const tries = cur.value.failedRecoveries + (passing(err) ? 0 : 1);
        const error = tries > cur.value.maxRelocate;
        await this.store()
          .setState(id, cur, { state: error ? "error" : "recovery", reason: `${error ? "recovery failed" : "recovery waits"}: ${why}`, failedRecoveries: tries })
          .catch(() => undefined);
        // Told once per reason: a backup server down for an hour is one message, not 700.
        if (this.toldFailure.get(id) !== why) {
          this.toldFailure.set(id, why);
          await this.o.notify({ result: "failed", start: failedAt, end: Date.now(), message: `${e.sid} of lost node ${from} not recovered on ${this.o.node}: ${why}`, log: lines.join("\n") }).catch(() => undefined);
        }
      }
      const wait = Math.min(RETRY_MAX_MS, (this.retryWait.get(id) ?? RETRY_MS / 2) * 2);
      this.retryWait.set(id, wait);
      this.retryAfter.set(id, Date.now() + wait);
      say(`tried again in ${wait / 1000} s`);
    }
  }

  /** Stops the loop and the recoveries under way (the node is stopping). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.fenceTimer);
    await this.fencing;
    this.closing.abort(new GordeError("io", "the node is stopping"));
    await this.tick?.catch(() => undefined);
    await Promise.all([...this.recovering.values()]);
  }
}

