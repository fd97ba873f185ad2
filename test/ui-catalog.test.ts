// The web interface's two languages: the same keys in both catalogues, and every key the
// interface's code asks for present in each (a plural through its _one and _other forms,
// a key built at run time through its prefix).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import en from "../ui/src/locales/en.json" with { type: "json" };
import eu from "../ui/src/locales/eu.json" with { type: "json" };

const UI_SRC = new URL("../ui/src/", import.meta.url).pathname;

function flatten(o: unknown, prefix = ""): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
    if (typeof v === "string") out.set(prefix + k, v);
    else for (const [kk, vv] of flatten(v, `${prefix}${k}.`)) out.set(kk, vv);
  }
  return out;
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : /\.tsx?$/.test(e.name) ? [path.join(dir, e.name)] : []));
}

void describe("the web interface's catalogues", () => {
  const keys = { en: flatten(en), eu: flatten(eu) };

  void it("have the same keys, each with a text", () => {
    assert.deepEqual([...keys.eu.keys()].sort(), [...keys.en.keys()].sort());
    for (const [lang, m] of Object.entries(keys)) for (const [k, v] of m) assert.ok(v.trim(), `${lang}: ${k} is empty`);
  });

  void it("hold every key the interface asks for", () => {
    const asked = new Set<string>();
    const prefixes = new Set<string>();
    for (const file of sources(UI_SRC)) {
      const text = fs.readFileSync(file, "utf8");
      for (const m of text.matchAll(/\bt\("([^"]+)"(, *\{[^}]*count)?/g)) asked.add(m[2] ? `${m[1]}_one` : m[1]!).add(m[2] ? `${m[1]}_other` : m[1]!);
      for (const m of text.matchAll(/\bt\(`([a-zA-Z.]+)\.\$\{/g)) prefixes.add(`${m[1]}.`);
    }
    assert.ok(asked.size > 20, `the interface's keys were found (${asked.size})`);
    for (const [lang, m] of Object.entries(keys)) {
      for (const k of asked) assert.ok(m.has(k), `${lang} lacks ${k}`);
      for (const p of prefixes) assert.ok([...m.keys()].some((k) => k.startsWith(p)), `${lang} lacks ${p}*`);
    }
  });
});
