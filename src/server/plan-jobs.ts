// The server's share of the plan: its prune, GC, verify and sync jobs run here, as tasks
// like those asked for over the API.
import path from "node:path";
import { GordeError } from "../errors.ts";
import { pruneGroup } from "../datastore/group-ops.ts";
import { formatGroup } from "../format/names.ts";
import { PlanRunner } from "../jobs/plan-runner.ts";
import type { JobRunner } from "../jobs/scheduler.ts";
import { keepOptions } from "../schedule/plan.ts";
import type { StartedTask } from "../host/tasks.ts";
import type { LongTasks } from "./long-tasks.ts";
import type { ServerContext } from "./server-context.ts";

/** who the tasks of the plan's jobs run as */
const PLAN_AUTH_ID = "plan";

/** Runs one of the plan's jobs as a task and waits for it. */
function planJobRunner(server: ServerContext, long: LongTasks): JobRunner {
  const { stores, tasks, remotes } = server;
  const { startGc, startVerify, startSync } = long;
  return async (job, ctx) => {
    const storeName = "datastore" in job && job.datastore ? job.datastore : stores.size === 1 ? [...stores.keys()][0]! : undefined;
    const e = storeName === undefined ? undefined : stores.get(storeName);
    if (!e) throw new GordeError("usage", storeName ? `job ${job.name} names datastore ${storeName}, which this server does not have.` : `job ${job.name} must name its datastore: this server has several.`);
    const runTask = async <R>(t: StartedTask<R>): Promise<R> => {
      ctx.log(`task ${t.id}`);
      const abort = (): void => void tasks.abort(t.id);
      ctx.signal.addEventListener("abort", abort);
      const done = await tasks.wait(t.id).finally(() => ctx.signal.removeEventListener("abort", abort));
      if (done.state !== "ok") throw new GordeError("io", `task ${t.id} ${done.state}: ${done.error ?? "no reason given"}`);
      return t.result;
    };
    if (job.type === "gc") {
      const r = await runTask(startGc(PLAN_AUTH_ID, e, undefined));
      return { bytes: r.removedBytes, message: `removed ${r.removedChunks} chunks` };
    }
    if (job.type === "verify") {
      const r = await runTask(startVerify(PLAN_AUTH_ID, e, { ns: [], outdatedDays: job["outdated-after"] }));
      return { message: `${r.snapshots.length} snapshots verified` };
    }
    if (job.type === "prune") {
      const wanted = job.guests === "all" || job.guests === undefined ? undefined : new Set(job.guests.map(String));
      const keep = keepOptions(job.keep);
      let removed = 0;
      for (const g of await e.store.listGroups([])) {
        if (g.type === "host" || (wanted && !wanted.has(g.id)) || job.exclude?.includes(Number(g.id))) continue;
        const r = await pruneGroup(e.store, [], g, keep, false);
        const gone = r.plan.filter((d) => d.action === "remove").length;
        const inUse = r.plan.filter((d) => d.action === "in-use").length;
        removed += gone;
        ctx.log(`${formatGroup(g)}: ${gone} removed${inUse ? `, ${inUse} in use (left for the next prune)` : ""}${r.failed.length ? `, could not remove ${r.failed.join("; ")}` : ""}`);
      }
      return { message: `${removed} snapshots removed` };
    }
    if (job.type === "sync") {
      // The plan is applied by an administrator (Sys.Modify), who names the remote.
      const remote = remotes.get(job.remote);
      if (!remote) throw new GordeError("not-found", `job ${job.name} names remote ${job.remote}, which this server does not have: add it with gorde remote add.`);
      const r = await runTask(startSync(job.owner ?? PLAN_AUTH_ID, e, { remote, ns: [], groups: job.groups, last: job.last }));
      return { bytes: r.bytes, newBytes: r.bytes, message: `pulled ${r.snapshots} snapshots, ${r.chunks} chunks` };
    }
    throw new GordeError("unsupported", `a ${job.type} job does not run on the backup server.`);
  };
}

/** The plan as last applied in the state directory, with its job history. */
export function openPlan(server: ServerContext, long: LongTasks, stateDir: string): Promise<PlanRunner> {
  const planJobs = planJobRunner(server, long);
  return PlanRunner.open({
    planFile: path.join(stateDir, "plan.yaml"),
    historyFile: path.join(stateDir, "history.db"),
    host: "backup server",
    kinds: ["prune", "gc", "verify", "sync"],
    runner: () => planJobs,
    log: server.log,
  });
}
