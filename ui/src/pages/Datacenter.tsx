// The dashboard: quorum and nodes once there is a cluster, every guest with its state, its
// last backup, where it stands against the plan's RPO, its last restore drill with its RTO
// and its HA state, the storages' usage, running tasks and recent failures, at a glance.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate, formatSeconds } from "../format.ts";
import type { ClusterStatus, Drill, GuestStatus, HaResource, Storage, StorageStatus, TaskInfo } from "../types.ts";
import { DataTable, okBad } from "./DataTable.tsx";
import { StorageUsage } from "./StoragePage.tsx";
import { taskColumns } from "./TasksPage.tsx";

export function Datacenter(props: { node: string; guests: GuestStatus[]; storages: Storage[] }) {
  const { t, i18n } = useTranslation();
  const [cluster, setCluster] = useState<ClusterStatus | undefined>();
  const [ha, setHa] = useState<HaResource[]>([]);
  const [failures, setFailures] = useState<TaskInfo[]>([]);
  const [running, setRunning] = useState<TaskInfo[]>([]);
  const [drills, setDrills] = useState<Drill[]>([]);
  const [usage, setUsage] = useState<Record<string, StorageStatus>>({});
  const storageNames = props.storages.map((s) => s.storage).join(",");
  useEffect(() => {
    for (const name of storageNames ? storageNames.split(",") : []) {
      void call("storageStatus", { params: { storage: name } }).then((st) => setUsage((u) => ({ ...u, [name]: st })), () => undefined);
    }
  }, [storageNames]);
  useEffect(() => {
    const load = (): void => {
      void call("clusterStatus").then(setCluster, () => setCluster(undefined));
      void call("haStatus").then(setHa, () => setHa([]));
      void call("listTasks", { query: { limit: 50 } }).then(
        (ts) => {
          setFailures(ts.filter((x) => x.state === "failed").slice(0, 5));
          setRunning(ts.filter((x) => x.state === "running"));
        },
        () => setFailures([]),
      );
      void call("listDrills", { query: { limit: 200 } }).then(setDrills, () => setDrills([]));
    };
    load();
    const timer = setInterval(load, 5000);
    return () => clearInterval(timer);
  }, []);
  const failed = props.guests.filter((g) => g.lastBackup && !g.lastBackup.ok);
  const haOf = (id: number): HaResource | undefined => ha.find((r) => r.sid.endsWith(`:${id}`));
  const lastDrill = (id: number): Drill | undefined => drills.filter((d) => d.guest === id && d.result !== "running").sort((a, b) => b.start - a.start)[0];
  return (
    <section>
      <h1>{t("datacenter")}</h1>
      {cluster?.cluster ? (
        <p>
          {t("clusterLine", { cluster: cluster.cluster })}: <strong className={cluster.quorate ? "ok" : "bad"}>{cluster.quorate ? t("quorate") : t("notQuorate")}</strong> ·{" "}
          {cluster.nodes.map((n) => `${n.name} ${n.online ? t("online") : t("offline")}`).join(", ")} · {t("witness")} {cluster.witness.online ? t("online") : t("offline")}
        </p>
      ) : (
        <p>
          {t("node")} {props.node}: {t("guestCount", { count: props.guests.length })}
        </p>
      )}
      {failed.length > 0 && <p className="bad">{t("failedBackups", { count: failed.length })}</p>}
      {Object.entries(usage).map(([name, st]) => (
        <div key={name}>
          <h2>
            {t("storage")} {name}
          </h2>
          <StorageUsage status={st} />
        </div>
      ))}
      <DataTable
        caption={t("guests")}
        rows={props.guests}
        rowKey={(g) => g.id}
        columns={[
          { head: t("id"), cell: (g) => <a href={`#/guest/${g.id}`}>{g.id}</a> },
          { head: t("name"), cell: (g) => g.name },
          { head: t("kind"), cell: (g) => t(`kindName.${g.kind}`) },
          { head: t("state"), cell: (g) => t(`stateName.${g.state}`) },
          {
            head: t("lastBackup"),
            cell: (g) => (g.lastBackup ? `${formatDate(g.lastBackup.time, i18n.language)} · ${g.lastBackup.ok ? t("ok") : t("failed")}` : t("never")),
            className: (g) => okBad(g.lastBackup?.ok),
          },
          {
            head: "RPO",
            cell: (g) => (g.rpo ? `${t(`rpoName.${g.rpo.state}`)} (${formatSeconds(g.rpo.targetSeconds, i18n.language)})` : t("rpoNone")),
            className: (g) => okBad(g.rpo && g.rpo.state === "within"),
          },
          {
            head: t("drill"),
            cell: (g) => {
              const d = lastDrill(g.id);
              return d ? `${t(`drillName.${d.result}`)}${d.rtoSeconds !== null ? ` · RTO ${formatSeconds(Math.round(d.rtoSeconds), i18n.language)}` : ""}` : t("never");
            },
            className: (g) => okBad(lastDrill(g.id) && lastDrill(g.id)!.result === "passed"),
          },
          {
            head: "HA",
            cell: (g) => {
              const r = haOf(g.id);
              return r ? `${t(`haName.${r.state}`)} · ${r.node ?? "—"}` : "—";
            },
          },
        ]}
      />
      {running.length > 0 && <DataTable caption={t("runningTasks")} rows={running} rowKey={(x) => x.id} columns={taskColumns(t, i18n.language)} />}
      {failures.length > 0 && (
        <DataTable
          caption={t("recentFailures")}
          rows={failures}
          rowKey={(x) => x.id}
          columns={[...taskColumns(t, i18n.language).slice(0, 2), { head: t("error"), cell: (x) => x.error ?? "", className: () => "bad" }]}
        />
      )}
    </section>
  );
}
