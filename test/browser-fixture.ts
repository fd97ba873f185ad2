// Debian's Chromium driven by playwright-core, for the tests of the web interface: where it
// is, whether the interface is built, a page logged in, axe-core's findings.
import assert from "node:assert/strict";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";
import { UI_DIST } from "../src/host/web-ui.ts";
import en from "../ui/src/locales/en.json" with { type: "json" };
import eu from "../ui/src/locales/eu.json" with { type: "json" };

export const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));

/** Why no browser test can run here, or undefined. */
export function browserMissing(): string | undefined {
  if (!CHROMIUM) return "Debian's chromium is not installed (scripts/setup.sh installs it as root)";
  if (!fs.existsSync(path.join(UI_DIST, "index.html"))) return "the web interface is not built (npm run build; scripts/setup.sh runs it)";
  return undefined;
}

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], headless: true });
}

/** A new page of `base` (English), not logged in. */
export async function openPage(browser: Browser, base: string): Promise<Page> {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: "en-US" });
  const page = await ctx.newPage();
  await page.goto(base);
  return page;
}

/** Logs in on the login page, and waits for the tree. */
export async function logIn(page: Page, user: string, password: string): Promise<void> {
  await page.getByLabel(en.username).fill(user);
  await page.getByLabel(en.password).fill(password);
  await page.getByRole("button", { name: en.login }).click();
  await page.getByRole("navigation", { name: en.tree }).getByRole("link").first().waitFor();
}

/** axe-core's serious and critical findings on the page as it is now: none. */
export async function assertAccessible(page: Page, what: string): Promise<void> {
  // Evaluated through the debugging protocol: the page's own policy allows no injected script.
  await page.evaluate(fs.readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8"));
  const found = await page.evaluate(async () => {
    const r = await (globalThis as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; nodes: unknown[] }[] }> } }).axe.run();
    return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.nodes.length})`);
  });
  assert.deepEqual(found, [], `${what}: accessibility violations`);
}

/** Every string of a catalogue, flattened. */
function strings(o: unknown): string[] {
  return typeof o === "string" ? [o] : Object.values(o as Record<string, unknown>).flatMap(strings);
}

/** The strings of the English catalogue that Basque says otherwise, found in `text` as words (Basque's "IDa" holds no English "ID"). */
export function englishIn(text: string): string[] {
  const englishOnly = strings(en).filter((s) => !strings(eu).includes(s) && !s.includes("{{"));
  return englishOnly.filter((s) => new RegExp(`(^|[^\\p{L}])${s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}($|[^\\p{L}])`, "u").test(text));
}
