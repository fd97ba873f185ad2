// The plan: its jobs with their last run and result, its text edited and applied — checked
// as it is typed with the parser `gorde plan apply` and the hosts use (a plan it refuses is
// named with its line and field beside the text, and not sent; the host checks again what
// only it knows) — its week drawn (windows and runs), and a calendar event's next 10 runs
// as it is typed (the scheduler's own calendar module, never a copy).
import { useEffect, useMemo, useState } from "react";
import { useTranslation } from "react-i18next";
import { nextElapse, parseCalendarEvent } from "../../../src/schedule/calendar-event.ts";
import { type Plan, parsePlan } from "../../../src/schedule/plan.ts";
import { ApiError, call } from "../api.ts";
import { formatDate } from "../format.ts";
import type { JobRun } from "../types.ts";
import { TimeChart } from "./Chart.tsx";
import { DataTable, okBad } from "./DataTable.tsx";
import { WeekStrip } from "./WeekStrip.tsx";

/** The plan as typed, or why the parser refuses it. */
function check(text: string | undefined): { plan?: Plan; problem?: string } {
  if (!text?.trim()) return {};
  try {
    return { plan: parsePlan(text) };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

function nextRuns(text: string, n: number): Date[] | string {
  try {
    const ev = parseCalendarEvent(text);
    const out: Date[] = [];
    let after = new Date();
    for (let i = 0; i < n; i++) {
      const d = nextElapse(ev, after, "local");
      if (!d) break;
      out.push(d);
      after = d;
    }
    return out;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Backup durations and bytes per run, from the history of the plan's runs. */
function BackupRunCharts(props: { runs: JobRun[] }) {
  const { t } = useTranslation();
  const done = props.runs.filter((r) => r.kind === "backup" && r.end !== null && r.result === "ok").sort((a, b) => a.start - b.start);
  if (done.length === 0) return null;
  const times = done.map((r) => r.start / 1000);
  return (
    <>
      <TimeChart title={t("backupDurations")} times={times} series={[{ label: "s", values: done.map((r) => (r.end! - r.start) / 1000), color: "#1f6feb" }]} height={160} />
      <TimeChart title={t("backupBytes")} times={times} series={[{ label: "MiB", values: done.map((r) => (r.bytes ?? 0) / 1048576), color: "#1a7f37" }]} height={160} />
    </>
  );
}

export function PlanPage(props: { mayEdit: boolean }) {
  const { t, i18n } = useTranslation();
  const [text, setText] = useState<string | undefined>();
  const [saved, setSaved] = useState<string | null>(null);
  const [jobs, setJobs] = useState<string[]>([]);
  const [runs, setRuns] = useState<JobRun[]>([]);
  const [error, setError] = useState("");
  const [applied, setApplied] = useState(false);
  const [event, setEvent] = useState("mon..fri 21:00");
  useEffect(() => {
    void call("getPlan").then(
      (p) => {
        setSaved(p.text);
        setText(p.text ?? "");
        setJobs(p.jobs);
      },
      (e: Error) => setError(e.message),
    );
    void call("listRuns", { query: { limit: 200 } }).then(setRuns, () => setRuns([]));
  }, []);
  const preview = nextRuns(event, 10);
  const lastRun = (job: string): JobRun | undefined => runs.find((r) => r.job === job);
  const checked = useMemo(() => check(text), [text]);
  const savedPlan = useMemo(() => check(saved ?? undefined).plan, [saved]);
  // Typed and refused here: said beside the text, nothing sent.
  const problem = text !== (saved ?? "") ? checked.problem : undefined;
  const shownError = problem ?? error;
  const apply = (): void => {
    setError("");
    setApplied(false);
    call("applyPlan", { json: { text: text ?? "" } }).then(
      (p) => {
        setSaved(p.text);
        setJobs(p.jobs);
        setApplied(true);
      },
      (e: unknown) => setError(e instanceof ApiError ? e.message : String(e)),
    );
  };
  return (
    <section>
      <h1>{t("plan")}</h1>
      <DataTable
        caption={t("jobs")}
        rows={jobs}
        rowKey={(j) => j}
        columns={[
          { head: t("job"), cell: (j) => j },
          {
            head: t("lastRun"),
            cell: (j) => {
              const last = lastRun(j);
              return last ? formatDate(Math.floor(last.start / 1000), i18n.language) : t("never");
            },
          },
          {
            head: t("result"),
            cell: (j) => {
              const last = lastRun(j);
              return last ? t(`runName.${last.result}`) : "—";
            },
            className: (j) => {
              const last = lastRun(j);
              return last && (last.result === "ok" || last.result === "failed") ? okBad(last.result === "ok") : undefined;
            },
          },
        ]}
      />
      <BackupRunCharts runs={runs} />
      {text !== undefined && (
        <div className="plan-edit">
          <label>
            {t("planText")}
            <textarea rows={14} cols={80} value={text} readOnly={!props.mayEdit} aria-invalid={shownError !== ""} aria-describedby={shownError ? "plan-error" : undefined} onChange={(e) => {
                setText(e.target.value);
                setError("");
              }}
              spellCheck={false}
            />
          </label>
          {shownError && (
            <p id="plan-error" className="bad" role="alert">
              {shownError}
            </p>
          )}
          {applied && <p role="status" className="ok">{t("planApplied")}</p>}
          {props.mayEdit && (
            <button type="button" disabled={text === (saved ?? "") || problem !== undefined} onClick={apply}>
              {t("apply")}
            </button>
          )}
        </div>
      )}
      {(checked.plan ?? savedPlan) && <WeekStrip plan={(checked.plan ?? savedPlan)!} />}
      <fieldset className="calendar">
        <legend>{t("calendarPreview")}</legend>
        <label>
          {t("calendarEvent")}
          <input value={event} onChange={(e) => setEvent(e.target.value)} aria-invalid={typeof preview === "string"} aria-describedby="calendar-out" />
        </label>
        <div id="calendar-out" role="status">
          {typeof preview === "string" ? (
            <p className="bad">{preview}</p>
          ) : (
            <ol>
              {preview.map((d) => (
                <li key={d.getTime()}>{formatDate(Math.floor(d.getTime() / 1000), i18n.language)}</li>
              ))}
            </ol>
          )}
        </div>
      </fieldset>
    </section>
  );
}
