import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { mulberry32, tempDir } from "../../test/helpers.ts";
import { GordeError, type ErrorCode } from "../errors.ts";
import { decodeBlob, encodeBlob } from "../format/blob.ts";
import {
  DEFAULT_SCRYPT,
  changePassphrase,
  createKeyFile,
  importKeyFile,
  keyInfo,
  loadKey,
  paperKey,
  parsePaperKey,
} from "./key-file.ts";

// Cheap KDF cost for tests; one test uses the real one.
const cheap = { scrypt: { n: 1024, r: 8, p: 1 } };

function isError(code: ErrorCode, re: RegExp) {
  return (e: unknown) => e instanceof GordeError && e.code === code && re.test(e.message);
}

void test("create, info and load: 0600 JSON, fingerprint in clear, key works", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "backup.key");
  const { fingerprint } = await createKeyFile(file, "correct horse", cheap);
  assert.match(fingerprint, /^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ["backup.key"]);
  const json = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  assert.deepEqual(Object.keys(json), ["format", "created", "fingerprint", "kdf", "cipher", "iv", "tag", "wrappedKey"]);
  assert.equal(json.fingerprint, fingerprint);
  const info = await keyInfo(file);
  assert.equal(info.fingerprint, fingerprint);
  assert.match(info.created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(info.kdf, "scrypt (n=1024, r=8, p=1)");
  const key = await loadKey(file, "correct horse");
  assert.equal(key.fingerprint, fingerprint);
  const blob = encodeBlob(Buffer.from("secret data"), 1, key);
  assert.equal(decodeBlob(blob, "chunk", undefined, await loadKey(file, "correct horse")).toString(), "secret data");
});

void test("the default KDF cost is recorded and opens", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  const { fingerprint } = await createKeyFile(file, "pw");
  assert.equal((await keyInfo(file)).kdf, `scrypt (n=${DEFAULT_SCRYPT.n}, r=${DEFAULT_SCRYPT.r}, p=${DEFAULT_SCRYPT.p})`);
  const started = performance.now();
  assert.equal((await loadKey(file, "pw")).fingerprint, fingerprint);
  assert.ok(performance.now() - started > 20, "a derivation should cost noticeable time");
});

void test("a wrong or empty passphrase is refused", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  await createKeyFile(file, "right", cheap);
  await assert.rejects(loadKey(file, "wrong"), isError("usage", new RegExp(`^the passphrase does not open key file ${file} \\(a wrong passphrase, or the file was changed\\)\\.$`)));
  await assert.rejects(loadKey(file, ""), isError("usage", /passphrase is empty/));
  await assert.rejects(createKeyFile(path.join(dir, "k2"), "", cheap), isError("usage", /passphrase is empty/));
  assert.ok(!fs.existsSync(path.join(dir, "k2")));
});

void test("a key file is never overwritten", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  await createKeyFile(file, "a", cheap);
  const before = fs.readFileSync(file);
  await assert.rejects(createKeyFile(file, "b", cheap), isError("exists", /already exists/));
  assert.ok(fs.readFileSync(file).equals(before));
  const other = path.join(dir, "other");
  fs.writeFileSync(other, "precious");
  await assert.rejects(createKeyFile(other, "b", cheap), isError("exists", /never overwritten/));
  await assert.rejects(importKeyFile(other, before), isError("exists", /never overwritten/));
  assert.equal(fs.readFileSync(other, "utf8"), "precious");
  assert.deepEqual(fs.readdirSync(dir).sort(), ["k", "other"]);
});

void test("changing the passphrase keeps the key and drops the old passphrase", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  await createKeyFile(file, "old", cheap);
  const key = await loadKey(file, "old");
  const created = (await keyInfo(file)).created;
  await assert.rejects(changePassphrase(file, "nope", "new", cheap), isError("usage", /does not open/));
  await assert.rejects(changePassphrase(file, "old", "", cheap), isError("usage", /empty/));
  await changePassphrase(file, "old", "new", { scrypt: { n: 2048, r: 8, p: 1 } });
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ["k"]);
  await assert.rejects(loadKey(file, "old"), isError("usage", /does not open/));
  const again = await loadKey(file, "new");
  assert.ok(again.encKey.equals(key.encKey) && again.idKey.equals(key.idKey));
  const info = await keyInfo(file);
  assert.equal(info.created, created);
  assert.equal(info.kdf, "scrypt (n=2048, r=8, p=1)");
});

