// A storage: the backup server's datastore as the node sees it, its snapshots by group
// with size, verification, the newest drill, notes (edited in place) and protection;
// forget asks first. Changes only for Datastore.AllocateSpace on /storage/<name>.
import { useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, call } from "../api.ts";
import { formatBytes, formatDate, formatNumber } from "../format.ts";
import type { Snapshot, StorageStatus, UsageSample } from "../types.ts";
import { ArchiveBrowser } from "./ArchiveBrowser.tsx";
import { TimeChart } from "./Chart.tsx";
import { usePruneSimulation } from "./PruneSimulator.tsx";
import { TaskLog } from "./TaskLog.tsx";

function groupOf(s: Snapshot): string {
  return s.snapshot.split("/").slice(0, 2).join("/");
}

function timeOf(s: Snapshot): number {
  return Math.floor(Date.parse(s.time) / 1000);
}

export function StoragePage(props: { storage: string; onRestored: () => void }) {
  const { t, i18n } = useTranslation();
  const [snaps, setSnaps] = useState<Snapshot[] | undefined>();
  const [privs, setPrivs] = useState<string[]>([]);
  const [error, setError] = useState("");
  const [group, setGroup] = useState("");
  const [notes, setNotes] = useState<Record<string, string>>({});
  const [restoring, setRestoring] = useState<Snapshot | undefined>();
  const [restoreTask, setRestoreTask] = useState<string | undefined>();
  const [status, setStatus] = useState<StorageStatus | undefined>();
  const [browsing, setBrowsing] = useState<{ snapshot: string; archive: string } | undefined>();
  const [history, setHistory] = useState<UsageSample[]>([]);
  const path = `/storage/${props.storage}`;
  const load = useCallback(async () => {
    setSnaps(await call("storageSnapshots", { params: { storage: props.storage } }));
  }, [props.storage]);
  useEffect(() => {
    void load().catch((e: Error) => setError(e.message));
    void call("storageStatus", { params: { storage: props.storage } }).then(setStatus, () => setStatus(undefined));
    void call("storageHistory", { params: { storage: props.storage } }).then(setHistory, () => setHistory([]));
    void call("permissions", { query: { path } }).then((p) => setPrivs(p.paths[path] ?? []), () => setPrivs([]));
  }, [load, path]);
  const act = (what: () => Promise<unknown>): void => {
    setError("");
    what()
      .then(() => load())
      .catch((e: unknown) => setError(e instanceof ApiError ? e.message : String(e)));
  };
  const mayChange = privs.includes("Datastore.AllocateSpace");
  const inGroup = (snaps ?? []).filter((s) => group && groupOf(s) === group);
  const prune = usePruneSimulation(inGroup);
  if (!snaps) return <section>{error ? <p className="bad">{error}</p> : <progress aria-label={t("loading")} />}</section>;
  const groups = [...new Set(snaps.map(groupOf))].sort();
  const shown = snaps.filter((s) => !group || groupOf(s) === group).sort((a, b) => timeOf(b) - timeOf(a));
  return (
    <section>
      <h1>
        {t("storage")} {props.storage}
      </h1>
      {status && <StorageUsage status={status} />}
      {history.length > 0 && (
        <div className="charts">
          <TimeChart title={t("usedOverTime")} times={history.map((h) => h.time)} series={[{ label: "GiB", values: history.map((h) => h.used / 1024 ** 3), color: "#1f6feb" }]} height={160} />
          <TimeChart title={t("dedupOverTime")} times={history.map((h) => h.time)} series={[{ label: "×", values: history.map((h) => h.dedupFactor), color: "#1a7f37" }]} height={160} />
        </div>
      )}
      <label>
        {t("group")}{" "}
        <select value={group} onChange={(e) => setGroup(e.target.value)}>
          <option value="">{t("allGroups")}</option>
          {groups.map((g) => (
            <option key={g} value={g}>
              {g}
            </option>
          ))}
        </select>
      </label>
      {error && (
        <p className="bad" role="alert">
          {error}
        </p>
      )}
      <table>
        <caption>{t("snapshots")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("snapshot")}</th>
            <th scope="col">{t("size")}</th>
            <th scope="col">{t("verifyState")}</th>
            <th scope="col">{t("drill")}</th>
            <th scope="col">{t("notes")}</th>
            <th scope="col">{t("protected")}</th>
            {prune.actions && <th scope="col">{t("pruneWould")}</th>}
            <th scope="col">{t("actions")}</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((s) => {
            const edited = notes[s.snapshot];
            return (
              <tr key={s.snapshot}>
                <td>
                  {groupOf(s)} · {formatDate(timeOf(s), i18n.language)}
                </td>
                <td>{formatBytes(s.size, i18n.language)}</td>
                <td className={s.verify ? (s.verify.state === "ok" ? "ok" : "bad") : ""}>{s.verify ? t(`verifyName.${s.verify.state}`) : t("notVerified")}</td>
                <td className={s.drill ? (s.drill.result === "passed" ? "ok" : "bad") : ""}>{s.drill ? t(`drillName.${s.drill.result}`) : t("never")}</td>
                <td>
                  {mayChange ? (
                    <span className="notes">
                      <input aria-label={t("notesOf", { snapshot: s.snapshot })} value={edited ?? s.notes ?? ""} maxLength={4096} onChange={(e) => setNotes({ ...notes, [s.snapshot]: e.target.value })} />
                      {edited !== undefined && edited !== (s.notes ?? "") && (
                        <button
                          type="button"
                          onClick={() =>
                            act(async () => {
                              await call("setStorageNotes", { params: { storage: props.storage }, json: { snapshot: s.snapshot, notes: edited } });
                              setNotes(({ [s.snapshot]: _, ...rest }) => rest);
                            })
                          }
                        >
                          {t("save")}
                        </button>
                      )}
                    </span>
                  ) : (
                    (s.notes ?? "")
                  )}
                </td>
                <td>
                  <input
                    type="checkbox"
                    aria-label={t("protectedOf", { snapshot: s.snapshot })}
                    checked={s.protected}
                    disabled={!mayChange}
                    onChange={(e) => act(() => call("setStorageProtected", { params: { storage: props.storage }, json: { snapshot: s.snapshot, protected: e.target.checked } }))}
                  />
                </td>
                {prune.actions && <td className={prune.actions.get(s.snapshot) === "remove" ? "bad" : "ok"}>{t(`pruneAction.${prune.actions.get(s.snapshot) ?? "keep"}`)}</td>}
                <td className="row-actions">
                  <button type="button" onClick={() => setRestoring(s)}>
                    {t("restore")}
                  </button>
                  {s.archives
                    .filter((a) => a.kind === "tree")
                    .map((a) => (
                      <button key={a.name} type="button" aria-label={t("browseOf", { snapshot: s.snapshot, archive: a.name })} onClick={() => setBrowsing({ snapshot: s.snapshot, archive: a.name })}>
                        {t("browse")}
                      </button>
                    ))}
                  {mayChange && (
                    <button
                      type="button"
                      disabled={s.protected}
                      onClick={() => {
                        if (confirm(t("forgetConfirm", { snapshot: s.snapshot }))) act(() => call("forgetStorageSnapshot", { params: { storage: props.storage }, query: { snapshot: s.snapshot } }));
                      }}
                    >
                      {t("forget")}
                    </button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {browsing && <ArchiveBrowser key={`${browsing.snapshot}/${browsing.archive}`} storage={props.storage} snapshot={browsing.snapshot} archive={browsing.archive} onClose={() => setBrowsing(undefined)} />}
      {group ? prune.panel : <p>{t("pruneChooseGroup")}</p>}
      {restoring && (
        <RestoreForm
          snapshot={restoring}
          onStarted={(task) => {
            setRestoring(undefined);
            setRestoreTask(task);
          }}
          onCancel={() => setRestoring(undefined)}
        />
      )}
      {restoreTask && <TaskLog key={restoreTask} task={restoreTask} onDone={props.onRestored} />}
    </section>
  );
}

/** A storage's usage and dedup factor, as its server counts them. */
export function StorageUsage(props: { status: StorageStatus }) {
  const { t, i18n } = useTranslation();
  const s = props.status;
  return (
    <p className="usage">
      {t("usage", { used: formatBytes(s.used, i18n.language), total: formatBytes(s.total, i18n.language), available: formatBytes(s.available, i18n.language) })} ·{" "}
      {t("dedupLine", { factor: formatNumber(s.dedupFactor, i18n.language, 2), logical: formatBytes(s.logicalBytes, i18n.language), stored: formatBytes(s.chunkBytes, i18n.language) })} ·{" "}
      {t("snapshotCount", { count: s.snapshots })}
      {s.warning && <strong className="bad"> · {s.warning}</strong>}
    </p>
  );
}

/** Restores a snapshot as a guest of this node: a new id (the snapshot's own is refused while that guest exists), started or not. */
function RestoreForm(props: { snapshot: Snapshot; onStarted: (task: string) => void; onCancel: () => void }) {
  const { t } = useTranslation();
  const [id, setId] = useState("");
  const [start, setStart] = useState(true);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = (e: React.FormEvent): void => {
    e.preventDefault();
    if (!/^[1-9]\d{2,8}$/.test(id.trim())) {
      setError(t("restoreBadId"));
      return;
    }
    setBusy(true);
    setError("");
    call("restoreGuest", { json: { snapshot: props.snapshot.snapshot, id: Number(id.trim()), start } })
      .then((r) => props.onStarted(r.task))
      .catch((err: unknown) => setError(err instanceof ApiError ? err.message : String(err)))
      .finally(() => setBusy(false));
  };
  return (
    <form className="restore" onSubmit={submit} aria-label={t("restoreTitle", { snapshot: props.snapshot.snapshot })}>
      <h2>{t("restoreTitle", { snapshot: props.snapshot.snapshot })}</h2>
      <label>
        {t("newGuestId")}
        <input inputMode="numeric" value={id} aria-invalid={error === t("restoreBadId")} aria-describedby={error ? "restore-error" : undefined} onChange={(e) => setId(e.target.value)} />
      </label>
      <label>
        <input type="checkbox" checked={start} onChange={(e) => setStart(e.target.checked)} /> {t("startAfterRestore")}
      </label>
      {error && (
        <p id="restore-error" className="bad" role="alert">
          {error}
        </p>
      )}
      <button type="submit" disabled={busy}>
        {t("restore")}
      </button>{" "}
      <button type="button" onClick={props.onCancel}>
        {t("cancel")}
      </button>
    </form>
  );
}
