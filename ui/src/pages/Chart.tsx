// A small time chart (uPlot): one or two series over time, drawn on a canvas, with a
// table of the same values beside it for screen readers.
import { useEffect, useRef } from "react";
import { useTranslation } from "react-i18next";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatAxisTime, formatDate } from "../format.ts";

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
}

export function TimeChart(props: { title: string; times: number[]; series: Series[]; height?: number }) {
  const { t, i18n } = useTranslation();
  const lang = i18n.language;
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || props.times.length === 0) return;
    const plot = new uPlot(
      {
        width: Math.max(320, Math.min(900, el.clientWidth || 640)),
        height: props.height ?? 220,
        // Times in the interface's language, not uPlot's English.
        series: [{ label: t("time"), value: (_u, v) => (v == null ? "--" : formatDate(v, lang)) }, ...props.series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: true } }))],
        // One sample alone: an hour each side (uPlot would widen it to a day, then round its axis out to years).
        scales: { x: { time: true, range: (_u, min, max) => (props.times.length === 1 ? [props.times[0]! - 3600, props.times[0]! + 3600] : [min, max]) } },
        axes: [{ values: (u, splits) => splits.map((v) => formatAxisTime(v, (u.scales.x!.max ?? 0) - (u.scales.x!.min ?? 0), lang)) }, { size: 60 }],
        legend: { show: true },
      },
      [props.times, ...props.series.map((s) => s.values)],
      el,
    );
    return () => plot.destroy();
  }, [props.times, props.series, props.height, lang, t]);
  return (
    <figure className="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} role="img" aria-label={props.title} />
    </figure>
  );
}
