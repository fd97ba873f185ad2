// English and Basque: every string of the interface is a key of both catalogues (a test
// fails on one missing in either); the language chosen is remembered in this browser.
import i18next from "i18next";
import { initReactI18next } from "react-i18next";
import en from "./locales/en.json";
import eu from "./locales/eu.json";

export const LANGUAGES = ["en", "eu"] as const;
export type Language = (typeof LANGUAGES)[number];
const KEY = "gorde.lang";

function stored(): Language {
  const l = localStorage.getItem(KEY);
  return l === "eu" || l === "en" ? l : navigator.language.startsWith("eu") ? "eu" : "en";
}

void i18next.use(initReactI18next).init({
  resources: { en: { translation: en }, eu: { translation: eu } },
  lng: stored(),
  fallbackLng: false,
  interpolation: { escapeValue: false },
  returnNull: false,
});
document.documentElement.lang = i18next.language;

export function setLanguage(l: Language): void {
  localStorage.setItem(KEY, l);
  document.documentElement.lang = l;
  void i18next.changeLanguage(l);
}

export default i18next;
