// The language of the interface, switched at once and remembered (see i18n.ts).
import { useTranslation } from "react-i18next";
import { LANGUAGES, type Language, setLanguage } from "./i18n.ts";

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
