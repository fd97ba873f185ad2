// Every malformed input is refused with one clear sentence on stderr and a non-zero exit
// code, and nothing half-written becomes visible: no new snapshot, no leftover unfinished
// one, no partial restore target, nothing written outside a restore target.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Datastore, MANIFEST_FILE } from "../src/datastore/datastore.ts";
import { encodeBlob } from "../src/format/blob.ts";
import { DynamicIndexBuilder, decodeDynamicIndex, encodeDynamicIndex } from "../src/format/dynamic-index.ts";
import { decodeFixedIndex } from "../src/format/fixed-index.ts";
import { DIGEST_SIZE } from "../src/format/magic.ts";
import { type Manifest, encodeManifest, sha256Hex } from "../src/format/manifest.ts";
import { formatTime } from "../src/format/names.ts";
import type { TreeEntry } from "../src/format/tree-entry.ts";
import { zeroDigestHex } from "../src/format/zero-chunk.ts";
import { entryStream, treeEntry } from "./helpers.ts";

const MAIN = path.resolve(import.meta.dirname, "../src/cli/main.ts");
const KiB = 1024;
const MiB = 1024 * KiB;
const EXIT = { usage: 2, notFound: 3, exists: 3, corrupt: 5, unsupported: 6 };
const TIME = "2024-01-01T00:00:00Z";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Set once the temporary directory exists: compiled code cached there makes each run start faster. */
let compileCache: string | undefined;

