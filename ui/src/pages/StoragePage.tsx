// A datastore's snapshots by group with size, verification, the newest drill, notes (edited
// in place) and protection; forget asks first. Two sources: the backup server's datastore
// as a node sees it (a PVE storage: changes for Datastore.AllocateSpace on
// /storage/<name>, restore as a guest, archives browsed), and the server's own view of it
// (PBS's: /datastore/<name>, with prune, verify and garbage collection run from here).
import { type ReactNode, useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError, call, callServer, download, downloadServer } from "../api.ts";
import { formatBytes, formatDate, formatNumber } from "../format.ts";
import type { PruneOptions } from "../../../src/datastore/prune.ts";
import type { ArchiveEntry, Snapshot, StorageStatus, UsageSample } from "../types.ts";
import { ArchiveBrowser } from "./ArchiveBrowser.tsx";
import { TimeChart } from "./Chart.tsx";
import { usePruneSimulation } from "./PruneSimulator.tsx";
import { TaskLog } from "./TaskLog.tsx";

/** Where the page reads and changes snapshots. */
export interface SnapshotSource {
  name: string;
  /** the ACL path whose privileges decide which buttons show (the API still decides) */
  aclPath: string;
  mayChange: (privs: readonly string[]) => boolean;
  /** whether archives may be browsed (the API decides per group and guest) */
  mayBrowse: (privs: readonly string[]) => boolean;
  snapshots: () => Promise<Snapshot[]>;
  status: () => Promise<StorageStatus>;
  history: () => Promise<UsageSample[]>;
  setNotes: (snapshot: string, notes: string) => Promise<unknown>;
  setProtected: (snapshot: string, on: boolean) => Promise<unknown>;
  forget: (snapshot: string) => Promise<unknown>;
  /** a file archive's entries under `path` */
  browse: (snapshot: string, archive: string, path: string | undefined) => Promise<ArchiveEntry[]>;
  /** one file of a file archive, handed to the browser as a download */
  download: (snapshot: string, archive: string, path: string, filename: string) => Promise<void>;
  /** a node restores snapshots as guests */
  onNode: boolean;
}

/** The backup server's datastore as the node's storage `storage`. */
export function nodeStorage(storage: string): SnapshotSource {
  const params = { storage };
  return {
    name: storage,
    aclPath: `/storage/${storage}`,
    mayChange: (p) => p.includes("Datastore.AllocateSpace"),
    mayBrowse: (p) => p.includes("Datastore.Audit"),
    snapshots: () => call("storageSnapshots", { params }),
    status: () => call("storageStatus", { params }),
    history: () => call("storageHistory", { params }),
    setNotes: (snapshot, notes) => call("setStorageNotes", { params, json: { snapshot, notes } }),
    setProtected: (snapshot, on) => call("setStorageProtected", { params, json: { snapshot, protected: on } }),
    forget: (snapshot) => call("forgetStorageSnapshot", { params, query: { snapshot } }),
    browse: (snapshot, archive, path) => call("browseArchive", { params, query: { snapshot, archive, path } }),
    download: (snapshot, archive, path, filename) => download("downloadFile", { params, query: { snapshot, archive, path } }, filename),
    onNode: true,
  };
}

/** The server's own datastore `store`. */
export function serverDatastore(store: string): SnapshotSource {
  const params = { store };
  return {
    name: store,
    aclPath: `/datastore/${store}`,
    mayChange: (p) => p.includes("Datastore.Modify"),
    mayBrowse: (p) => ["Datastore.Modify", "Datastore.Read", "Datastore.Backup"].some((x) => p.includes(x)),
    snapshots: () => callServer("listSnapshots", { params }),
    status: () => callServer("datastoreStatus", { params }),
    history: () => callServer("datastoreHistory", { params }),
    setNotes: (snapshot, notes) => callServer("setNotes", { params, json: { snapshot, notes } }),
    setProtected: (snapshot, on) => callServer("setProtected", { params, json: { snapshot, protected: on } }),
    forget: (snapshot) => callServer("forgetSnapshot", { params, query: { snapshot } }),
    browse: (snapshot, archive, path) => callServer("browseSnapshot", { params, query: { snapshot, archive, path } }),
    download: (snapshot, archive, path, filename) => downloadServer("downloadSnapshotFile", { params, query: { snapshot, archive, path } }, filename),
    onNode: false,
  };
}

