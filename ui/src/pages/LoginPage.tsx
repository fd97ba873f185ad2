import { type FormEvent, useState } from "react";
import { useTranslation } from "react-i18next";
import { type Login, login } from "../api.ts";
import { LanguageSwitch } from "../LanguageSwitch.tsx";

export function LoginPage(props: { ended: boolean; onLogin: (l: Login) => void }) {
  const { t } = useTranslation();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    // Checked here first: nothing is sent without both.
    if (!username.trim() || !password) {
      setError(t("loginMissing"));
      return;
    }
    setBusy(true);
    setError("");
    login(username.trim(), password)
      .then(props.onLogin)
      .catch(() => setError(t("loginFailed")))
      .finally(() => setBusy(false));
  };
  return (
    <main className="login">
      <h1>gorde</h1>
      <form onSubmit={submit} aria-describedby={error ? "login-error" : undefined}>
        {props.ended && <p role="status">{t("sessionEnded")}</p>}
        <label>
          {t("username")}
          <input name="username" autoComplete="username" aria-describedby="login-hint" value={username} onChange={(e) => setUsername(e.target.value)} />
        </label>
        {/* beside the field, not in its label: the label stays the field's name */}
        <small id="login-hint">{t("loginHint")}</small>
        <label>
          {t("password")}
          <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        {error && (
          <p id="login-error" className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {t("login")}
        </button>
        <LanguageSwitch />
      </form>
    </main>
  );
}
