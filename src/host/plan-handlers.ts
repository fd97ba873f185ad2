// The plan routes, the same on the backup server and on every node: read the plan this
// host runs, apply a new one, read its job history.
import type { JobRun, PlanState, ROUTES } from "../api/routes.ts";
import { denied } from "./access-handlers.ts";
import type { ApiHandlers } from "./api-host.ts";
import type { AuthStore, Privilege } from "./auth.ts";

/** What the plan routes need of a host's plan (the jobs layer's PlanRunner). */
export interface HostPlan {
  current(): PlanState;
  apply(text: string): Promise<void>;
  readonly history: { list(opts: { job?: string; limit?: number }): JobRun[] };
}

type PlanRoute = "getPlan" | "applyPlan" | "listRuns";

export function planHandlers(auth: AuthStore, plan: HostPlan, log: (line: string) => void): ApiHandlers<typeof ROUTES, PlanRoute> {
  const needSys = (authId: string, priv: Privilege, what: string): void => {
    if (!auth.can(authId, "/", priv)) throw denied(authId, what);
  };
  return {
    getPlan: ({ authId }) => {
      needSys(authId, "Sys.Audit", "read the plan");
      return { json: plan.current() };
    },
    applyPlan: async ({ authId, body }) => {
      needSys(authId, "Sys.Modify", "apply a plan");
      await plan.apply(body.text);
      log(`${authId} applied a plan`);
      return { json: plan.current() };
    },
    listRuns: ({ authId, query }) => {
      needSys(authId, "Sys.Audit", "read the job history");
      return { json: plan.history.list({ job: query.job, limit: query.limit }) };
    },
  };
}
