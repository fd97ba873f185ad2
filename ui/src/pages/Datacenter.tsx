// The dashboard: quorum and nodes once there is a cluster, every guest with its state, its
// last backup, where it stands against the plan's RPO, its last restore drill with its RTO
// and its HA state, the storages' usage, running tasks and recent failures, at a glance.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate, formatSeconds } from "../format.ts";
import type { ClusterStatus, Drill, GuestStatus, HaResource, Storage, StorageStatus, TaskInfo } from "../types.ts";
import { StorageUsage } from "./StoragePage.tsx";

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
      <table>
        <caption>{t("guests")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("id")}</th>
            <th scope="col">{t("name")}</th>
            <th scope="col">{t("kind")}</th>
            <th scope="col">{t("state")}</th>
            <th scope="col">{t("lastBackup")}</th>
            <th scope="col">RPO</th>
            <th scope="col">{t("drill")}</th>
            <th scope="col">HA</th>
          </tr>
        </thead>
        <tbody>
          {props.guests.map((g) => {
            const r = haOf(g.id);
            const d = lastDrill(g.id);
            return (
              <tr key={g.id}>
                <td>
                  <a href={`#/guest/${g.id}`}>{g.id}</a>
                </td>
                <td>{g.name}</td>
                <td>{t(`kindName.${g.kind}`)}</td>
                <td>{t(`stateName.${g.state}`)}</td>
                <td>
                  {g.lastBackup ? (
                    <span className={g.lastBackup.ok ? "ok" : "bad"}>
                      {formatDate(g.lastBackup.time, i18n.language)} · {g.lastBackup.ok ? t("ok") : t("failed")}
                    </span>
                  ) : (
                    t("never")
                  )}
                </td>
                <td className={g.rpo ? (g.rpo.state === "within" ? "ok" : "bad") : ""}>
                  {g.rpo ? `${t(`rpoName.${g.rpo.state}`)} (${formatSeconds(g.rpo.targetSeconds, i18n.language)})` : t("rpoNone")}
                </td>
                <td className={d ? (d.result === "passed" ? "ok" : "bad") : ""}>
                  {d ? `${t(`drillName.${d.result}`)}${d.rtoSeconds !== null ? ` · RTO ${formatSeconds(Math.round(d.rtoSeconds), i18n.language)}` : ""}` : t("never")}
                </td>
                <td>{r ? `${t(`haName.${r.state}`)} · ${r.node ?? "—"}` : "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {running.length > 0 && (
        <table>
          <caption>{t("runningTasks")}</caption>
          <thead>
            <tr>
              <th scope="col">{t("started")}</th>
              <th scope="col">{t("type")}</th>
              <th scope="col">{t("target")}</th>
              <th scope="col">{t("user")}</th>
            </tr>
          </thead>
          <tbody>
            {running.map((x) => (
              <tr key={x.id}>
                <td>{formatDate(Math.floor(x.startTime / 1000), i18n.language)}</td>
                <td>{x.type}</td>
                <td>{x.target ?? ""}</td>
                <td>{x.authId}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {failures.length > 0 && (
        <table>
          <caption>{t("recentFailures")}</caption>
          <thead>
            <tr>
              <th scope="col">{t("started")}</th>
              <th scope="col">{t("type")}</th>
              <th scope="col">{t("error")}</th>
            </tr>
          </thead>
          <tbody>
            {failures.map((f) => (
              <tr key={f.id}>
                <td>{formatDate(Math.floor(f.startTime / 1000), i18n.language)}</td>
                <td>{f.type}</td>
                <td className="bad">{f.error ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
