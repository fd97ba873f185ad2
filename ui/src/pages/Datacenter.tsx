// The dashboard: every guest with its state and its last backup, at a glance.
import { useTranslation } from "react-i18next";
import { formatDate } from "../format.ts";
import type { GuestStatus } from "../types.ts";

export function Datacenter(props: { node: string; guests: GuestStatus[] }) {
  const { t, i18n } = useTranslation();
  const failed = props.guests.filter((g) => g.lastBackup && !g.lastBackup.ok);
  return (
    <section>
      <h1>{t("datacenter")}</h1>
      <p>
        {t("node")} {props.node}: {t("guestCount", { count: props.guests.length })}
        {failed.length > 0 && <strong className="bad"> · {t("failedBackups", { count: failed.length })}</strong>}
      </p>
      <table>
        <caption>{t("guests")}</caption>
        <thead>
          <tr>
            <th scope="col">{t("id")}</th>
            <th scope="col">{t("name")}</th>
            <th scope="col">{t("kind")}</th>
            <th scope="col">{t("state")}</th>
            <th scope="col">{t("lastBackup")}</th>
          </tr>
        </thead>
        <tbody>
          {props.guests.map((g) => (
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
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
