// What both views share: the hash route, the login that guards them, the language switch,
// and the frame (header with the user and logout, the tree on the left, the page).
import { type ReactNode, useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { type Login, currentLogin, logout, whenSessionEnds } from "./api.ts";
import { LanguageSwitch } from "./LanguageSwitch.tsx";
import { LoginPage } from "./pages/LoginPage.tsx";

/** The page's route: the URL's hash, so a reload or a link keeps the page. */
export function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = (): void => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

/** A link of the tree, marked as the current page when the URL's hash is its own. */
export function TreeLink(props: { to: string; children: ReactNode }) {
  const hash = useHash();
  const current = props.to === "#/" ? hash === "" || hash === "#/" : hash === props.to;
  return (
    <a href={props.to} aria-current={current ? "page" : undefined}>
      {props.children}
    </a>
  );
}

/** The view once logged in, the login page before (and again when the session ends). */
export function LoggedIn(props: { children: (who: Login, logOut: () => void) => ReactNode }) {
  const [who, setWho] = useState<Login | undefined>(currentLogin());
  const [ended, setEnded] = useState(false);
  whenSessionEnds(() => {
    setWho(undefined);
    setEnded(true);
  });
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
  return props.children(who, () => void logout().then(() => setWho(undefined)));
}

/** The frame of a view: header, the tree, the page. */
export function Shell(props: { who: Login; onLogout: () => void; product: string; tree: ReactNode; children: ReactNode }) {
  const { t } = useTranslation();
  return (
    <div className="app">
      <header>
        <span className="brand">
          gorde <span className="product">{props.product}</span>
        </span>
        <span className="user">{t("loggedInAs", { user: props.who.username })}</span>
        <LanguageSwitch />
        <button type="button" onClick={props.onLogout}>
          {t("logout")}
        </button>
      </header>
      <nav aria-label={t("tree")}>{props.tree}</nav>
      <main>{props.children}</main>
    </div>
  );
}
