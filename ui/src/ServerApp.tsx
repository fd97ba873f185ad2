// The backup server's own view, as PBS serves it: its datastores with their usage, content
// and the work that keeps them (prune, verify, garbage collection run from here; the
// server's plan of prune, GC, verify and sync jobs edited here), and its tasks.
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { type Login, callServer } from "./api.ts";
import { DatastorePage, ServerDashboard } from "./pages/DatastorePage.tsx";
import { PlanPage } from "./pages/PlanPage.tsx";
import { TasksPage } from "./pages/TasksPage.tsx";
import { Shell, TreeLink, useHash } from "./Shell.tsx";
import type { DatastoreEntry } from "./types.ts";

export function ServerApp(props: { who: Login; onLogout: () => void }) {
  const { t } = useTranslation();
  const [stores, setStores] = useState<DatastoreEntry[]>([]);
  const [rootPrivs, setRootPrivs] = useState<string[]>([]);
  const hash = useHash();
  useEffect(() => {
    const load = (): void => void callServer("listDatastores").then(setStores, () => undefined);
    load();
    void callServer("permissions").then((p) => setRootPrivs(p.paths["/"] ?? []), () => setRootPrivs([]));
    const timer = setInterval(load, 10_000);
    return () => clearInterval(timer);
  }, []);
  const store = /^#\/datastore\/([A-Za-z0-9._-]+)$/.exec(hash)?.[1];
  return (
    <Shell
      who={props.who}
      onLogout={props.onLogout}
      product={t("serverView")}
      tree={
        <ul className="tree">
          <li>
            <TreeLink to="#/">
              {t("backupServer")}
            </TreeLink>
            <ul>
              {stores.map((s) => (
                <li key={s.name}>
                  <TreeLink to={`#/datastore/${s.name}`}>
                    {t("datastore")} {s.name}
                  </TreeLink>
                </li>
              ))}
              {rootPrivs.includes("Sys.Audit") && (
                <li>
                  <TreeLink to="#/plan">
                    {t("plan")}
                  </TreeLink>
                </li>
              )}
              <li>
                <TreeLink to="#/tasks">
                  {t("tasks")}
                </TreeLink>
              </li>
            </ul>
          </li>
        </ul>
      }
    >
      {store ? (
        <DatastorePage key={store} store={store} />
      ) : hash === "#/plan" ? (
        <PlanPage mayEdit={rootPrivs.includes("Sys.Modify")} />
      ) : hash === "#/tasks" ? (
        <TasksPage />
      ) : (
        <ServerDashboard stores={stores} />
      )}
    </Shell>
  );
}
