// The cluster's plan in etcd (key /gorde/plan): one plan for every node of the cluster.
import type { SharedPlan } from "../jobs/plan-runner.ts";
import type { ClusterStore } from "./cluster-store.ts";

const KEY = "plan";

export function clusterPlan(store: ClusterStore, cluster: string): SharedPlan {
  return {
    cluster,
    read: () => store.get(KEY),
    write: (text) => store.put(KEY, text),
    create: (text) => store.swap({ [KEY]: null }, { [KEY]: text }),
  };
}