void test("a missing or malformed key file gives one clear sentence", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const good = path.join(dir, "good");
  await createKeyFile(good, "pw", cheap);
  const json = JSON.parse(fs.readFileSync(good, "utf8")) as Record<string, unknown>;
  const write = (name: string, content: string): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, content);
    return f;
  };
  await assert.rejects(keyInfo(path.join(dir, "none")), isError("not-found", /key file .*none does not exist\./));
  await assert.rejects(keyInfo(write("text", "hello")), isError("invalid", /^key file .*text is not a gorde key file \(not JSON\)\.$/));
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["no-salt", { ...json, kdf: { ...(json.kdf as object), salt: undefined } }, /member kdf\.salt/],
    ["short-iv", { ...json, iv: "abcd" }, /member iv: expected 12 bytes/],
    ["extra", { ...json, extra: 1 }, /extra/],
    ["huge-n", { ...json, kdf: { ...(json.kdf as object), n: 2 ** 30 } }, /member kdf\.n/],
    ["not-pow2", { ...json, kdf: { ...(json.kdf as object), n: 3000 } }, /power of two/],
    ["format", { ...json, format: 2 }, /member format/],
  ];
  for (const [name, data, re] of cases) {
    const f = write(name, JSON.stringify(data));
    await assert.rejects(keyInfo(f), isError("invalid", re), name);
    await assert.rejects(loadKey(f, "pw"), isError("invalid", /is malformed \(.*\)\.$/), name);
  }
  const forged = write("forged", JSON.stringify({ ...json, fingerprint: "00:".repeat(31) + "00" }));
  await assert.rejects(loadKey(forged, "pw"), isError("invalid", /fingerprint that does not match its key/));
  fs.writeFileSync(path.join(dir, "big"), Buffer.alloc(100_000, " "));
  await assert.rejects(keyInfo(path.join(dir, "big")), isError("invalid", /larger than/));
});

void test("paper key: round trip, surrounding text ignored, import writes a working key file", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  const { fingerprint } = await createKeyFile(file, "pw", cheap);
  const content = fs.readFileSync(file);
  const paper = paperKey(content);
  assert.ok(paper.includes(fingerprint));
  const lines = paper.split("\n");
  const body = lines.slice(lines.indexOf("-----BEGIN GORDE KEY FILE-----") + 1, lines.indexOf("-----END GORDE KEY FILE-----"));
  assert.ok(body.length > 5 && body.length < 30, `${body.length} lines`);
  for (const l of body) assert.ok(l.length <= 50, l);
  assert.ok(parsePaperKey(paper).equals(content));
  // Typed back: lower case, other spacing, blank lines, surrounding whitespace.
  const typed =
    "\n\n  " +
    paper
      .toLowerCase()
      .replace("-----begin gorde key file-----", "-----BEGIN GORDE KEY FILE-----\n")
      .replace("-----end gorde key file-----", "-----END GORDE KEY FILE-----")
      .split("\n")
      // other grouping of the characters (never touching the checksum, the last token)
      .map((l) => {
        const t = l.split(" ");
        if (!/^\d+:$/.test(t[0] ?? "") || t.length < 4) return l;
        const groups = t.slice(1, -1);
        const merged: string[] = [];
        for (let i = 0; i < groups.length; i += 2) merged.push(groups.slice(i, i + 2).join(""));
        return [t[0], ...merged, t.at(-1)].join(" ");
      })
      .join("\n") +
    "\n\n";
  assert.ok(parsePaperKey(typed).equals(content));
  const restored = path.join(dir, "restored");
  assert.deepEqual(await importKeyFile(restored, parsePaperKey(typed)), { fingerprint });
  assert.equal(fs.statSync(restored).mode & 0o777, 0o600);
  assert.equal((await loadKey(restored, "pw")).fingerprint, fingerprint);
  assert.throws(() => paperKey(Buffer.from("{}")), isError("invalid", /malformed/));
});

