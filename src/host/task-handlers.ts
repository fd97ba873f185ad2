// The task routes, the same on the backup server and on every node: list, read, follow
// live and abort tasks. A caller sees their own tasks; Sys.Audit sees all, Sys.Modify
// aborts any.
import type { ROUTES } from "../api/routes.ts";
import { denied } from "./access-handlers.ts";
import type { ApiHandlers } from "./api-host.ts";
import type { AuthStore } from "./auth.ts";
import { HttpError } from "./http.ts";
import type { TaskManager } from "./tasks.ts";

type TaskRoute = "listTasks" | "getTask" | "taskLog" | "taskEvents" | "abortTask";

export function taskHandlers(auth: AuthStore, tasks: TaskManager): ApiHandlers<typeof ROUTES, TaskRoute> {
  /** the task, if the caller may see it; one they may not see is as unknown as one that does not exist */
  const ownTask = (authId: string, id: string) => {
    const t = tasks.get(id);
    if (!t || (t.authId !== authId && !auth.can(authId, "/", "Sys.Audit"))) throw new HttpError(404, `no task ${id}.`);
    return t;
  };
  return {
    listTasks: ({ authId, query }) => {
      const all = auth.can(authId, "/", "Sys.Audit");
      const list = tasks.list({
        running: query.running === undefined ? undefined : query.running === "true",
        store: query.store,
        limit: (query.limit) ?? 100,
        authId: all ? undefined : authId,
      });
      return { json: list };
    },
    getTask: ({ authId, params }) => ({ json: ownTask(authId, params.id) }),
    taskLog: async ({ authId, params, query }) => {
      ownTask(authId, params.id);
      return { json: await tasks.readLog(params.id, { offset: query.offset, limit: query.limit }) };
    },
    taskEvents: async ({ authId, params, stream }) => {
      ownTask(authId, params.id);
      stream.respond({ ":status": 200, "content-type": "application/x-ndjson" });
      await new Promise<void>((resolve) => {
        const stop = tasks.follow(params.id, (ev) => {
          if (stream.destroyed) return;
          stream.write(JSON.stringify(ev) + "\n");
          if (ev.type === "end") {
            stream.end();
            resolve();
          }
        });
        stream.once("close", () => {
          stop();
          resolve();
        });
      });
      return { handled: true };
    },
    abortTask: ({ authId, params }) => {
      const t = ownTask(authId, params.id);
      if (t.authId !== authId && !auth.can(authId, "/", "Sys.Modify")) throw denied(authId, `abort task ${t.id}`);
      if (!tasks.abort(t.id)) throw new HttpError(409, `task ${t.id} is not running.`);
      return { json: { ok: true } };
    },
  };
}
