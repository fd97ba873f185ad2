// Dates, durations and sizes in the interface's language. Intl does it where the browser
// has the language's data; Debian's Chromium ships without Basque's, so Basque is written
// here as CLDR writes it (2026(e)ko abe. 6(a) 22:15:36; 1,5 MiB).
const EU_WEEKDAYS = ["al.", "ar.", "az.", "og.", "or.", "lr.", "ig."];
const EU_MONTHS = ["urt.", "ots.", "mar.", "api.", "mai.", "eka.", "uzt.", "abu.", "ira.", "urr.", "aza.", "abe."];

function intlHas(lang: string): boolean {
  return Intl.DateTimeFormat.supportedLocalesOf([lang]).length > 0;
}

function two(n: number): string {
  return String(n).padStart(2, "0");
}

export function formatDate(unixSeconds: number, lang: string): string {
  const d = new Date(unixSeconds * 1000);
  if (lang === "eu" && !intlHas("eu")) return `${d.getFullYear()}(e)ko ${EU_MONTHS[d.getMonth()]} ${d.getDate()}(a) ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "medium" }).format(d);
}

export function formatNumber(v: number, lang: string, digits: number): string {
  if (lang === "eu" && !intlHas("eu")) {
    const [int, frac] = v.toFixed(digits).replace(/\.?0+$/, "").split(".");
    return int!.replace(/\B(?=(\d{3})+(?!\d))/g, ".") + (frac ? `,${frac}` : "");
  }
  return new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(v);
}

export function formatBytes(n: number, lang: string): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${formatNumber(v, lang, u ? 1 : 0)} ${units[u]}`;
}

export function formatSeconds(s: number, lang: string): string {
  const [v, unit, eu] = s < 60 ? [s, "second", "s"] : s < 3600 ? [Math.floor(s / 60), "minute", "min"] : s < 86400 ? [Math.floor(s / 3600), "hour", "h"] : [Math.floor(s / 86400), "day", "egun"];
  if (lang === "eu" && !intlHas("eu")) return `${formatNumber(v as number, lang, 0)} ${eu}`;
  return new Intl.NumberFormat(lang, { style: "unit", unit: unit as string, unitDisplay: "short", maximumFractionDigits: 0 }).format(v as number);
}

/** A chart's time axis label: the time of day within two days, the day beyond. */
export function formatAxisTime(unixSeconds: number, spanSeconds: number, lang: string): string {
  const d = new Date(unixSeconds * 1000);
  const short = spanSeconds <= 2 * 86400;
  if (lang === "eu" && !intlHas("eu")) return short ? `${two(d.getHours())}:${two(d.getMinutes())}` : `${EU_MONTHS[d.getMonth()]} ${d.getDate()}`;
  return new Intl.DateTimeFormat(lang, short ? { timeStyle: "short" } : { month: "short", day: "numeric" }).format(d);
}

/** A weekday's short name, Monday first (0). */
export function formatWeekday(mondayFirst: number, lang: string): string {
  if (lang === "eu" && !intlHas("eu")) return EU_WEEKDAYS[mondayFirst]!;
  // 2024-01-01 was a Monday.
  return new Intl.DateTimeFormat(lang, { weekday: "short" }).format(new Date(2024, 0, 1 + mondayFirst));
}
