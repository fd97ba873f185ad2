// A guest's restore drills: each with its snapshot, result, RPO and RTO and every check;
// "run a drill now" starts one (its task log followed) for a user with VM.Backup.
import { useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, call } from "../api.ts";
import { formatDate, formatNumber } from "../format.ts";
import type { Drill } from "../types.ts";
import { TimeChart } from "./Chart.tsx";
import { DataTable, okBad } from "./DataTable.tsx";
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
      <DataTable
        caption={t("drillHistory")}
        rows={drills}
        rowKey={(d) => d.id}
        columns={[
          { head: t("started"), cell: (d) => formatDate(Math.floor(d.start / 1000), i18n.language) },
          { head: t("snapshot"), cell: (d) => d.snapshot ?? "—" },
          { head: t("result"), cell: (d) => t(`drillName.${d.result}`), className: (d) => (d.result === "running" ? undefined : okBad(d.result === "passed")) },
          { head: "RPO", cell: (d) => seconds(d.rpoSeconds) },
          { head: "RTO", cell: (d) => seconds(d.rtoSeconds) },
          {
            head: t("checks"),
            cell: (d) =>
              d.checks.map((c) => (
                <span key={c.name} className={c.ok ? "ok check" : "bad check"} title={c.message}>
                  {c.name} {c.ok ? "✓" : "✗"}
                </span>
              )),
          },
        ]}
      />
    </section>
  );
}
