// A task's log, followed while it runs (the API's task log, read from where it was left).
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import type { TaskInfo } from "../types.ts";

export function TaskLog(props: { task: string; onDone?: (t: TaskInfo) => void }) {
  const { t } = useTranslation();
  const [lines, setLines] = useState<string[]>([]);
  const [info, setInfo] = useState<TaskInfo | undefined>();
  useEffect(() => {
    let offset = 0;
    let stop = false;
    const follow = async (): Promise<void> => {
      while (!stop) {
        const r = await call("taskLog", { params: { id: props.task }, query: { offset } });
        if (stop) return;
        if (r.lines.length) setLines((l) => [...l, ...r.lines]);
        offset = r.next;
        if (r.done) {
          const i = await call("getTask", { params: { id: props.task } });
          setInfo(i);
          props.onDone?.(i);
          return;
        }
        await new Promise((res) => setTimeout(res, 500));
      }
    };
    void follow().catch(() => undefined);
    return () => {
      stop = true;
    };
  }, [props.task]);
  return (
    <section aria-label={t("taskLog")} className="task-log">
      <h2>
        {t("task")} {props.task}: <span className={info ? (info.state === "ok" ? "ok" : "bad") : ""}>{t(`taskState.${info?.state ?? "running"}`)}</span>
      </h2>
      {!info && <progress aria-label={t("taskRunning")} />}
      {info?.error && <p className="bad">{info.error}</p>}
      <pre>{lines.join("\n")}</pre>
    </section>
  );
}
