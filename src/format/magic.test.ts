// docs/format.md is the contract for the on-disk format: its table of magic numbers, the
// format version, the sizes, limits and layouts it states must be exactly what the code
// defines; a tuning value it names must exist where it says.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { DEFAULT_IMAGE_CHUNK_SIZE } from "../client/image-archive.ts";
import { ENTRIES_AVG_CHUNK, PAYLOAD_AVG_CHUNK } from "../client/tree-archive.ts";
import { DEFAULT_ZSTD_LEVEL } from "./blob.ts";
import { MAX_CDC_AVG_SIZE, MIN_CDC_AVG_SIZE, cdcParams, gearTable } from "./cdc-chunker.ts";
import { encodeFixedIndex } from "./fixed-index.ts";
import {
  BLOB_HEADER_SIZE,
  DATASTORE_FORMAT,
  DIGEST_SIZE,
  DYNAMIC_ENTRY_SIZE,
  ENCRYPTED_BLOB_HEADER_SIZE,
  FORMAT_VERSION,
  INDEX_HEADER_SIZE,
  MAGIC,
  MAX_CHUNK_SIZE,
  MAX_FIXED_CHUNK_SIZE,
  MIN_FIXED_CHUNK_SIZE,
  SHARD_HEX,
  type MagicName,
} from "./magic.ts";

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

