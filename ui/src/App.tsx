// The cluster view, as PVE's: a tree on the left (datacenter → node → guests, and the
// node's tasks), the selected item on the right. Routed by the URL's hash, so a reload or
// a link keeps the page.
import { useCallback, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { type Login, call, currentLogin, logout, whenSessionEnds } from "./api.ts";
import { LANGUAGES, type Language, setLanguage } from "./i18n.ts";
import { Datacenter } from "./pages/Datacenter.tsx";
import { GuestPage } from "./pages/GuestPage.tsx";
import { LoginPage } from "./pages/LoginPage.tsx";
import { HaPage } from "./pages/HaPage.tsx";
import { PlanPage } from "./pages/PlanPage.tsx";
import { StoragePage } from "./pages/StoragePage.tsx";
import { TasksPage } from "./pages/TasksPage.tsx";
import type { GuestStatus, Storage } from "./types.ts";

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = (): void => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

export function LanguageSwitch() {
  const { t, i18n } = useTranslation();
  return (
    <label className="lang">
      {t("language")}{" "}
      <select value={i18n.language} onChange={(e) => setLanguage(e.target.value as Language)}>
        {LANGUAGES.map((l) => (
          <option key={l} value={l}>
            {t(`languageName.${l}`)}
          </option>
        ))}
      </select>
    </label>
  );
}

export function App() {
  const { t } = useTranslation();
  const [who, setWho] = useState<Login | undefined>(currentLogin());
  const [ended, setEnded] = useState(false);
  const [node, setNode] = useState<string>("");
  const [guests, setGuests] = useState<GuestStatus[]>([]);
  const [storages, setStorages] = useState<Storage[]>([]);
  const [rootPrivs, setRootPrivs] = useState<string[]>([]);
  const [clustered, setClustered] = useState(false);
  const hash = useHash();
  whenSessionEnds(() => {
    setWho(undefined);
    setEnded(true);
  });

  const refresh = useCallback(async () => {
    const [n, g, s] = await Promise.all([call("nodeStatus").catch(() => undefined), call("listGuests"), call("listStorages").catch(() => [])]);
    if (n) setNode(n.name);
    setGuests(g);
    setStorages(s);
  }, []);
  useEffect(() => {
    if (!who) return;
    void refresh().catch(() => undefined);
    void call("permissions").then((p) => setRootPrivs(p.paths["/"] ?? []), () => setRootPrivs([]));
    void call("clusterStatus").then((c) => setClustered(c.cluster !== null), () => setClustered(false));
    const timer = setInterval(() => void refresh().catch(() => undefined), 5000);
    return () => clearInterval(timer);
  }, [who, refresh]);

  if (!who) {
    return (
      <LoginPage
        ended={ended}
        onLogin={(l) => {
          setEnded(false);
          setWho(l);
        }}
      />
    );
  }
  const guestId = /^#\/guest\/(\d+)$/.exec(hash)?.[1];
  const storage = /^#\/storage\/([A-Za-z0-9._-]+)$/.exec(hash)?.[1];
  return (
    <div className="app">
      <header>
        <span className="brand">gorde</span>
        <span className="user">
          {t("loggedInAs", { user: who.username })}
        </span>
        <LanguageSwitch />
        <button
          type="button"
          onClick={() => {
            void logout().then(() => setWho(undefined));
          }}
        >
          {t("logout")}
        </button>
      </header>
      <nav aria-label={t("tree")}>
        <ul className="tree">
          <li>
            <a href="#/" aria-current={hash === "" || hash === "#/" ? "page" : undefined}>
              {t("datacenter")}
            </a>
            <ul>
              <li>
                <span className="node">
                  {t("node")} {node}
                </span>
                <ul>
                  {guests.map((g) => (
                    <li key={g.id}>
                      <a href={`#/guest/${g.id}`} aria-current={guestId === String(g.id) ? "page" : undefined}>
                        <span className={`state state-${g.state}`} aria-hidden="true" /> {g.id} ({g.name})
                      </a>
                    </li>
                  ))}
                  <li>
                    <a href="#/tasks" aria-current={hash === "#/tasks" ? "page" : undefined}>
                      {t("tasks")}
                    </a>
                  </li>
                  {clustered && (
                    <li>
                      <a href="#/ha" aria-current={hash === "#/ha" ? "page" : undefined}>
                        HA
                      </a>
                    </li>
                  )}
                  {rootPrivs.includes("Sys.Audit") && (
                    <li>
                      <a href="#/plan" aria-current={hash === "#/plan" ? "page" : undefined}>
                        {t("plan")}
                      </a>
                    </li>
                  )}
                </ul>
              </li>
              {storages.map((s) => (
                <li key={s.storage}>
                  <a href={`#/storage/${s.storage}`} aria-current={storage === s.storage ? "page" : undefined}>
                    {t("storage")} {s.storage}
                  </a>
                </li>
              ))}
            </ul>
          </li>
        </ul>
      </nav>
      <main>
        {storage ? (
          <StoragePage key={storage} storage={storage} onRestored={() => void refresh()} />
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
      </main>
    </div>
  );
}
