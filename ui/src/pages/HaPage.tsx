// HA: the cluster's HA resources with their state and node (PVE's words), and every
// failover from backup with the snapshot it used, RPO and RTO split into its parts.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { call } from "../api.ts";
import { formatDate, formatNumber } from "../format.ts";
import type { HaResource, Recovery } from "../types.ts";
import { TimeChart } from "./Chart.tsx";
import { DataTable, okBad } from "./DataTable.tsx";

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
      <DataTable
        caption={t("haResources")}
        rows={resources ?? []}
        rowKey={(r) => r.sid}
        columns={[
          { head: t("resource"), cell: (r) => r.sid },
          { head: t("state"), cell: (r) => t(`haName.${r.state}`), className: (r) => (r.state === "started" ? "ok" : r.state === "error" || r.state === "fence" ? "bad" : undefined) },
          { head: t("node"), cell: (r) => r.node },
          { head: t("reason"), cell: (r) => r.reason ?? "" },
        ]}
      />
      <DataTable
        caption={t("recoveries")}
        rows={recoveries}
        rowKey={(r) => r.id}
        columns={[
          { head: t("started"), cell: (r) => formatDate(Math.floor(r.failedAt / 1000), i18n.language) },
          { head: t("resource"), cell: (r) => r.sid },
          { head: t("fromTo"), cell: (r) => `${r.from} → ${r.node}` },
          { head: t("snapshot"), cell: (r) => r.snapshot ?? "—" },
          { head: t("result"), cell: (r) => t(`recoveryName.${r.result}`), className: (r) => (r.result === "running" ? undefined : okBad(r.result === "recovered")) },
          { head: "RPO", cell: (r) => s(r.rpoSeconds) },
          { head: "RTO", cell: (r) => s(r.rtoSeconds) },
          { head: t("rtoParts"), cell: (r) => [r.detectSeconds, r.fenceSeconds, r.restoreSeconds, r.bootSeconds].map(s).join(" + ") },
        ]}
      />
      {done.length > 0 && <TimeChart title={t("rtoOverTime")} times={done.map((r) => r.failedAt / 1000)} series={[{ label: "RTO (s)", values: done.map((r) => r.rtoSeconds), color: "#b42318" }]} />}
    </section>
  );
}
