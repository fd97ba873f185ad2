// A guest's restore drills: each with its snapshot, result, RPO and RTO and every check;
// "run a drill now" starts one (its task log followed) for a user with VM.Backup.
import { useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, call } from "../api.ts";
import { formatDate, formatNumber } from "../format.ts";
import type { Drill } from "../types.ts";
import { TimeChart } from "./Chart.tsx";
import { TaskLog } from "./TaskLog.tsx";

export function Drills(props: { guest: number; mayRun: boolean }) {
  const { t, i18n } = useTranslation();
  const [drills, setDrills] = useState<Drill[]>([]);
  const [task, setTask] = useState<string | undefined>();
  const [error, setError] = useState("");
  const load = useCallback(async () => setDrills(await call("listDrills", { query: { guest: props.guest, limit: 20 } })), [props.guest]);
  useEffect(() => {
    void load().catch(() => undefined);
  }, [load]);
  const seconds = (s: number | null): string => (s === null ? "—" : `${formatNumber(s, i18n.language, 1)} s`);
  return (
    <section aria-label={t("drills")}>
      <h2>{t("drills")}</h2>
      {props.mayRun && (
        <button
          type="button"
          onClick={() => {
            setError("");
            call("startDrill", { json: { guest: props.guest } }).then(
              (r) => setTask(r.task),
              (e: unknown) => setError(e instanceof ApiError ? e.message : String(e)),
            );
          }}
        >
          {t("runDrill")}
        </button>
      )}
      {error && (
        <p className="bad" role="alert">
          {error}
        </p>
      )}
      {task && <TaskLog key={task} task={task} onDone={() => void load()} />}
      {drills.some((d) => d.rtoSeconds !== null) && (
        <TimeChart
          title={t("rtoOverTime")}
          times={[...drills].reverse().map((d) => d.start / 1000)}
          series={[{ label: "RTO (s)", values: [...drills].reverse().map((d) => d.rtoSeconds), color: "#1f6feb" }]}
        />
      )}
      <table>
        <caption>{t("drillHistory")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("started")}</th>
            <th scope="col">{t("snapshot")}</th>
            <th scope="col">{t("result")}</th>
            <th scope="col">RPO</th>
            <th scope="col">RTO</th>
            <th scope="col">{t("checks")}</th>
          </tr>
        </thead>
        <tbody>
          {drills.map((d) => (
            <tr key={d.id}>
              <td>{formatDate(Math.floor(d.start / 1000), i18n.language)}</td>
              <td>{d.snapshot ?? "—"}</td>
              <td className={d.result === "passed" ? "ok" : d.result === "running" ? "" : "bad"}>{t(`drillName.${d.result}`)}</td>
              <td>{seconds(d.rpoSeconds)}</td>
              <td>{seconds(d.rtoSeconds)}</td>
              <td>
                {d.checks.map((c) => (
                  <span key={c.name} className={c.ok ? "ok check" : "bad check"} title={c.message}>
                    {c.name} {c.ok ? "✓" : "✗"}
                  </span>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
