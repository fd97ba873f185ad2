// A task's log and progress, followed live (the host's event stream: the log from the
// start, progress as the task reports it, its end) until it ends.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call, taskEvents } from "../api.ts";
import { formatNumber } from "../format.ts";
import type { TaskInfo } from "../types.ts";

/** What a task reported last: `done` of `total` (bytes or chunks), on `item` (an archive) when it names one. */
interface Progress {
  done: number;
  total: number;
  item?: string;
}

function asProgress(p: Record<string, unknown>): Progress | undefined {
  const { done, total, item } = p;
  if (typeof done !== "number" || typeof total !== "number" || total <= 0) return undefined;
  return { done: Math.min(done, total), total, item: typeof item === "string" ? item : undefined };
}

export function TaskLog(props: { task: string; onDone?: (t: TaskInfo) => void }) {
  const { t, i18n } = useTranslation();
  const [lines, setLines] = useState<string[]>([]);
  const [info, setInfo] = useState<TaskInfo | undefined>();
  const [progress, setProgress] = useState<Progress | undefined>();
  useEffect(() => {
    const stop = new AbortController();
    const ended = (i: TaskInfo): void => {
      setInfo(i);
      props.onDone?.(i);
    };
    const follow = async (): Promise<void> => {
      for await (const ev of taskEvents(props.task, stop.signal)) {
        if (ev.type === "log") setLines((l) => [...l, ev.line]);
        else if (ev.type === "progress") setProgress(asProgress(ev.progress));
        else return ended(ev.task);
      }
      // The stream closed without the task's end (the host restarted): ask for it.
      const i = await call("getTask", { params: { id: props.task } });
      if (i.state !== "running") ended(i);
    };
    void follow().catch(() => undefined);
    return () => stop.abort();
  }, [props.task]);
  const percent = progress ? (100 * progress.done) / progress.total : undefined;
  return (
    <section aria-label={t("taskLog")} className="task-log">
      <h2>
        {t("task")} {props.task}: <span className={info ? (info.state === "ok" ? "ok" : "bad") : ""}>{t(`taskState.${info?.state ?? "running"}`)}</span>
      </h2>
      {!info &&
        (progress && percent !== undefined ? (
          <p>
            <progress aria-label={t("taskProgress")} max={progress.total} value={progress.done} />{" "}
            <span>{t("progressLine", { item: progress.item ?? "", percent: formatNumber(percent, i18n.language, 0) })}</span>
          </p>
        ) : (
          <progress aria-label={t("taskRunning")} />
        ))}
      {info?.error && <p className="bad">{info.error}</p>}
      <pre>{lines.join("\n")}</pre>
    </section>
  );
}
