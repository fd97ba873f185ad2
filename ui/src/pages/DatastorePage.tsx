// The backup server's datastores in its own view: a dashboard of all of them, and each one's
// content (the storage page over the server's routes) with the work PBS runs from there —
// prune a group with the simulator's options, verify a snapshot or all, garbage
// collection, the maintenance mode. Buttons show for the privileges on /datastore/<name>;
// the API decides.
import { useEffect, useMemo, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, callServer } from "../api.ts";
import { formatDate } from "../format.ts";
import type { DatastoreEntry, MaintenanceMode, StorageStatus, TaskInfo } from "../types.ts";
import { DataTable } from "./DataTable.tsx";
import { StoragePage, StorageUsage, serverDatastore } from "./StoragePage.tsx";
import { TaskLog } from "./TaskLog.tsx";

const MODES: readonly MaintenanceMode[] = ["none", "read-only", "offline"];

export function ServerDashboard(props: { stores: DatastoreEntry[] }) {
  const { t, i18n } = useTranslation();
  const [usage, setUsage] = useState<Record<string, StorageStatus>>({});
  const [failures, setFailures] = useState<TaskInfo[]>([]);
  const names = props.stores.map((s) => s.name).join(",");
  useEffect(() => {
    for (const name of names ? names.split(",") : []) {
      void callServer("datastoreStatus", { params: { store: name } }).then((st) => setUsage((u) => ({ ...u, [name]: st })), () => undefined);
    }
    void callServer("listTasks", { query: { limit: 50 } }).then((ts) => setFailures(ts.filter((x) => x.state === "failed").slice(0, 5)), () => setFailures([]));
  }, [names]);
  return (
    <section>
      <h1>{t("backupServer")}</h1>
      <DataTable
        caption={t("datastores")}
        rows={props.stores}
        rowKey={(s) => s.name}
        columns={[
          { head: t("datastore"), cell: (s) => <a href={`#/datastore/${s.name}`}>{s.name}</a> },
          { head: t("maintenance"), cell: (s) => t(`maintenanceName.${s.maintenance}`) },
          { head: t("usageTitle"), cell: (s) => (usage[s.name] ? <StorageUsage status={usage[s.name]!} /> : "…") },
        ]}
      />
      <h2>{t("recentFailures")}</h2>
      {failures.length === 0 ? (
        <p>{t("noFailures")}</p>
      ) : (
        <ul>
          {failures.map((f) => (
            <li key={f.id}>
              {formatDate(Math.floor(f.startTime / 1000), i18n.language)} {f.type}: <span className="bad">{f.error}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export function DatastorePage(props: { store: string }) {
  const { t } = useTranslation();
  const source = useMemo(() => serverDatastore(props.store), [props.store]);
  const [task, setTask] = useState<string | undefined>();
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const [mode, setMode] = useState<MaintenanceMode | undefined>();
  const [refresh, setRefresh] = useState(0);
  const params = { store: props.store };
  useEffect(() => {
    void callServer("datastoreStatus", { params: { store: props.store } }).then((s) => setMode(s.maintenance), () => undefined);
  }, [props.store]);
  const run = (what: () => Promise<{ task: string } | string>): void => {
    setError("");
    setMessage("");
    what().then(
      (r) => (typeof r === "string" ? setMessage(r) : setTask(r.task)),
      (e: unknown) => setError(e instanceof ApiError ? e.message : String(e)),
    );
  };
  return (
    <>
      <StoragePage
        source={source}
        title={t("datastore")}
        refresh={refresh}
        rowTools={(s, privs) =>
          (privs.includes("Datastore.Verify") || privs.includes("Datastore.Backup")) && (
            <button type="button" aria-label={t("verifyOf", { snapshot: s.snapshot })} onClick={() => run(() => callServer("verify", { params, json: { snapshot: s.snapshot } }))}>
              {t("verify")}
            </button>
          )
        }
        tools={({ group, keep, privs, reload }) => (
          <div className="actions">
            {(privs.includes("Datastore.Modify") || privs.includes("Datastore.Prune")) && (
              <button
                type="button"
                disabled={!group || !keep}
                onClick={() => {
                  if (!group || !keep || !confirm(t("pruneConfirm", { group }))) return;
                  run(async () => {
                    const r = await callServer("prune", { params, json: { group, keep } });
                    reload();
                    return t("pruneDone", { group, removed: r.filter((x) => x.action === "remove").length });
                  });
                }}
              >
                {t("pruneNow")}
              </button>
            )}
            {privs.includes("Datastore.Verify") && (
              <button type="button" onClick={() => run(() => callServer("verify", { params, json: {} }))}>
                {t("verifyAll")}
              </button>
            )}
            {privs.includes("Datastore.Modify") && (
              <>
                <button type="button" onClick={() => run(() => callServer("gc", { params, json: {} }))}>
                  {t("gcNow")}
                </button>
                <label>
                  {t("maintenance")}{" "}
                  <select
                    value={mode ?? "none"}
                    onChange={(e) => {
                      const next = e.target.value as MaintenanceMode;
                      run(async () => {
                        await callServer("setMaintenance", { params, json: { mode: next } });
                        setMode(next);
                        return t("maintenanceSet", { mode: t(`maintenanceName.${next}`) });
                      });
                    }}
                  >
                    {MODES.map((m) => (
                      <option key={m} value={m}>
                        {t(`maintenanceName.${m}`)}
                      </option>
                    ))}
                  </select>
                </label>
              </>
            )}
          </div>
        )}
      />
      <section aria-live="polite">
        {message && <p role="status">{message}</p>}
        {error && (
          <p className="bad" role="alert">
            {error}
          </p>
        )}
        {task && <TaskLog key={task} task={task} onDone={() => setRefresh((n) => n + 1)} />}
      </section>
    </>
  );
}
