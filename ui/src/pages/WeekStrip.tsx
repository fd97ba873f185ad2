// The plan's week: for each job, its low-load window shaded and its scheduled runs as ticks,
// Monday to Sunday of this week, from the plan as typed (the scheduler's own plan, calendar
// and window modules, never a copy).
import { useTranslation } from "react-i18next";
import { nextElapse } from "../../../src/schedule/calendar-event.ts";
import type { Plan } from "../../../src/schedule/plan.ts";
import type { Window } from "../../../src/schedule/window.ts";
import { formatWeekday } from "../format.ts";

const HOUR_PX = 4;
const LABEL_PX = 130;
const ROW_PX = 20;
const TOP_PX = 18;
const WEEK_MIN = 7 * 24 * 60;
const MAX_TICKS = 300;

/** This week's Monday, 00:00 local time. */
function weekStart(now: Date): Date {
  const d = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  return d;
}

/** The window's open spans in minutes from Monday 00:00, one or two per day. */
function windowSpans(w: Window): [number, number][] {
  const spans: [number, number][] = [];
  for (let day = 0; day < 7; day++) {
    const base = day * 24 * 60;
    if (w.start < w.end) spans.push([base + w.start, base + w.end]);
    else {
      spans.push([base, base + w.end]);
      spans.push([base + w.start, base + 24 * 60]);
    }
  }
  return spans.filter(([a, b]) => b > a);
}

/** The job's runs this week, in minutes from Monday 00:00. */
function runs(job: Plan["jobs"][number], start: Date): number[] {
  const out: number[] = [];
  let after = new Date(start.getTime() - 1);
  const end = start.getTime() + WEEK_MIN * 60_000;
  while (out.length < MAX_TICKS) {
    const next = nextElapse(job.event, after, "local");
    if (!next || next.getTime() >= end) break;
    out.push((next.getTime() - start.getTime()) / 60_000);
    after = next;
  }
  return out;
}

export function WeekStrip(props: { plan: Plan; now?: Date }) {
  const { t, i18n } = useTranslation();
  const start = weekStart(props.now ?? new Date());
  const width = LABEL_PX + 7 * 24 * HOUR_PX;
  const height = TOP_PX + props.plan.jobs.length * ROW_PX + 4;
  const x = (min: number): number => LABEL_PX + (min / 60) * HOUR_PX;
  const rows = props.plan.jobs.map((j) => ({ name: j.job.name, window: j.window, ticks: runs(j, start) }));
  return (
    <figure className="week-strip">
      <figcaption>{t("weekStrip")}</figcaption>
      <svg role="img" aria-label={t("weekStrip")} width={width} height={height} viewBox={`0 0 ${width} ${height}`}>
        {Array.from({ length: 7 }, (_, day) => (
          <g key={day}>
            <line x1={x(day * 1440)} x2={x(day * 1440)} y1={0} y2={height} stroke="#c7ced8" />
            <text x={x(day * 1440) + 3} y={12} fontSize={11} fill="#1d2433">
              {formatWeekday(day, i18n.language)}
            </text>
          </g>
        ))}
        {rows.map((r, i) => {
          const y = TOP_PX + i * ROW_PX;
          return (
            <g key={r.name} data-job={r.name}>
              <text x={0} y={y + 14} fontSize={12} fill="#1d2433">
                {r.name.length > 18 ? `${r.name.slice(0, 17)}…` : r.name}
              </text>
              <rect x={LABEL_PX} y={y + 2} width={7 * 24 * HOUR_PX} height={ROW_PX - 4} fill="#eef1f5" />
              {r.window &&
                windowSpans(r.window).map(([a, b]) => <rect key={a} className="window" x={x(a)} y={y + 2} width={x(b) - x(a)} height={ROW_PX - 4} fill="#b7dcc0" />)}
              {r.ticks.map((m) => (
                <line key={m} className="run" x1={x(m)} x2={x(m)} y1={y + 1} y2={y + ROW_PX - 1} stroke="#1f5fbf" strokeWidth={2} />
              ))}
            </g>
          );
        })}
      </svg>
      <ul className="week-legend">
        {rows.map((r) => (
          <li key={r.name}>
            {t("weekJobLine", { job: r.name, count: r.ticks.length })}
            {r.window ? ` · ${t("windowLine", { window: r.window.text })}` : ""}
          </li>
        ))}
      </ul>
    </figure>
  );
}
