// The timings that keep two copies of an HA guest from ever running at once, in one place
// (docs/cluster.md derives the bounds from them). Chosen for two loaded cores running TCG
// guests: etcd's election timeout is 2 s there, a call that has not answered in 5 s fails.
//
//   a node renews its lease every LEASE_RENEW_MS; a renewal sent at t and answered keeps
//   the lease until at least t + LEASE_TTL_S (etcd restarts its TTL when it receives it);
//   a node whose last answered renewal was sent at t kills its HA guests at
//   t + SELF_FENCE_AFTER_MS (the agent, and the fence helper that outlives it), so they are
//   dead before the lease can lapse; a survivor takes a guest over only once the lease has
//   lapsed and RECOVERY_DELAY_MS more have passed.

/** The node's lease: its alive key lapses this long after the last renewal etcd received. */
export const LEASE_TTL_S = 10;
/** How often a node renews its lease. */
export const LEASE_RENEW_MS = 2000;
/** A renewal not answered in this time counts as failed. */
export const RENEW_TIMEOUT_MS = 3000;
/** From the sending of the last answered renewal to the node killing its HA guests. */
export const SELF_FENCE_AFTER_MS = 7000;
/** A guest starts only while the last answered renewal is younger than this (it must not start just before its fence). */
export const START_WITHIN_MS = 5000;
/** After a node's lease lapsed, the survivor waits this long before it takes the node's guests. */
export const RECOVERY_DELAY_MS = 3000;
/** A recovery that failed is tried again after this long, doubled each time up to RETRY_MAX_MS. */
export const RETRY_MS = 5000;
export const RETRY_MAX_MS = 60_000;
/** How often each node's HA agent looks at the cluster's state. */
export const HA_LOOP_MS = 1000;

/** CLOCK_MONOTONIC in milliseconds: one clock for every process of the machine (the fence helper's and the agent's). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
