// One guest: its status, start and stop, a backup now (vzdump's modes) with its task log
// followed, and its console (read again every 2 s while shown). Buttons show only for what the user may do on /vms/<id>.
import { useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, call, callText } from "../api.ts";
import { formatDate, formatSeconds } from "../format.ts";
import type { GuestStatus } from "../types.ts";
import { Drills } from "./Drills.tsx";
import { TaskLog } from "./TaskLog.tsx";

const MODES = ["snapshot", "suspend", "stop"] as const;

export function GuestPage(props: { id: number; onChanged: () => void }) {
  const { t, i18n } = useTranslation();
  const [status, setStatus] = useState<GuestStatus | undefined>();
  const [privs, setPrivs] = useState<string[]>([]);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [mode, setMode] = useState<(typeof MODES)[number]>("snapshot");
  const [task, setTask] = useState<string | undefined>();
  const [consoleText, setConsoleText] = useState<string | undefined>();
  const [consoleShown, setConsoleShown] = useState(false);
  // The console, read again every 2 s while shown: what the guest writes appears as it runs.
  useEffect(() => {
    if (!consoleShown) {
      setConsoleText(undefined);
      return;
    }
    const read = (): void => void callText("guestLog", { params: { id: props.id } }).then(setConsoleText, (e: Error) => setError(e.message));
    read();
    const timer = setInterval(read, 2000);
    return () => clearInterval(timer);
  }, [consoleShown, props.id]);
  const path = `/vms/${props.id}`;

  const load = useCallback(async () => {
    setStatus(await call("guestStatus", { params: { id: props.id } }));
  }, [props.id]);
  useEffect(() => {
    void load().catch((e: Error) => setError(e.message));
    void call("permissions", { query: { path } }).then((p) => setPrivs(p.paths[path] ?? []), () => setPrivs([]));
    const timer = setInterval(() => void load().catch(() => undefined), 5000);
    return () => clearInterval(timer);
  }, [load, path]);

  const act = (what: () => Promise<unknown>): void => {
    setBusy(true);
    setError("");
    what()
      .then(() => load())
      .then(props.onChanged)
      .catch((e: unknown) => setError(e instanceof ApiError ? e.message : String(e)))
      .finally(() => setBusy(false));
  };
  const may = (p: string): boolean => privs.includes(p);
  if (!status) return <section>{error ? <p className="bad">{error}</p> : <progress aria-label={t("loading")} />}</section>;
  const running = status.state !== "stopped";
  return (
    <section>
      <h1>
        {t(`kindName.${status.kind}`)} {status.id} ({status.name})
      </h1>
      <dl className="facts">
        <dt>{t("state")}</dt>
        <dd>{t(`stateName.${status.state}`)}</dd>
        <dt>{t("servicePort")}</dt>
        <dd>127.0.0.1:{status.httpPort}</dd>
        {status.uptimeSeconds !== undefined && (
          <>
            <dt>{t("uptime")}</dt>
            <dd>{formatSeconds(status.uptimeSeconds, i18n.language)}</dd>
          </>
        )}
        <dt>{t("lastBackup")}</dt>
        <dd>
          {status.lastBackup ? (
            <span className={status.lastBackup.ok ? "ok" : "bad"}>
              {status.lastBackup.snapshot || t("failed")} · {formatDate(status.lastBackup.time, i18n.language)}
              {status.lastBackup.error ? ` · ${status.lastBackup.error}` : ""}
            </span>
          ) : (
            t("never")
          )}
        </dd>
      </dl>
      <div className="actions">
        {may("VM.PowerMgmt") && !running && (
          <button type="button" disabled={busy} onClick={() => act(() => call("startGuest", { params: { id: props.id } }))}>
            {t("start")}
          </button>
        )}
        {may("VM.PowerMgmt") && running && (
          <button type="button" disabled={busy} onClick={() => act(() => call("stopGuest", { params: { id: props.id } }))}>
            {t("stop")}
          </button>
        )}
        {may("VM.Backup") && (
          <>
            <label>
              {t("mode")}{" "}
              <select value={mode} onChange={(e) => setMode(e.target.value as (typeof MODES)[number])}>
                {MODES.map((m) => (
                  <option key={m} value={m}>
                    {t(`modeName.${m}`)}
                  </option>
                ))}
              </select>
            </label>
            <button type="button" disabled={busy} onClick={() => act(async () => setTask((await call("backupGuest", { params: { id: props.id }, json: { mode } })).task))}>
              {t("backupNow")}
            </button>
          </>
        )}
        <button type="button" onClick={() => setConsoleShown(!consoleShown)} aria-pressed={consoleShown}>
          {t("showConsole")}
        </button>
      </div>
      {error && (
        <p className="bad" role="alert">
          {error}
        </p>
      )}
      {task && <TaskLog key={task} task={task} onDone={() => void load().then(props.onChanged)} />}
      <Drills guest={props.id} mayRun={may("VM.Backup")} />
      {consoleText !== undefined && (
        <section aria-label={t("console")}>
          <h2>{t("console")}</h2>
          <pre>{consoleText}</pre>
        </section>
      )}
    </section>
  );
}