function groupOf(s: Snapshot): string {
  return s.snapshot.split("/").slice(0, 2).join("/");
}

function timeOf(s: Snapshot): number {
  return Math.floor(Date.parse(s.time) / 1000);
}

export function StoragePage(props: {
  source: SnapshotSource;
  onRestored?: () => void;
  /** the heading's word: a node's storage, the server's datastore */
  title: string;
  /** more actions on the shown group (the server's prune, verify, GC), given the simulator's options */
  tools?: (ctx: { group: string; keep: PruneOptions | undefined; privs: readonly string[]; reload: () => void }) => ReactNode;
  /** more actions on one snapshot (the server's verify) */
  rowTools?: (s: Snapshot, privs: readonly string[]) => ReactNode;
  /** changed by the caller when its own work (a verify) changed the snapshots */
  refresh?: number;
}) {
  const { t, i18n } = useTranslation();
  const src = props.source;
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
  const path = src.aclPath;
  const load = useCallback(async () => {
    setSnaps(await src.snapshots());
    void src.status().then(setStatus, () => setStatus(undefined));
  }, [src]);
  useEffect(() => {
    void load().catch((e: Error) => setError(e.message));
    void src.history().then(setHistory, () => setHistory([]));
    void call("permissions", { query: { path } }).then((p) => setPrivs(p.paths[path] ?? []), () => setPrivs([]));
  }, [load, path, src, props.refresh]);
  const act = (what: () => Promise<unknown>): void => {
    setError("");
    what()
      .then(() => load())
      .catch((e: unknown) => setError(e instanceof ApiError ? e.message : String(e)));
  };
  const mayChange = src.mayChange(privs);
  const reload = (): void => void load().catch((e: Error) => setError(e.message));
  const inGroup = (snaps ?? []).filter((s) => group && groupOf(s) === group);
  const prune = usePruneSimulation(inGroup);
  if (!snaps) return <section>{error ? <p className="bad">{error}</p> : <progress aria-label={t("loading")} />}</section>;
  const groups = [...new Set(snaps.map(groupOf))].sort();
  const shown = snaps.filter((s) => !group || groupOf(s) === group).sort((a, b) => timeOf(b) - timeOf(a));
  return (
    <section>
      <h1>
        {props.title} {src.name}
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
                              await src.setNotes(s.snapshot, edited);
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
                    onChange={(e) => act(() => src.setProtected(s.snapshot, e.target.checked))}
                  />
                </td>
                {prune.actions && <td className={prune.actions.get(s.snapshot) === "remove" ? "bad" : "ok"}>{t(`pruneAction.${prune.actions.get(s.snapshot) ?? "keep"}`)}</td>}
                <td className="row-actions">
                  {src.onNode && (
                    <button type="button" onClick={() => setRestoring(s)}>
                      {t("restore")}
                    </button>
                  )}
                  {props.rowTools?.(s, privs)}
                  {s.archives
                    .filter((a) => a.kind === "tree" && src.mayBrowse(privs))
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
                        if (confirm(t("forgetConfirm", { snapshot: s.snapshot }))) act(() => src.forget(s.snapshot));
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
      {browsing && <ArchiveBrowser key={`${browsing.snapshot}/${browsing.archive}`} source={src} snapshot={browsing.snapshot} archive={browsing.archive} onClose={() => setBrowsing(undefined)} />}
      {group ? prune.panel : <p>{t("pruneChooseGroup")}</p>}
      {props.tools?.({ group, keep: prune.options, privs, reload })}
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
      {restoreTask && <TaskLog key={restoreTask} task={restoreTask} onDone={() => props.onRestored?.()} />}
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