void test("paper key: a typo is reported with its line, a missing line is noticed", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "k");
  await createKeyFile(file, "pw", cheap);
  const paper = paperKey(fs.readFileSync(file));
  const lines = paper.split("\n");
  const first = lines.indexOf("-----BEGIN GORDE KEY FILE-----") + 1;
  const end = lines.indexOf("-----END GORDE KEY FILE-----");
  const edit = (i: number, fn: (l: string) => string): string => lines.map((l, j) => (j === first + i ? fn(l) : l)).join("\n");
  // Line 3: one character changed.
  const typo = edit(2, (l) => l.slice(0, 6) + (l[6] === "A" ? "B" : "A") + l.slice(7));
  assert.throws(() => parsePaperKey(typo), isError("invalid", /^line 3 of the paper key does not match its checksum; check it for a typo\.$/));
  assert.throws(() => parsePaperKey(edit(3, (l) => l.replace(/ (\S+)$/, " 0000"))), isError("invalid", /line 4 .*checksum/));
  assert.throws(() => parsePaperKey(edit(1, (l) => l.slice(0, 6) + "1" + l.slice(7))), isError("invalid", /line 2 .*"1", which is not a base32/));
  assert.throws(() => parsePaperKey(edit(4, () => "")), isError("invalid", /line 5 of the paper key is numbered 06: a line is missing/));
  const noLast = lines.filter((_, j) => j !== end - 1).join("\n");
  assert.throws(() => parsePaperKey(noLast), isError("invalid", /does not decode to a key file/));
  assert.throws(() => parsePaperKey("nothing here"), isError("invalid", /no line "-----BEGIN/));
  assert.throws(() => parsePaperKey(lines.slice(0, end).join("\n")), isError("invalid", /no line "-----END/));
});

void test("a key file in a missing directory is reported as such", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, "no", "k");
  await assert.rejects(createKeyFile(file, "pw", cheap), isError("not-found", /the directory of key file .*no\/k does not exist\./));
});

void test("a damaged key file (bits flipped, cut short, bytes swapped) is refused in one sentence or still opens to the same key, never to another", async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const good = path.join(dir, "good");
  await createKeyFile(good, "pw", cheap);
  const bytes = fs.readFileSync(good);
  const key = await loadKey(good, "pw");
  const random = mulberry32(15);
  const pick = (n: number): number => Math.floor(random() * n);
  const tally = { refused: 0, same: 0 };
  for (let i = 0; i < 300; i++) {
    const damaged = Buffer.from(bytes);
    let how: string;
    if (i % 3 === 0) {
      const at = pick(damaged.length);
      damaged[at]! ^= 1 << pick(8);
      how = `bit flipped at ${at}`;
    } else if (i % 3 === 1) {
      const len = pick(damaged.length);
      how = `cut to ${len} bytes`;
      fs.writeFileSync(path.join(dir, "damaged"), damaged.subarray(0, len));
    } else {
      const [a, b] = [pick(damaged.length), pick(damaged.length)];
      [damaged[a], damaged[b]] = [damaged[b]!, damaged[a]!];
      how = `bytes ${a} and ${b} swapped`;
    }
    if (i % 3 !== 1) fs.writeFileSync(path.join(dir, "damaged"), damaged);
    try {
      const got = await loadKey(path.join(dir, "damaged"), "pw");
      assert.ok(got.encKey.equals(key.encKey) && got.idKey.equals(key.idKey) && got.fingerprint === key.fingerprint, `${how}: it opened to another key`);
      tally.same++;
    } catch (e) {
      assert.ok(e instanceof GordeError && /^[^\n]+\.$/.test(e.message), `${how}: ${(e as Error).message}`);
      tally.refused++;
    }
  }
  // Most damage is refused; a change the JSON does not see (a space, the creation date) opens.
  assert.ok(tally.refused > 200, JSON.stringify(tally));
});
