// The cluster view, as PVE's: a tree on the left (datacenter → node → guests, and the
// node's tasks), the selected item on the right.
import { useCallback, useEffect, useMemo, useState } from "react";
import { useTranslation } from "react-i18next";
import { type Login, call } from "./api.ts";
import { Datacenter } from "./pages/Datacenter.tsx";
import { GuestPage } from "./pages/GuestPage.tsx";
import { HaPage } from "./pages/HaPage.tsx";
import { PlanPage } from "./pages/PlanPage.tsx";
import { StoragePage, nodeStorage } from "./pages/StoragePage.tsx";
import { TasksPage } from "./pages/TasksPage.tsx";
import { Shell, TreeLink, useHash } from "./Shell.tsx";
import type { GuestStatus, Storage } from "./types.ts";

export function NodeApp(props: { who: Login; onLogout: () => void }) {
  const { t } = useTranslation();
  const [node, setNode] = useState<string>("");
  const [guests, setGuests] = useState<GuestStatus[]>([]);
  const [storages, setStorages] = useState<Storage[]>([]);
  const [rootPrivs, setRootPrivs] = useState<string[]>([]);
  const [clustered, setClustered] = useState(false);
  const hash = useHash();

  const refresh = useCallback(async () => {
    const [n, g, s] = await Promise.all([call("nodeStatus").catch(() => undefined), call("listGuests"), call("listStorages").catch(() => [])]);
    if (n) setNode(n.name);
    setGuests(g);
    setStorages(s);
  }, []);
  useEffect(() => {
    void refresh().catch(() => undefined);
    void call("permissions").then((p) => setRootPrivs(p.paths["/"] ?? []), () => setRootPrivs([]));
    void call("clusterStatus").then((c) => setClustered(c.cluster !== null), () => setClustered(false));
    const timer = setInterval(() => void refresh().catch(() => undefined), 5000);
    return () => clearInterval(timer);
  }, [refresh]);

  const guestId = /^#\/guest\/(\d+)$/.exec(hash)?.[1];
  const storage = /^#\/storage\/([A-Za-z0-9._-]+)$/.exec(hash)?.[1];
  // one source per storage: the page reloads when it changes
  const storageSource = useMemo(() => (storage ? nodeStorage(storage) : undefined), [storage]);
  return (
    <Shell
      who={props.who}
      onLogout={props.onLogout}
      product={t("clusterView")}
      tree={
        <ul className="tree">
          <li>
            <TreeLink to="#/">
              {t("datacenter")}
            </TreeLink>
            <ul>
              <li>
                <span className="node">
                  {t("node")} {node}
                </span>
                <ul>
                  {guests.map((g) => (
                    <li key={g.id}>
                      <TreeLink to={`#/guest/${g.id}`}>
                        <span className={`state state-${g.state}`} aria-hidden="true" /> {g.id} ({g.name})
                      </TreeLink>
                    </li>
                  ))}
                  <li>
                    <TreeLink to="#/tasks">
                      {t("tasks")}
                    </TreeLink>
                  </li>
                  {clustered && (
                    <li>
                      <TreeLink to="#/ha">
                        HA
                      </TreeLink>
                    </li>
                  )}
                  {rootPrivs.includes("Sys.Audit") && (
                    <li>
                      <TreeLink to="#/plan">
                        {t("plan")}
                      </TreeLink>
                    </li>
                  )}
                </ul>
              </li>
              {storages.map((s) => (
                <li key={s.storage}>
                  <TreeLink to={`#/storage/${s.storage}`}>
                    {t("storage")} {s.storage}
                  </TreeLink>
                </li>
              ))}
            </ul>
          </li>
        </ul>
      }
    >
        {storageSource ? (
          <StoragePage key={storage} source={storageSource} title={t("storage")} onRestored={() => void refresh()} />
        ) : guestId ? (
          <GuestPage key={guestId} id={Number(guestId)} onChanged={() => void refresh()} />
        ) : hash === "#/ha" ? (
          <HaPage />
        ) : hash === "#/plan" ? (
          <PlanPage mayEdit={rootPrivs.includes("Sys.Modify")} />
        ) : hash === "#/tasks" ? (
          <TasksPage />
        ) : (
          <Datacenter node={node} guests={guests} storages={storages} />
        )}
    </Shell>
  );
}
