import type { TFunction } from "i18next";
import { type ReactNode, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate } from "../format.ts";
import type { TaskInfo } from "../types.ts";
import { type Column, DataTable, okBad } from "./DataTable.tsx";
import { TaskLog } from "./TaskLog.tsx";

/** A task's start, type, target and user, as the task tables show them; `started` may wrap the start (a link to its log). */
export function taskColumns(t: TFunction, lang: string, started: (task: TaskInfo, when: string) => ReactNode = (_, when) => when): Column<TaskInfo>[] {
  return [
    { head: t("started"), cell: (task) => started(task, formatDate(Math.floor(task.startTime / 1000), lang)) },
    { head: t("type"), cell: (task) => task.type },
    { head: t("target"), cell: (task) => task.target ?? "" },
    { head: t("user"), cell: (task) => task.authId },
  ];
}

export function TasksPage() {
  const { t, i18n } = useTranslation();
  const [tasks, setTasks] = useState<TaskInfo[]>([]);
  const [shown, setShown] = useState<string | undefined>();
  const [type, setType] = useState("");
  const [state, setState] = useState("");
  useEffect(() => {
    const load = (): void => void call("listTasks", { query: { limit: 50 } }).then(setTasks, () => undefined);
    load();
    const timer = setInterval(load, 3000);
    return () => clearInterval(timer);
  }, []);
  return (
    <section>
      <h1>{t("tasks")}</h1>
      <div className="actions">
        <label>
          {t("type")}{" "}
          <select value={type} onChange={(e) => setType(e.target.value)}>
            <option value="">{t("all")}</option>
            {[...new Set(tasks.map((x) => x.type))].sort().map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
        <label>
          {t("result")}{" "}
          <select value={state} onChange={(e) => setState(e.target.value)}>
            <option value="">{t("all")}</option>
            {(["running", "ok", "failed", "aborted"] as const).map((x) => (
              <option key={x} value={x}>
                {t(`taskState.${x}`)}
              </option>
            ))}
          </select>
        </label>
      </div>
      <DataTable
        caption={t("tasks")}
        rows={tasks.filter((x) => (!type || x.type === type) && (!state || x.state === state))}
        rowKey={(x) => x.id}
        columns={[
          ...taskColumns(t, i18n.language, (task, when) => (
            <button type="button" className="link" onClick={() => setShown(task.id)}>
              {when}
            </button>
          )),
          { head: t("state"), cell: (task) => t(`taskState.${task.state}`), className: (task) => (task.state === "running" ? undefined : okBad(task.state === "ok")) },
        ]}
      />
      {shown && <TaskLog key={shown} task={shown} />}
    </section>
  );
}