void test("docs/format.md states the DATASTORE_FORMAT of the code", () => {
  const stated = [...readDoc().matchAll(/DATASTORE_FORMAT\s*=\s*(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(stated.length > 0, 'docs/format.md should state the marker\'s format as "DATASTORE_FORMAT = N"');
  for (const v of stated) assert.equal(v, DATASTORE_FORMAT, "docs/format.md states another DATASTORE_FORMAT than src/format/magic.ts");
});

void test("docs/format.md states the FORMAT_VERSION of the code", () => {
  const stated = [...readDoc().matchAll(/FORMAT_VERSION\s*=\s*(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(stated.length > 0, 'docs/format.md should state the format version as "FORMAT_VERSION = N"');
  for (const v of stated) assert.equal(v, FORMAT_VERSION, "docs/format.md states another FORMAT_VERSION than src/format/magic.ts");
});

/** The document as one line: sentences wrap, claims do not care where. */
function flatDoc(): string {
  return readDoc().replace(/\s*\n\s*/g, " ");
}

/** "16 MiB", "256 KiB", "12 bytes", "64-byte", "2", "0x8b45a14e" as a number. */
function amount(text: string): number {
  const m = /^(0x[0-9a-f]+|\d+)(?:[ -](KiB|MiB|bytes?))?$/.exec(text.trim());
  assert.ok(m, `"${text}" is not an amount this test reads`);
  const n = Number(m[1]);
  return m[2] === "KiB" ? n * 1024 : m[2] === "MiB" ? n * 1024 * 1024 : n;
}

const AMOUNT = String.raw`(0x[0-9a-f]+|\d+(?:[ -](?:KiB|MiB|bytes?))?)`;

/**
 * What docs/format.md states, as patterns over its text, and the values the code has. A
 * pattern that no longer matches fails too: the document changed its wording, and this
 * list must follow.
 */
const CLAIMS: { what: string; pattern: string; values: number[] }[] = [
  { what: "SHARD_HEX in the names table", pattern: String.raw`\(\`SHARD_HEX\` = ${AMOUNT}\)`, values: [SHARD_HEX] },
  { what: "SHARD_HEX in the chunk store", pattern: String.raw`\`SHARD_HEX = ${AMOUNT}\``, values: [SHARD_HEX] },
  { what: "the plain blob header", pattern: String.raw`The header is ${AMOUNT} \(\`BLOB_HEADER_SIZE\`\)`, values: [BLOB_HEADER_SIZE] },
  { what: "where a plain blob's data starts", pattern: String.raw`\| ${AMOUNT} \| n \| data \|`, values: [BLOB_HEADER_SIZE] },
  { what: "the encrypted blob header", pattern: String.raw`header is ${AMOUNT} \(\`ENCRYPTED_BLOB_HEADER_SIZE\`\)`, values: [ENCRYPTED_BLOB_HEADER_SIZE] },
  { what: "where a ciphertext starts", pattern: String.raw`\| ${AMOUNT} \| n \| ciphertext \|`, values: [ENCRYPTED_BLOB_HEADER_SIZE] },
  { what: "the default zstd level", pattern: String.raw`level ${AMOUNT} by default \(\`DEFAULT_ZSTD_LEVEL\``, values: [DEFAULT_ZSTD_LEVEL] },
  { what: "the largest chunk (blobs)", pattern: String.raw`above \`MAX_CHUNK_SIZE\` = ${AMOUNT} is refused`, values: [MAX_CHUNK_SIZE] },
  { what: "the largest chunk (chunk sizes)", pattern: String.raw`at most \`MAX_CHUNK_SIZE\` = ${AMOUNT} for any chunk; fixed-size chunks are at most ${AMOUNT};`, values: [MAX_CHUNK_SIZE, MAX_FIXED_CHUNK_SIZE] },
  { what: "the index header", pattern: String.raw`the same ${AMOUNT} header \(\`INDEX_HEADER_SIZE\`\)`, values: [INDEX_HEADER_SIZE] },
  { what: "the fixed index body", pattern: String.raw`\| ${AMOUNT} \| ${AMOUNT} × count \| one digest per chunk`, values: [INDEX_HEADER_SIZE, DIGEST_SIZE] },
  { what: "the dynamic index body", pattern: String.raw`\| ${AMOUNT} \| ${AMOUNT} × count \| entries, each`, values: [INDEX_HEADER_SIZE, DYNAMIC_ENTRY_SIZE] },
  {
    what: "fixed chunk sizes",
    pattern: String.raw`from ${AMOUNT} to ${AMOUNT} \(\`MIN_FIXED_CHUNK_SIZE\`, \`MAX_FIXED_CHUNK_SIZE\`\)\. Default: ${AMOUNT} \(\`DEFAULT_IMAGE_CHUNK_SIZE\``,
    values: [MIN_FIXED_CHUNK_SIZE, MAX_FIXED_CHUNK_SIZE, DEFAULT_IMAGE_CHUNK_SIZE],
  },
  { what: "FastCDC average sizes", pattern: String.raw`size \`avg\`, a power of two from ${AMOUNT} to ${AMOUNT}:`, values: [MIN_CDC_AVG_SIZE, MAX_CDC_AVG_SIZE] },
  {
    what: "the payload stream's chunks",
    pattern: String.raw`\| payload \(\`PAYLOAD_AVG_CHUNK\`\) \| ${AMOUNT} \| ${AMOUNT} \| ${AMOUNT} \|`,
    values: [PAYLOAD_AVG_CHUNK, cdcParams(PAYLOAD_AVG_CHUNK).minSize, cdcParams(PAYLOAD_AVG_CHUNK).maxSize],
  },
  {
    what: "the entry stream's chunks",
    pattern: String.raw`\| entries \(\`ENTRIES_AVG_CHUNK\`\) \| ${AMOUNT} \| ${AMOUNT} \| ${AMOUNT} \|`,
    values: [ENTRIES_AVG_CHUNK, cdcParams(ENTRIES_AVG_CHUNK).minSize, cdcParams(ENTRIES_AVG_CHUNK).maxSize],
  },
  {
    what: "the gear table",
    pattern: String.raw`\`GEAR\[0\] = ${AMOUNT}\`, \`GEAR\[1\] = ${AMOUNT}\`, \`GEAR\[2\] = ${AMOUNT}\`; last: \`GEAR\[255\] = ${AMOUNT}\``,
    values: [gearTable()[0]!, gearTable()[1]!, gearTable()[2]!, gearTable()[255]!],
  },
];

void test("the sizes, limits and parameters docs/format.md states are the code's", () => {
  const doc = flatDoc();
  for (const c of CLAIMS) {
    const found = [...doc.matchAll(new RegExp(c.pattern, "g"))];
    assert.ok(found.length > 0, `docs/format.md no longer states ${c.what} as this test expects (/${c.pattern}/)`);
    for (const m of found) assert.deepEqual(m.slice(1).map(amount), c.values, `docs/format.md: ${c.what}: "${m[0]}" differs from the code`);
  }
});

void test("the index header and the fixed index example of docs/format.md are what encodeFixedIndex writes", () => {
  const doc = readDoc();
  // | offset | size | field | type | content | rows of the index header table
  const table = doc.slice(doc.indexOf("### Index header"), doc.indexOf("### Fixed index"));
  const rows = [...table.matchAll(/^\| (\d+) \| (\d+) \| (magic|ctime|size|\(per kind\)|csum) \|/gm)].map((m) => [m[3], Number(m[1]), Number(m[2])] as const);
  const size = 1024 * 1024;
  const chunkSize = 256 * 1024;
  const digests = Buffer.concat([0, 1, 2, 3].map((i) => createHash("sha256").update(`block ${i} of a debian disk image`).digest()));
  const ctime = 0x6b060635;
  const idx = encodeFixedIndex({ ctime, size, chunkSize, digests });
  assert.deepEqual(rows.map((r) => r[0]).sort(), ["(per kind)", "csum", "ctime", "magic", "size"], "docs/format.md: the index header table");
  const field = (name: string): Buffer => {
    const [, offset, length] = rows.find((r) => r[0] === name)!;
    return idx.subarray(offset, offset + length);
  };
  assert.deepEqual(field("magic"), MAGIC.fixedIndex);
  assert.equal(field("ctime").readBigInt64LE(), BigInt(ctime));
  assert.equal(field("size").readBigUInt64LE(), BigInt(size));
  assert.equal(field("(per kind)").readBigUInt64LE(), BigInt(chunkSize));
  assert.deepEqual(field("csum"), createHash("sha256").update(digests).digest());
  // "a 1 MiB image in 256 KiB chunks gives a 192-byte index whose header starts"
  const example = /a 1 MiB image in 256 KiB chunks gives a (\d+)-byte index whose header starts\s+```\n([\s\S]*?)```/.exec(doc);
  assert.ok(example, "docs/format.md no longer has the fixed index example");
  assert.equal(Number(example[1]), idx.length);
  const lines = example[2]!.split("\n").filter((l) => l.trim() !== "");
  for (const line of lines.slice(0, 2)) {
    const m = /^([0-9a-f]{8}): ((?:[0-9a-f]{4} ){8})/.exec(line);
    assert.ok(m, `docs/format.md: the example line "${line}" is not a full hex dump line`);
    assert.equal(m[2]!.replace(/ /g, ""), idx.toString("hex", Number.parseInt(m[1]!, 16), Number.parseInt(m[1]!, 16) + 16), `docs/format.md: example line ${m[1]}`);
  }
});

const NOT_CONSTANTS = new Set(["O_EXCL", "O_CREAT", "O_NOFOLLOW", "EEXIST", "JSON", "YYYY", "MAGIC", "GEAR", "MASK_HARD", "MASK_EASY", "FORMAT_VERSION", "DATASTORE_FORMAT"]);

void test("every constant docs/format.md names is checked above or named with the file that defines it", () => {
  const doc = flatDoc();
  const checked = new Set(CLAIMS.flatMap((c) => [...c.pattern.matchAll(/`([A-Z][A-Z0-9_]+)/g)].map((m) => m[1]!)));
  const referenced = new Map<string, string>();
  // "`A` and `B` in `src/x/y.ts`", "`ChunkPool` in `src/…`": tuning values and code the
  // document points to rather than fixes. Each must be defined in that file.
  for (const m of doc.matchAll(/((?:`[A-Za-z_][A-Za-z0-9_]*`(?:,? and |, | or )?)+) in `(src\/[\w/.-]+\.ts)`/g)) {
    const file = m[2]!;
    const text = readFileSync(new URL(`../../${file}`, import.meta.url), "utf8");
    for (const [, name] of m[1]!.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)) {
      assert.ok(new RegExp(`\\b(?:const|let|function|class|interface|type)\\s+${name}\\b`).test(text), `docs/format.md names ${name} in ${file}, which does not define it`);
      referenced.set(name!, file);
    }
  }
  const named = new Set([...doc.matchAll(/`([A-Z][A-Z0-9_]{2,})(?:[`[ ])/g)].map((m) => m[1]!).filter((n) => !n.startsWith("GRDE")));
  const unchecked = [...named].filter((n) => !checked.has(n) && !referenced.has(n) && !NOT_CONSTANTS.has(n));
  assert.deepEqual(unchecked, [], "constants docs/format.md names without a check here or the file that defines them");
});
