// docs/format.md is the contract for the on-disk format: its table of magic numbers and
// the format version it states must be exactly what src/format/magic.ts defines.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { FORMAT_VERSION, MAGIC, type MagicName } from "./magic.ts";

const DOC_URL = new URL("../../docs/format.md", import.meta.url);
const HEADER = ["name", "bytes (hex)", "ascii", "meaning"];

interface Row {
  name: string;
  hex: string;
  ascii: string;
  meaning: string;
  /** 1-based line number in the document, for messages */
  line: number;
}

/** The cells of a Markdown table row; [] when the line is not a table row. */
function cells(line: string): string[] {
  const t = line.trim();
  if (!t.startsWith("|")) return [];
  return t
    .replace(/^\|/, "")
    .replace(/(?<!\\)\|$/, "")
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
}

/** A cell's text without code-span backticks. */
function plain(cell: string): string {
  return cell.replace(/`/g, "").trim();
}

function readDoc(): string {
  return readFileSync(DOC_URL, "utf8");
}

/** The rows of the one table whose columns are name | bytes (hex) | ASCII | meaning. */
function magicTable(doc: string): Row[] {
  const lines = doc.split("\n");
  const starts = lines.flatMap((l, i) => {
    const c = cells(l).map((x) => x.toLowerCase());
    return c.length === HEADER.length && c.every((x, k) => x === HEADER[k]) ? [i] : [];
  });
  assert.equal(
    starts.length,
    1,
    `docs/format.md should have exactly one table with the columns name | bytes (hex) | ASCII | meaning; found ${starts.length}`,
  );
  const start = starts[0]!;
  assert.match(lines[start + 1] ?? "", /^\s*\|(\s*:?-+:?\s*\|)+\s*$/, `line ${start + 2}: the magic table needs a separator row`);
  const rows: Row[] = [];
  for (let i = start + 2; i < lines.length; i++) {
    const c = cells(lines[i]!);
    if (c.length === 0) break;
    assert.equal(c.length, HEADER.length, `line ${i + 1}: a row of the magic table needs ${HEADER.length} cells, it has ${c.length}`);
    rows.push({ name: plain(c[0]!), hex: plain(c[1]!), ascii: plain(c[2]!), meaning: c[3]!, line: i + 1 });
  }
  return rows;
}

function isMagicName(name: string): name is MagicName {
  return Object.hasOwn(MAGIC, name);
}

void test("the magic table of docs/format.md lists every entry of MAGIC, once", () => {
  const rows = magicTable(readDoc());
  const names = rows.map((r) => r.name);
  const duplicates = names.filter((n, i) => names.indexOf(n) !== i);
  assert.deepEqual(duplicates, [], "rows named more than once");
  const missing = Object.keys(MAGIC).filter((n) => !names.includes(n));
  assert.deepEqual(missing, [], "entries of MAGIC without a row in docs/format.md");
});

void test("the magic table of docs/format.md has no row that is not in MAGIC", () => {
  const extra = magicTable(readDoc()).filter((r) => !isMagicName(r.name));
  assert.deepEqual(
    extra.map((r) => `line ${r.line}: ${r.name}`),
    [],
    "rows that name no entry of MAGIC",
  );
});

void test("every row of the magic table has the bytes of its MAGIC entry", () => {
  for (const r of magicTable(readDoc())) {
    if (!isMagicName(r.name)) continue; // reported by the test above
    const bytes = MAGIC[r.name];
    assert.match(r.hex, /^[0-9a-f]{16}$/, `line ${r.line}: ${r.name}: bytes must be 16 lowercase hex digits without spaces`);
    assert.equal(r.hex, bytes.toString("hex"), `line ${r.line}: ${r.name}: bytes differ from src/format/magic.ts`);
    const letters = bytes.toString("latin1", 0, 6);
    assert.ok(r.ascii.startsWith(letters), `line ${r.line}: ${r.name}: the ASCII column should start with ${letters}`);
    assert.notEqual(r.meaning, "", `line ${r.line}: ${r.name}: the meaning is empty`);
  }
});

void test("docs/format.md states the FORMAT_VERSION of the code", () => {
  const stated = [...readDoc().matchAll(/FORMAT_VERSION\s*=\s*(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(stated.length > 0, 'docs/format.md should state the format version as "FORMAT_VERSION = N"');
  for (const v of stated) assert.equal(v, FORMAT_VERSION, "docs/format.md states another FORMAT_VERSION than src/format/magic.ts");
});
