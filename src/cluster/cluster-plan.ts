// The cluster's plan in etcd (key /gorde/plan): one plan for every node of the cluster, and
// each node's job clocks (/gorde/clocks/<node>/<job>: since when the job is scheduled there,
// the elapse it last ran for), kept by the node and read back should its history be lost.
import { z } from "zod";
import type { SharedPlan } from "../jobs/plan-runner.ts";
import type { JobClock } from "../jobs/scheduler.ts";
import type { ClusterStore } from "./cluster-store.ts";

const KEY = "plan";

const Clock = z.strictObject({ since: z.number().int().nonnegative(), lastDue: z.number().int().nonnegative().optional() });

function parseClock(text: string): JobClock | undefined {
  try {
    return Clock.safeParse(JSON.parse(text)).data;
  } catch {
    return undefined; // not JSON
  }
}

export function clusterPlan(store: ClusterStore, cluster: string, node: string): SharedPlan {
  const clocks = `clocks/${node}/`;
  return {
    cluster,
    read: () => store.get(KEY),
    write: (text) => store.put(KEY, text),
    create: (text) => store.swap({ [KEY]: null }, { [KEY]: text }),
    async readClocks() {
      const out = new Map<string, JobClock>();
      // A value that is no clock (written by hand, or by a later version) is passed over.
      for (const [job, text] of await store.list(clocks)) {
        const c = parseClock(text);
        if (c) out.set(job, c);
      }
      return out;
    },
    writeClock: (job, clock) => store.put(clocks + job, JSON.stringify(clock)),
  };
}