function gorde(...args: string[]): Promise<Run> {
  const env = compileCache ? { ...process.env, NODE_COMPILE_CACHE: compileCache } : process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { maxBuffer: 64 * MiB, env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(...args: string[]): Promise<Run> {
  const r = await gorde(...args);
  assert.equal(r.code, 0, `gorde ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r;
}

/** Refused: the exit code, nothing on stdout, and one line on stderr naming the problem. */
function refused(r: Run, code: number, phrase: RegExp): void {
  assert.equal(r.code, code, `exit code (stderr: ${r.stderr.trim()})`);
  assert.equal(r.stdout, "", "nothing on stdout");
  const lines = r.stderr.split("\n");
  assert.equal(lines.length, 2, `one line on stderr: ${JSON.stringify(r.stderr)}`);
  assert.equal(lines[1], "");
  assert.match(lines[0]!, /^gorde( [a-z]+)?: /);
  assert.match(lines[0]!, phrase);
}

interface Listed {
  snapshot: string;
  finished: boolean;
  error?: string | null;
}

async function snapshots(repo: string): Promise<Listed[]> {
  const r = await ok("snapshots", repo, "--json");
  return (JSON.parse(r.stdout) as Listed[]).map((s) => ({ snapshot: s.snapshot, finished: s.finished }));
}

/** The snapshot list is as before: no new finished snapshot, no leftover unfinished one. */
async function unchanged(repo: string, expected: Listed[]): Promise<void> {
  assert.deepEqual(await snapshots(repo), expected, `snapshots of ${repo}`);
}

function flipByte(file: string, pos: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, pos);
    b[0]! ^= 0x55;
    fs.writeSync(fd, b, 0, 1, pos);
  } finally {
    fs.closeSync(fd);
  }
}

function truncateToHalf(file: string): void {
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
}

function assertMissing(p: string, what: string): void {
  assert.equal(fs.existsSync(p) || isLink(p), false, `${what} (${p}) does not exist`);
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

void describe("bad input", () => {
  let tmp = "";
  /** a datastore with one good snapshot at TIME */
  let repo = "";
  let img = "";
  let tree = "";
  let expected: Listed[] = [];
  const snap = `vm/100/${TIME}`;
  let fresh = 0;

  /** A new datastore with one snapshot of both sources at TIME. */
  const freshRepo = async (): Promise<{ repo: string; dir: string }> => {
    const r = path.join(tmp, `repo-${fresh++}`);
    await ok("init", r);
    await ok("backup", r, "vm/100", `disk.img=${img}`, `data.tree=${tree}`, "--time", TIME);
    return { repo: r, dir: path.join(r, "vm", "100", TIME) };
  };

  /** A new, empty directory for a restore target. */
  const targetDir = (): string => fs.mkdtempSync(path.join(tmp, "target-"));

  const imageDigest = (dir: string): string => {
    const idx = decodeFixedIndex(fs.readFileSync(path.join(dir, "disk.img.fidx")));
    // chunk 4 (1 MiB .. 1.25 MiB) holds random data
    const hex = idx.digests.toString("hex", 4 * DIGEST_SIZE, 5 * DIGEST_SIZE);
    assert.notEqual(hex, zeroDigestHex(idx.chunkSize));
    return hex;
  };

  const chunkFile = (r: string, hex: string): string => path.join(r, ".chunks", hex.slice(0, 2), hex);

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gorde-bad-input-"));
    compileCache = path.join(tmp, "compile-cache");
    img = path.join(tmp, "disk.img");
    tree = path.join(tmp, "tree");
    const fd = fs.openSync(img, "w");
    fs.ftruncateSync(fd, 4 * MiB);
    fs.writeSync(fd, randomBytes(MiB), 0, MiB, MiB);
    fs.writeSync(fd, randomBytes(200 * KiB), 0, 200 * KiB, 3 * MiB + 5);
    fs.closeSync(fd);
    fs.mkdirSync(path.join(tree, "sub"), { recursive: true });
    fs.writeFileSync(path.join(tree, "a.txt"), "hello\n");
    fs.writeFileSync(path.join(tree, "big.bin"), randomBytes(300 * KiB));
    fs.writeFileSync(path.join(tree, "big2.bin"), randomBytes(3 * MiB));
    fs.writeFileSync(path.join(tree, "sub", "c.txt"), randomBytes(5000));
    repo = path.join(tmp, "repo");
    await ok("init", repo);
    await ok("backup", repo, "vm/100", `disk.img=${img}`, `data.tree=${tree}`, "--time", TIME);
    expected = await snapshots(repo);
    assert.deepEqual(expected, [{ snapshot: snap, finished: true }]);
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  void describe("a datastore path that is not a datastore", { concurrency: 3 }, () => {
    for (const kind of ["an empty directory", "a file", "a missing path"]) {
      const make = (): string => {
        const p = path.join(tmp, `not-a-store-${randomBytes(4).toString("hex")}`);
        if (kind === "an empty directory") fs.mkdirSync(p);
        if (kind === "a file") fs.writeFileSync(p, "not a datastore\n");
        return p;
      };
      const state = (p: string): string =>
        !fs.existsSync(p) ? "missing" : fs.statSync(p).isDirectory() ? `dir: ${fs.readdirSync(p).join(",")}` : fs.readFileSync(p, "utf8");

      void it(`backup into ${kind}`, async () => {
        const p = make();
        const was = state(p);
        refused(await gorde("backup", p, "vm/100", `disk.img=${img}`), EXIT.notFound, /is not a gorde datastore/);
        assert.equal(state(p), was, "nothing was created");
      });
      void it(`snapshots of ${kind}`, async () => {
        refused(await gorde("snapshots", make(), "--json"), EXIT.notFound, /is not a gorde datastore/);
      });
      void it(`restore from ${kind}`, async () => {
        const p = make();
        const target = path.join(tmp, `unused-${randomBytes(4).toString("hex")}.img`);
        refused(await gorde("restore", p, snap, "disk.img", target), EXIT.notFound, /is not a gorde datastore/);
        assertMissing(target, "the restore target");
      });
    }
  });

  void describe("init", () => {
    void it("refuses a non-empty directory and leaves it alone", async () => {
      const dir = fs.mkdtempSync(path.join(tmp, "full-"));
      fs.writeFileSync(path.join(dir, "keep.txt"), "mine\n");
      refused(await gorde("init", dir), EXIT.usage, /is not empty/);
      assert.deepEqual(fs.readdirSync(dir), ["keep.txt"]);
      assert.equal(fs.readFileSync(path.join(dir, "keep.txt"), "utf8"), "mine\n");
    });
    void it("refuses an existing datastore", async () => {
      refused(await gorde("init", repo), EXIT.exists, /is already a gorde datastore/);
      await unchanged(repo, expected);
    });
    void it("refuses a file", async () => {
      const file = path.join(tmp, "plain-file");
      fs.writeFileSync(file, "x");
      refused(await gorde("init", file), EXIT.usage, /is not a directory/);
      assert.equal(fs.readFileSync(file, "utf8"), "x");
    });
  });

  // These fail before the datastore is touched, so they can run side by side.
  void describe("names, options and arguments", { concurrency: 3 }, () => {
    const cases: [string, () => string[], number, RegExp][] = [
      ["group with ..", () => ["backup", repo, "vm/../x", `disk.img=${img}`], EXIT.usage, /"vm\/\.\.\/x" is not a backup group/],
      ["group id with a space", () => ["backup", repo, "vm/a b", `disk.img=${img}`], EXIT.usage, /"a b" is not a valid backup id/],
      ["group id with a leading dot", () => ["backup", repo, "vm/.x", `disk.img=${img}`], EXIT.usage, /"\.x" is not a valid backup id/],
      ["group id with odd characters", () => ["backup", repo, "vm/a$b*", `disk.img=${img}`], EXIT.usage, /is not a valid backup id/],
      ["group id with a newline", () => ["backup", repo, "vm/a\nb", `disk.img=${img}`], EXIT.usage, /is not a valid backup id/],
      ["unknown group type", () => ["backup", repo, "nas/1", `disk.img=${img}`], EXIT.usage, /"nas\/1" is not a backup group/],
      ["group with a slash too many", () => ["backup", repo, "vm/1/2", `disk.img=${img}`], EXIT.usage, /is not a backup group/],
      ["archive with a path", () => ["backup", repo, "vm/100", `disk/../x.img=${img}`], EXIT.usage, /"disk\/\.\.\/x\.img" is not a valid archive name/],
      ["archive of unknown kind", () => ["backup", repo, "vm/100", `x.zip=${img}`], EXIT.usage, /"x\.zip" is not a valid archive name/],
      ["archive with an empty name", () => ["backup", repo, "vm/100", `.img=${img}`], EXIT.usage, /"\.img" is not a valid archive name/],
      ["archive with a space", () => ["backup", repo, "vm/100", `a b.img=${img}`], EXIT.usage, /"a b\.img" is not a valid archive name/],
      ["archive without a source", () => ["backup", repo, "vm/100", "disk.img"], EXIT.usage, /"disk\.img" is not <archive>=<source>/],
      ["archive with an empty source", () => ["backup", repo, "vm/100", "disk.img="], EXIT.usage, /is not <archive>=<source>/],
      ["archive named twice", () => ["backup", repo, "vm/100", `disk.img=${img}`, `disk.img=${img}`], EXIT.usage, /named twice/],
      ["bad chunk size", () => ["backup", repo, "vm/100", `disk.img=${img}`, "--chunk-size", "1000"], EXIT.usage, /chunk size 1000/],
      ["snapshot without a time", () => ["restore", repo, "vm/100", "disk.img", path.join(tmp, "never.img")], EXIT.usage, /"vm\/100" is not a snapshot: expected/],
      ["snapshot with a bad time", () => ["restore", repo, "vm/100/yesterday", "disk.img", path.join(tmp, "never.img")], EXIT.usage, /"yesterday" is not a snapshot time/],
      ["snapshot time without Z", () => ["restore", repo, "vm/100/2024-01-01T00:00:00", "disk.img", path.join(tmp, "never.img")], EXIT.usage, /is not a snapshot time/],
      ["snapshot time that is no date", () => ["restore", repo, "vm/100/2024-02-30T00:00:00Z", "disk.img", path.join(tmp, "never.img")], EXIT.usage, /is not a snapshot time/],
      ["snapshot that does not exist", () => ["restore", repo, "vm/100/2023-01-01T00:00:00Z", "disk.img", path.join(tmp, "never.img")], EXIT.notFound, /does not exist/],
      ["group without snapshots", () => ["restore", repo, "vm/999/latest", "disk.img", path.join(tmp, "never.img")], EXIT.notFound, /has no finished snapshot/],
      ["archive the snapshot lacks", () => ["restore", repo, snap, "other.img", path.join(tmp, "never.img")], EXIT.notFound, /has no archive other\.img/],
      ["archive name with a path on restore", () => ["restore", repo, snap, "../disk.img", path.join(tmp, "never.img")], EXIT.usage, /is not a valid archive name/],
      ["--path leaving the archive", () => ["restore", repo, snap, "data.tree", path.join(tmp, "never.img"), "--path", "../../etc"], EXIT.usage, /"\.\.\/\.\.\/etc" is not a path inside the archive/],
      ["--path the archive lacks", () => ["restore", repo, snap, "data.tree", path.join(tmp, "never.img"), "--path", "nope"], EXIT.notFound, /the archive has no entry "nope"/],
      ["--path on a block image", () => ["restore", repo, snap, "disk.img", path.join(tmp, "never.img"), "--path", "x"], EXIT.usage, /--path applies to file archives/],
      ["unknown option", () => ["backup", repo, "vm/100", `disk.img=${img}`, "--frobnicate"], EXIT.usage, /Unknown option '--frobnicate'/],
      ["option without its value", () => ["backup", repo, "vm/100", `disk.img=${img}`, "--time"], EXIT.usage, /'--time <value>' argument missing/],
      ["backup without archives", () => ["backup", repo, "vm/100"], EXIT.usage, /usage: gorde backup/],
      ["restore without a target", () => ["restore", repo, snap, "disk.img"], EXIT.usage, /usage: gorde restore/],
      ["snapshots with too many arguments", () => ["snapshots", repo, "vm/100", "extra"], EXIT.usage, /usage: gorde snapshots/],
      ["unknown command", () => ["frobnicate", repo], EXIT.usage, /unknown command "frobnicate"/],
    ];
    for (const [name, args, code, phrase] of cases) {
      void it(name, async () => {
        refused(await gorde(...args()), code, phrase);
        assertMissing(path.join(tmp, "never.img"), "the restore target");
        await unchanged(repo, expected);
      });
    }
  });

  void describe("--time", () => {
    void it("equal to the last snapshot's", async () => {
      refused(
        await gorde("backup", repo, "vm/100", `disk.img=${img}`, "--time", TIME),
        EXIT.usage,
        /snapshot time 2024-01-01T00:00:00Z is not newer than the group's last snapshot 2024-01-01T00:00:00Z/,
      );
      await unchanged(repo, expected);
    });
    void it("older than the last snapshot's", async () => {
      refused(
        await gorde("backup", repo, "vm/100", `disk.img=${img}`, "--time", "2023-06-01T12:00:00Z"),
        EXIT.usage,
        /is not newer than the group's last snapshot/,
      );
      await unchanged(repo, expected);
    });
    void it("malformed", async () => {
      refused(await gorde("backup", repo, "vm/100", `disk.img=${img}`, "--time", "yesterday"), EXIT.usage, /"yesterday" is not an ISO 8601 date-time/);
      await unchanged(repo, expected);
    });
    void it("with fractions of a second", async () => {
      refused(await gorde("backup", repo, "vm/100", `disk.img=${img}`, "--time", "2025-01-01T00:00:00.5Z"), EXIT.usage, /fractions of a second/);
      await unchanged(repo, expected);
    });
  });

  void describe("sources", () => {
    void it("that does not exist", async () => {
      const missing = path.join(tmp, "no-such-image");
      refused(await gorde("backup", repo, "vm/100", `disk.img=${missing}`), EXIT.notFound, /no-such-image does not exist/);
      await unchanged(repo, expected);
    });
    void it("an .img source that is a directory", async () => {
      refused(await gorde("backup", repo, "vm/100", `disk.img=${tree}`), EXIT.usage, /is neither a regular file nor a block device/);
      await unchanged(repo, expected);
    });
    void it("a .tree source that is a file", async () => {
      refused(await gorde("backup", repo, "vm/100", `data.tree=${img}`), EXIT.usage, /is not a directory/);
      await unchanged(repo, expected);
    });
    void it("a missing second source after a good first one", async () => {
      refused(
        await gorde("backup", repo, "vm/100", `disk.img=${img}`, `data.tree=${path.join(tmp, "no-such-dir")}`),
        EXIT.notFound,
        /no-such-dir does not exist/,
      );
      await unchanged(repo, expected);
    });
    void it("a failed backup leaves nothing in the group directory", () => {
      // only the good snapshot: no unfinished directory, no temporary or half-removed one
      assert.deepEqual(fs.readdirSync(path.join(repo, "vm", "100")), [TIME]);
    });
  });

  // Each case has a datastore of its own.
  void describe("a corrupted chunk", { concurrency: 2 }, () => {
    void it("flipped byte: restore and verify name it; a later backup stores it again", async () => {
      const { repo: r, dir } = await freshRepo();
      const list = await snapshots(r);
      const hex = imageDigest(dir);
      const file = chunkFile(r, hex);
      flipByte(file, Math.floor(fs.statSync(file).size / 2));

      const out = targetDir();
      const res = await gorde("restore", r, snap, "disk.img", path.join(out, "disk.img"));
      refused(res, EXIT.corrupt, new RegExp(`chunk ${hex} `));
      assert.deepEqual(fs.readdirSync(out), [], "no target file and no temporary file are left");

      const v = await gorde("verify", r);
      assert.equal(v.code, EXIT.corrupt, `verify exits 5: ${v.stdout}${v.stderr}`);
      assert.match(v.stdout, new RegExp(`bad chunk ${hex}`));
      assertMissing(file, "the corrupt chunk under its name");
      assert.ok(fs.existsSync(`${file}.0.bad`), "the corrupt chunk is kept as .bad");
      await unchanged(r, list);

      // The snapshot failed verification, so the next backup does not trust it as a base
      // and stores the chunk anew.
      const b = await ok("backup", r, "vm/100", `disk.img=${img}`, `data.tree=${tree}`, "--json");
      assert.ok(fs.existsSync(file), "the chunk is stored again");
      const again = path.join(targetDir(), "disk.img");
      await ok("restore", r, snap, "disk.img", again);
      assert.ok(fs.readFileSync(again).equals(fs.readFileSync(img)), "the old snapshot restores again");
      assert.equal((await gorde("verify", r)).code, 0, "verify passes again");
      const { snapshot } = JSON.parse(b.stdout) as { snapshot: string };
      assert.deepEqual(await snapshots(r), [...list, { snapshot, finished: true }]);
    });

    void it("truncated: restore and verify fail naming it", async () => {
      const { repo: r, dir } = await freshRepo();
      const list = await snapshots(r);
      const hex = imageDigest(dir);
      truncateToHalf(chunkFile(r, hex));
      const out = targetDir();
      refused(await gorde("restore", r, snap, "disk.img", path.join(out, "disk.img")), EXIT.corrupt, new RegExp(`chunk ${hex} `));
      assert.deepEqual(fs.readdirSync(out), []);
      const v = await gorde("verify", r);
      assert.equal(v.code, EXIT.corrupt, v.stdout);
      assert.match(v.stdout, new RegExp(`bad chunk ${hex}`));
      await unchanged(r, list);
    });

    void it("missing: restore and verify fail naming it", async () => {
      const { repo: r, dir } = await freshRepo();
      const list = await snapshots(r);
      const hex = imageDigest(dir);
      fs.rmSync(chunkFile(r, hex));
      const out = targetDir();
      refused(await gorde("restore", r, snap, "disk.img", path.join(out, "disk.img")), EXIT.corrupt, new RegExp(`chunk ${hex} is missing`));
      assert.deepEqual(fs.readdirSync(out), []);
      const v = await gorde("verify", r);
      assert.equal(v.code, EXIT.corrupt, v.stdout);
      assert.match(v.stdout, new RegExp(`missing chunk ${hex}`));
      await unchanged(r, list);
    });

    void it("in a file archive's payload: restore fails naming it and leaves no half-written file", async () => {
      const { repo: r, dir } = await freshRepo();
      const list = await snapshots(r);
      const payload = decodeDynamicIndex(fs.readFileSync(path.join(dir, "data.tree.payload.didx")));
      assert.ok(payload.count >= 2, `the payload has ${payload.count} chunks`);
      // A chunk in the middle of big2.bin (the payload holds a.txt, big.bin, big2.bin,
      // sub/c.txt in that order): the last chunk would hold sub/c.txt alone whenever the
      // content-defined cut fell near big2.bin's end, and big2.bin would restore whole.
      const hex = payload.digest(payload.find(6 + 300 * KiB + 1.5 * MiB)).toString("hex");
      flipByte(chunkFile(r, hex), 20);
      const out = path.join(targetDir(), "tree");
      refused(await gorde("restore", r, snap, "data.tree", out), EXIT.corrupt, new RegExp(`chunk ${hex} `));
      // What was restored before the damaged chunk is whole; the file that needed it is not there.
      const left: string[] = [];
      const walk = (rel: string): void => {
        for (const d of fs.readdirSync(path.join(out, rel), { withFileTypes: true })) {
          const p = path.join(rel, d.name);
          if (d.isDirectory()) walk(p);
          else {
            left.push(p);
            assert.ok(fs.readFileSync(path.join(out, p)).equals(fs.readFileSync(path.join(tree, p))), `${p} is whole`);
          }
        }
      };
      if (fs.existsSync(out)) walk("");
      assert.ok(!left.includes("big2.bin"), `the file the damaged chunk belongs to is not left half-written (left: ${left.join(", ")})`);
      const v = await gorde("verify", r);
      assert.equal(v.code, EXIT.corrupt, v.stdout);
      await unchanged(r, list);
    });
  });

  void describe("a damaged index file", { concurrency: 2 }, () => {
    const cases: [string, string, string, (f: string) => void][] = [
      ["truncated fixed index", "disk.img.fidx", "disk.img", truncateToHalf],
      ["corrupted fixed index", "disk.img.fidx", "disk.img", (f) => flipByte(f, 70)],
      ["truncated dynamic index", "data.tree.entries.didx", "data.tree", truncateToHalf],
      ["corrupted dynamic index", "data.tree.payload.didx", "data.tree", (f) => flipByte(f, 70)],
      ["missing dynamic index", "data.tree.entries.didx", "data.tree", (f) => fs.rmSync(f)],
    ];
    for (const [name, file, archive, damage] of cases) {
      void it(`${name}: restore and verify fail naming it`, async () => {
        const { repo: r, dir } = await freshRepo();
        const list = await snapshots(r);
        damage(path.join(dir, file));
        const out = path.join(targetDir(), "out");
        const phrase = new RegExp(`index ${file.replaceAll(".", "\\.")} of vm/100/${TIME} (does not match the checksum|is missing)`);
        refused(await gorde("restore", r, snap, archive, out), EXIT.corrupt, phrase);
        assertMissing(out, "the restore target");
        const v = await gorde("verify", r);
        assert.equal(v.code, EXIT.corrupt, v.stdout);
        assert.match(v.stdout, phrase);
        await unchanged(r, list);
      });
    }
  });

  void describe("a damaged manifest", { concurrency: 2 }, () => {
    const cases: [string, (m: Manifest) => string, number, RegExp][] = [
      ["invalid JSON", (m) => JSON.stringify(m).slice(0, -10), EXIT.corrupt, /manifest of vm\/100\/\S+ is not valid JSON/],
      ["a field of the wrong type", (m) => JSON.stringify({ ...m, archives: "disk.img" }), EXIT.corrupt, /manifest of vm\/100\/\S+ is malformed: archives:/],
      ["a negative size", (m) => JSON.stringify({ ...m, archives: m.archives.map((a) => ({ ...a, size: -1 })) }), EXIT.corrupt, /is malformed: archives\.0\.size/],
      ["an index file name with a path", (m) => JSON.stringify({ ...m, archives: m.archives.map((a) => ({ ...a, indexes: a.indexes.map((i) => ({ ...i, file: `../${i.file}` })) })) }), EXIT.corrupt, /is malformed: archives\.0\.indexes\.0\.file/],
      ["format 99", (m) => JSON.stringify({ ...m, format: 99 }), EXIT.unsupported, /written by a newer gorde/],
      // Well-formed, but not what the backup wrote: its checksum says so.
      ["one digit of an archive's size changed", (m) => JSON.stringify({ ...m, archives: m.archives.map((a) => ({ ...a, size: a.size + 1 })) }), EXIT.corrupt, /manifest of vm\/100\/\S+ does not match its checksum: its protected part was changed/],
      ["its checksum removed", (m) => JSON.stringify({ ...m, csum: undefined }), EXIT.corrupt, /is malformed: a manifest of format 3 has a checksum/],
    ];
    for (const [name, damage, code, phrase] of cases) {
      void it(`${name}: restore refuses it`, async () => {
        const { repo: r, dir } = await freshRepo();
        const file = path.join(dir, MANIFEST_FILE);
        const m = JSON.parse(fs.readFileSync(file, "utf8")) as Manifest;
        fs.writeFileSync(file, damage(m));
        const out = path.join(targetDir(), "disk.img");
        refused(await gorde("restore", r, snap, "disk.img", out), code, phrase);
        assertMissing(out, "the restore target");
        const v = await gorde("verify", r);
        assert.notEqual(v.code, 0, "verify fails");
        assert.match(v.stdout + v.stderr, phrase);
        // listed, but not as a finished snapshot, with the reason
        const listed = JSON.parse((await ok("snapshots", r, "--json")).stdout) as Listed[];
        assert.equal(listed.length, 1);
        assert.equal(listed[0]!.finished, false);
        assert.match(listed[0]!.error ?? "", phrase);
      });
    }
  });

  void describe("a hostile file archive", () => {
    let hrepo = "";
    let store: Datastore | undefined;
    let n = 0;
    const base = Date.parse("2024-06-01T00:00:00Z") / 1000;

    before(async () => {
      hrepo = path.join(tmp, "hostile");
      await ok("init", hrepo);
      store = await Datastore.open(hrepo);
    });
    after(() => store?.close());

    const entry = treeEntry;

    /** One chunk per stream, stored as a backup would; returns its dynamic index file. */
    const storeStream = (data: Buffer): Buffer => {
      const b = new DynamicIndexBuilder();
      if (data.length > 0) {
        const digest = createHash("sha256").update(data).digest();
        store!.chunks.insert(digest.toString("hex"), encodeBlob(data));
        b.add(data.length, digest);
      }
      return encodeDynamicIndex(b.build(base));
    };

    /** Writes a finished snapshot host/evil/<time> whose data.tree has these entries and payload. */
    const writeArchive = (entries: TreeEntry[], payload: Buffer): string => {
      const all = [entry("dir", ""), ...entries];
      const time = base + n++;
      const dir = store!.snapshotDir([], { type: "host", id: "evil", time });
      fs.mkdirSync(dir, { recursive: true });
      const indexes = [];
      for (const [suffix, data] of [
        ["entries", entryStream(all)],
        ["payload", payload],
      ] as const) {
        const file = `data.tree.${suffix}.didx`;
        const bytes = storeStream(data);
        fs.writeFileSync(path.join(dir, file), bytes);
        indexes.push({ file, csum: sha256Hex(bytes), size: bytes.length });
      }
      const manifest: Manifest = {
        format: 1,
        type: "host",
        id: "evil",
        time,
        archives: [{ name: "data.tree", kind: "tree", size: payload.length, indexes }],
        cryptMode: "none",
        keyFingerprint: null,
        unprotected: {},
      };
      fs.writeFileSync(path.join(dir, MANIFEST_FILE), encodeManifest(manifest));
      return `host/evil/${formatTime(time)}`;
    };

    /** A fresh place to restore to; the escape path is checked beside it. */
    const place = (): { target: string; beside: string } => {
      const parent = fs.mkdtempSync(path.join(tmp, "hostile-"));
      return { target: path.join(parent, "target"), beside: parent };
    };

    const refusedRestore = async (s: string, phrase: RegExp, escapes: string[]): Promise<void> => {
      const { target, beside } = place();
      const list = await snapshots(hrepo);
      refused(await gorde("restore", hrepo, s, "data.tree", target), EXIT.corrupt, phrase);
      assertMissing(target, "the restore target");
      assert.deepEqual(fs.readdirSync(beside), [], "nothing written beside the target");
      for (const p of escapes) assertMissing(p, "the escape location");
      refused(await gorde("ls", hrepo, s, "data.tree"), EXIT.corrupt, phrase);
      await unchanged(hrepo, list);
    };

    void it("a well-formed archive built the same way restores (the builder is sound)", async () => {
      const payload = Buffer.from("contents of f\n");
      const s = writeArchive(
        [entry("dir", "d"), entry("file", "d/f", { size: payload.length, offset: 0 }), entry("symlink", "l", { link: Buffer.from("d/f") })],
        payload,
      );
      const { target } = place();
      await ok("restore", hrepo, s, "data.tree", target);
      assert.equal(fs.readFileSync(path.join(target, "d", "f"), "utf8"), "contents of f\n");
      assert.equal(fs.readlinkSync(path.join(target, "l")), "d/f");
    });

    void it("an entry ../evil", async () => {
      const payload = Buffer.from("evil\n");
      const s = writeArchive([entry("file", "../evil", { size: payload.length })], payload);
      const { beside } = place();
      await refusedRestore(s, /unsafe path "\.\.\/evil"/, [path.join(beside, "evil"), path.join(tmp, "evil")]);
    });

    void it("an entry with an absolute path", async () => {
      const abs = path.join(tmp, "absolute-evil");
      const payload = Buffer.from("evil\n");
      const s = writeArchive([entry("file", abs, { size: payload.length })], payload);
      await refusedRestore(s, /unsafe path/, [abs]);
    });

    void it("a file below a symlink that points outside", async () => {
      const outside = path.join(tmp, "outside");
      fs.mkdirSync(outside, { recursive: true });
      const payload = Buffer.from("evil\n");
      const s = writeArchive(
        [entry("symlink", "a", { link: Buffer.from(outside) }), entry("file", "a/x", { size: payload.length })],
        payload,
      );
      await refusedRestore(s, /"a\/x" whose parent is not a directory/, [path.join(outside, "x")]);
      assert.deepEqual(fs.readdirSync(outside), []);
    });

    void it("a file whose contents lie past the payload stream", async () => {
      const payload = Buffer.from("short\n");
      const s = writeArchive([entry("file", "f", { size: 100, offset: 0 }), entry("file", "g", { size: 10, offset: 1000 })], payload);
      await refusedRestore(s, /places "f" outside the payload stream/, []);
    });

    void it("a hard link to a file outside the archive", async () => {
      const s = writeArchive([entry("hardlink", "h", { link: Buffer.from("/etc/passwd") })], Buffer.alloc(0));
      await refusedRestore(s, /hard link "h" to something that is not an earlier file/, []);
    });
  });

  void describe("restore onto existing data", () => {
    void it("a file archive into a non-empty directory", async () => {
      const dir = targetDir();
      fs.writeFileSync(path.join(dir, "mine.txt"), "keep me\n");
      const before = fs.statSync(path.join(dir, "mine.txt"));
      refused(await gorde("restore", repo, snap, "data.tree", dir), EXIT.usage, /is not empty/);
      assert.deepEqual(fs.readdirSync(dir), ["mine.txt"]);
      assert.equal(fs.readFileSync(path.join(dir, "mine.txt"), "utf8"), "keep me\n");
      assert.equal(fs.statSync(path.join(dir, "mine.txt")).mtimeMs, before.mtimeMs);
      await unchanged(repo, expected);
    });
    void it("a file archive onto an existing file", async () => {
      const file = path.join(targetDir(), "file");
      fs.writeFileSync(file, "keep me\n");
      refused(await gorde("restore", repo, snap, "data.tree", file), EXIT.usage, /exists and is not a directory/);
      assert.equal(fs.readFileSync(file, "utf8"), "keep me\n");
    });
    void it("a file archive onto a symlink to a directory", async () => {
      const dir = targetDir();
      const link = path.join(targetDir(), "link");
      fs.symlinkSync(dir, link);
      refused(await gorde("restore", repo, snap, "data.tree", link), EXIT.usage, /exists and is not a directory/);
      assert.deepEqual(fs.readdirSync(dir), [], "nothing written through the link");
    });
    void it("an image onto an existing file", async () => {
      const dir = targetDir();
      const file = path.join(dir, "disk.img");
      fs.writeFileSync(file, "keep me\n");
      refused(await gorde("restore", repo, snap, "disk.img", file), EXIT.usage, /already exists/);
      assert.equal(fs.readFileSync(file, "utf8"), "keep me\n");
      assert.deepEqual(fs.readdirSync(dir), ["disk.img"], "no temporary file is left");
    });
    void it("an image into a directory that does not exist", async () => {
      const missing = path.join(tmp, "no-such-dir", "disk.img");
      refused(await gorde("restore", repo, snap, "disk.img", missing), EXIT.notFound, /does not exist/);
      assertMissing(path.dirname(missing), "the directory");
    });
  });
});
