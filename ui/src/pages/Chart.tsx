// A small time chart (uPlot): one or two series over time, drawn on a canvas, with a
// table of the same values beside it for screen readers.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
}

export function TimeChart(props: { title: string; times: number[]; series: Series[]; height?: number }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || props.times.length === 0) return;
    const plot = new uPlot(
      {
        width: Math.max(320, Math.min(900, el.clientWidth || 640)),
        height: props.height ?? 220,
        series: [{}, ...props.series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: true } }))],
        // One sample alone: an hour each side, not uPlot's years.
        scales: { x: { time: true, range: (_u, min, max) => (min === max ? [min - 3600, max + 3600] : [min, max]) } },
        axes: [{}, { size: 60 }],
        legend: { show: true },
      },
      [props.times, ...props.series.map((s) => s.values)],
      el,
    );
    return () => plot.destroy();
  }, [props.times, props.series, props.height]);
  return (
    <figure className="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} role="img" aria-label={props.title} />
    </figure>
  );
}
