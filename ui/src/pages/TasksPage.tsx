import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate } from "../format.ts";
import type { TaskInfo } from "../types.ts";
import { TaskLog } from "./TaskLog.tsx";

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
      <table>
        <caption>{t("tasks")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("started")}</th>
            <th scope="col">{t("type")}</th>
            <th scope="col">{t("target")}</th>
            <th scope="col">{t("user")}</th>
            <th scope="col">{t("state")}</th>
          </tr>
        </thead>
        <tbody>
          {tasks.filter((x) => (!type || x.type === type) && (!state || x.state === state)).map((task) => (
            <tr key={task.id}>
              <td>
                <button type="button" className="link" onClick={() => setShown(task.id)}>
                  {formatDate(Math.floor(task.startTime / 1000), i18n.language)}
                </button>
              </td>
              <td>{task.type}</td>
              <td>{task.target ?? ""}</td>
              <td>{task.authId}</td>
              <td className={task.state === "ok" ? "ok" : task.state === "running" ? "" : "bad"}>{t(`taskState.${task.state}`)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown && <TaskLog key={shown} task={shown} />}
    </section>
  );
}
