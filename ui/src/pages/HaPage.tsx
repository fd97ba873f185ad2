// HA: the cluster's HA resources with their state and node (PVE's words), and every
// failover from backup with the snapshot it used, RPO and RTO split into its parts.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate, formatNumber } from "../format.ts";
import type { HaResource, Recovery } from "../types.ts";
import { TimeChart } from "./Chart.tsx";

export function HaPage() {
  const { t, i18n } = useTranslation();
  const [resources, setResources] = useState<HaResource[] | undefined>();
  const [recoveries, setRecoveries] = useState<Recovery[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    const load = (): void => {
      void call("haStatus").then(setResources, (e: Error) => setError(e.message));
      void call("listRecoveries", { query: { limit: 100 } }).then(setRecoveries, () => setRecoveries([]));
    };
    load();
    const timer = setInterval(load, 5000);
    return () => clearInterval(timer);
  }, []);
  const s = (v: number | null): string => (v === null ? "—" : `${formatNumber(v, i18n.language, 1)} s`);
  const done = recoveries.filter((r) => r.rtoSeconds !== null).sort((a, b) => a.failedAt - b.failedAt);
  return (
    <section>
      <h1>HA</h1>
      {error && <p className="bad">{error}</p>}
      <table>
        <caption>{t("haResources")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("resource")}</th>
            <th scope="col">{t("state")}</th>
            <th scope="col">{t("node")}</th>
            <th scope="col">{t("reason")}</th>
          </tr>
        </thead>
        <tbody>
          {(resources ?? []).map((r) => (
            <tr key={r.sid}>
              <td>{r.sid}</td>
              <td className={r.state === "started" ? "ok" : r.state === "error" || r.state === "fence" ? "bad" : ""}>{t(`haName.${r.state}`)}</td>
              <td>{r.node}</td>
              <td>{r.reason ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <table>
        <caption>{t("recoveries")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("started")}</th>
            <th scope="col">{t("resource")}</th>
            <th scope="col">{t("fromTo")}</th>
            <th scope="col">{t("snapshot")}</th>
            <th scope="col">{t("result")}</th>
            <th scope="col">RPO</th>
            <th scope="col">RTO</th>
            <th scope="col">{t("rtoParts")}</th>
          </tr>
        </thead>
        <tbody>
          {recoveries.map((r) => (
            <tr key={r.id}>
              <td>{formatDate(Math.floor(r.failedAt / 1000), i18n.language)}</td>
              <td>{r.sid}</td>
              <td>
                {r.from} → {r.node}
              </td>
              <td>{r.snapshot ?? "—"}</td>
              <td className={r.result === "recovered" ? "ok" : r.result === "failed" ? "bad" : ""}>{t(`recoveryName.${r.result}`)}</td>
              <td>{s(r.rpoSeconds)}</td>
              <td>{s(r.rtoSeconds)}</td>
              <td>{[r.detectSeconds, r.fenceSeconds, r.restoreSeconds, r.bootSeconds].map(s).join(" + ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {done.length > 0 && <TimeChart title={t("rtoOverTime")} times={done.map((r) => r.failedAt / 1000)} series={[{ label: "RTO (s)", values: done.map((r) => r.rtoSeconds), color: "#b42318" }]} />}
    </section>
  );
}
