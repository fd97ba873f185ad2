// The command-line contract of ../shared/design.md, end to end through real processes.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { Datastore } from "../src/datastore/datastore.ts";
import { lsetxattr } from "../src/sys/posix.ts";
import { helpFor } from "../src/cli/main.ts";
import { tempDir } from "./helpers.ts";

const MAIN = new URL("../src/cli/main.ts", import.meta.url).pathname;
const tmp = tempDir("gorde-cli-");
const cache = path.join(tmp.dir, "compile-cache");

function gorde(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: { ...process.env, NODE_COMPILE_CACHE: cache } });
  return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
}

function json<T>(...args: string[]): T {
  const r = gorde(...args, "--json");
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as T;
}

void describe("gorde command line", () => {
  after(() => tmp.cleanup());
  const repo = path.join(tmp.dir, "repo");
  const src = path.join(tmp.dir, "src");
  fs.mkdirSync(path.join(src, "etc"), { recursive: true });
  fs.writeFileSync(path.join(src, "etc/hostname"), "web\n");

  void it("help, version and unknown commands", () => {
    assert.equal(gorde("--help").code, 0);
    assert.match(gorde("--help").out, /Exit codes/);
    const r = gorde("frobnicate");
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown command/);
  });

  void it("calendar prints the next elapses in UTC, the event read in the local time zone", () => {
    const run = (tz: string, ...a: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, "calendar", ...a], { env: { ...process.env, TZ: tz, NODE_COMPILE_CACHE: cache } });
      return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
    };
    const utc = run("UTC", "mon..fri 22:30", "--from", "2026-11-27T23:00:00Z", "--iterations", "3");
    assert.equal(utc.out, "2026-11-30T22:30:00Z\n2026-12-01T22:30:00Z\n2026-12-02T22:30:00Z\n");
    // 22:30 in Tokyo (UTC+9, no DST) is 13:30 UTC.
    assert.equal(run("Asia/Tokyo", "22:30", "--from", "2026-11-25T00:00:00Z", "--iterations", "1").out, "2026-11-25T13:30:00Z\n");
    assert.equal(run("UTC", "2015-10-21", "--from", "2026-01-01T00:00:00Z").out, "", "no elapse left: no line");
    const bad = run("UTC", "mon..fry 12:00");
    assert.equal(bad.code, 2);
    assert.match(bad.err, /at 6: "fry" is not a weekday/);
    assert.equal(run("UTC", "daily", "--from", "yesterday").code, 2);
  });

  void it("plan check: the plan's problems with their lines; guests against their RPO", () => {
    const store = path.join(tmp.dir, "plan-repo");
    assert.equal(gorde("init", store).code, 0);
    const old = new Date(Date.now() - 3 * 86_400_000).toISOString().replace(/\.\d{3}Z$/, "Z");
    assert.equal(gorde("backup", store, "vm/100", `root.tree=${src}`).code, 0);
    assert.equal(gorde("backup", store, "ct/101", `root.tree=${src}`, "--time", old).code, 0);
    const plan = path.join(tmp.dir, "plan.yaml");
    const text = "version: 1\nguests:\n  100: { rpo: 26h }\n  101: { rpo: 26h }\njobs:\n  - { name: nightly, type: backup, schedule: daily, guests: all, keep: { last: 3 } }\n";
    fs.writeFileSync(plan, text);
    const r = gorde("plan", "check", plan, "--repo", store, "--json");
    assert.equal(r.code, 1, "guest 101 is out of its RPO");
    const out = JSON.parse(r.out) as { ok: boolean; guests: { guest: number; withinRpo: boolean; lastBackup: string; kept: string[] }[]; jobs: { next: string[] }[] };
    assert.equal(out.ok, false);
    assert.deepEqual(out.guests.map((g) => [g.guest, g.withinRpo]), [[100, true], [101, false]]);
    assert.equal(out.guests[1]!.lastBackup, `ct/101/${old}`);
    assert.deepEqual(out.guests[1]!.kept, [`ct/101/${old}`], "the job's retention is previewed on a local repository too");
    assert.equal(out.jobs[0]!.next.length, 3);
    fs.writeFileSync(plan, text.replace("{ rpo: 26h }\n  101: { rpo: 26h }", "{ rpo: 26h }"));
    const unknown = gorde("plan", "check", plan);
    assert.equal(unknown.code, 0, unknown.err);
    fs.writeFileSync(plan, text.replace("guests: all", "guests: [100, 105]"));
    const bad = gorde("plan", "check", plan);
    assert.equal(bad.code, 5);
    assert.match(bad.err, /plan .*plan.yaml line 6: job nightly names guest 105, which the plan's guests do not list/);
  });

  void it("plan check: each guest's tested RPO, its newest passed drill against drill-every", async () => {
    const store = path.join(tmp.dir, "drill-repo");
    assert.equal(gorde("init", store).code, 0);
    const day = 86_400_000;
    const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
    const now = Date.now();
    for (const t of [now - 9 * day, now - 2 * day]) assert.equal(gorde("backup", store, "vm/100", `root.tree=${src}`, "--time", iso(t)).code, 0);
    assert.equal(gorde("backup", store, "ct/101", `root.tree=${src}`, "--time", iso(now - 3_600_000)).code, 0);
    // What a node records after its drills: the old VM snapshot passed 8 days ago, the newer failed yesterday.
    const ds = await Datastore.open(store);
    const [older, newer] = await ds.listSnapshots([], { type: "vm", id: "100" });
    await ds.setDrillState(older!, { result: "passed", time: Math.floor((now - 8 * day) / 1000), node: "node1", rtoSeconds: 41 });
    await ds.setDrillState(newer!, { result: "failed", time: Math.floor((now - day) / 1000), node: "node1", check: "note", message: "GET /cgi-bin/note answered other data" });
    const plan = path.join(tmp.dir, "drill-plan.yaml");
    const text = "version: 1\nguests:\n  100: { rpo: 3d, drill-every: 7d }\n  101: { rpo: 1d, drill-every: 7d }\njobs:\n  - { name: drills, type: drill, schedule: sun 04:00, guests: all }\n";
    fs.writeFileSync(plan, text);
    type Check = { guest: number; drillEveryHours: number | null; tested: { state: string; snapshot: string | null; snapshotAgeHours: number | null } | null };
    const r = gorde("plan", "check", plan, "--repo", store, "--json");
    assert.equal(r.code, 1, "guest 100's drill is late and guest 101 was never drilled");
    const out = JSON.parse(r.out) as { ok: boolean; guests: Check[] };
    assert.deepEqual(
      out.guests.map((g) => [g.guest, g.drillEveryHours, g.tested?.state, g.tested?.snapshot]),
      [
        [100, 168, "late", `vm/100/${iso(now - 9 * day)}`],
        [101, 168, "never", null],
      ],
    );
    assert.equal(out.guests[0]!.tested!.snapshotAgeHours, 216);
    const human = gorde("plan", "check", plan, "--repo", store);
    assert.match(human.out, /guest 100: .*\n {4}tested RPO: 216 h \(vm\/100\/\S+ passed its drill 192 h ago\), drill every 168 h: LATE\n/);
    assert.match(human.out, /guest 101: .*\n {4}tested RPO: no drill passed, drill every 168 h: NEVER TESTED\n/);
    // The newer snapshot passes a drill today: guest 100 is within; without drill-every, guest 101 is judged on its RPO alone.
    await ds.setDrillState(newer!, { result: "passed", time: Math.floor(now / 1000), node: "node1", rtoSeconds: 39 });
    fs.writeFileSync(plan, text.replace("{ rpo: 1d, drill-every: 7d }", "{ rpo: 1d }"));
    const ok = gorde("plan", "check", plan, "--repo", store, "--json");
    assert.equal(ok.code, 0, ok.out);
    const okOut = JSON.parse(ok.out) as { guests: Check[] };
    assert.deepEqual(okOut.guests.map((g) => [g.guest, g.tested?.state ?? null]), [[100, "within"], [101, null]]);
  });

  void it("namespaces keep groups apart", () => {
    assert.equal(gorde("init", repo).code, 0);
    const times = ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-03T06:00:00Z"];
    for (const t of times) assert.equal(gorde("backup", repo, "ct/101", `root.tree=${src}`, "--time", t).code, 0);
    assert.equal(gorde("backup", repo, "ct/101", `root.tree=${src}`, "--ns", "site-a/rack1", "--time", times[0]!).code, 0);
    const inNs = json<{ snapshot: string }[]>("snapshots", repo, "--ns", "site-a/rack1");
    assert.deepEqual(inNs.map((s) => s.snapshot), ["ct/101/2026-01-01T00:00:00Z"]);
    const root = json<{ snapshot: string; time: string; size: number; protected: boolean; finished: boolean }[]>("snapshots", repo);
    assert.equal(root.length, 4);
    for (const s of root) {
      assert.equal(s.finished, true);
      assert.equal(s.protected, false);
      assert.ok(s.size > 0);
      assert.match(s.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    }
  });

  void it("notes, protect, ls and forget", () => {
    assert.equal(gorde("notes", repo, "ct/101/latest", "before the upgrade").code, 0);
    assert.equal(gorde("notes", repo, "ct/101/latest").out, "before the upgrade\n");
    assert.equal(gorde("protect", repo, "ct/101/2026-01-01T00:00:00Z").code, 0);
    const refused = gorde("forget", repo, "ct/101/2026-01-01T00:00:00Z");
    assert.equal(refused.code, 2);
    assert.match(refused.err, /protected/);
    const ls = json<{ path: string; kind: string; size: number }[]>("ls", repo, "ct/101/latest", "root.tree", "etc");
    assert.deepEqual(ls.map((e) => [e.path, e.kind, e.size]), [["etc/hostname", "file", 4]]);
  });

  void it("prune --dry-run --json lists every snapshot and removes nothing; prune removes", () => {
    const plan = json<{ snapshot: string; action: string }[]>("prune", repo, "ct/101", "--keep-daily", "2", "--dry-run");
    assert.deepEqual(plan, [
      { snapshot: "ct/101/2026-01-03T06:00:00Z", action: "keep" },
      { snapshot: "ct/101/2026-01-03T00:00:00Z", action: "remove" },
      { snapshot: "ct/101/2026-01-02T00:00:00Z", action: "keep" },
      { snapshot: "ct/101/2026-01-01T00:00:00Z", action: "protected" },
    ]);
    assert.equal(json<unknown[]>("snapshots", repo, "ct/101").length, 4);
    json("prune", repo, "ct/101", "--keep-daily", "2");
    assert.deepEqual(
      json<{ snapshot: string }[]>("snapshots", repo, "ct/101").map((s) => s.snapshot),
      ["ct/101/2026-01-01T00:00:00Z", "ct/101/2026-01-02T00:00:00Z", "ct/101/2026-01-03T06:00:00Z"],
    );
    const gc = json<{ removedChunks: number; missingChunks: number }>("gc", repo, "--cutoff", "0");
    assert.equal(gc.missingChunks, 0);
    assert.equal(gorde("verify", repo).code, 0);
  });

  void it("refuses a bad chunk size or compression level before writing anything", () => {
    for (const [flag, value, phrase] of [
      ["--chunk-size", "1000", /chunk size 1000 is not a power of two/],
      ["--chunk-size", "8388608", /between 64 KiB and 4 MiB/],
      ["--compression-level", "42", /compression level 42/],
      ["--compression-level", "-1", /argument is ambiguous; see gorde backup --help\.$/m],
      ["--compression-level", "x", /non-negative whole number/],
    ] as const) {
      const r = gorde("backup", repo, "host/bad", `root.tree=${src}`, flag, value);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, phrase);
    }
    assert.equal(fs.existsSync(path.join(repo, "host", "bad")), false);
  });

  void it("every command answers --help with its own lines, and a bad option points there", async () => {
    const { COMMANDS } = await import("../src/cli/commands.ts");
    for (const name of Object.keys(COMMANDS)) {
      const text = helpFor(name);
      assert.match(text, new RegExp(`^ {2}${name}\\b`, "m"), `gorde --help says nothing of ${name}`);
    }
    const r = gorde("backup", "--help");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^ {2}backup <repo> <group> <archive>=<source>\.\.\./m);
    assert.match(r.out, /--keyfile <file>/);
    assert.doesNotMatch(r.out, /^ {2}restore /m, "only the command's own lines");
    const bad = gorde("gc", "--nope");
    assert.equal(bad.code, 2);
    assert.match(bad.err, /^gorde gc: Unknown option '--nope'.*; see gorde gc --help\.$/m);
  });

  void it("restore goes on past what the target refuses, names each in one sentence, and exits 1", () => {
    // A folder chain whose deepest file fits the source's path but not the (longer) target's.
    const deepSrc = path.join(tmp.dir, "d");
    const link = ["web", "x".repeat(200)];
    let rel = "";
    for (let i = 0; i < 19; i++) rel = path.join(rel, `${i}${"d".repeat(200)}`);
    fs.mkdirSync(path.join(deepSrc, rel), { recursive: true });
    fs.writeFileSync(path.join(deepSrc, rel, "deep.txt"), "deep\n");
    fs.writeFileSync(path.join(deepSrc, "top.txt"), link.join("\n"));
    const store = path.join(tmp.dir, "deep-repo");
    assert.equal(gorde("init", store).code, 0);
    const b = gorde("backup", store, "ct/102", `root.tree=${deepSrc}`);
    assert.equal(b.code, 0, b.err);
    const target = path.join(tmp.dir, "t".repeat(200), "u".repeat(200));
    const r = gorde("restore", store, "ct/102/latest", "root.tree", target);
    assert.equal(r.code, 1, r.err);
    const lines = r.err.trim().split("\n");
    // The folder the target cannot hold, then what is below it.
    assert.ok(lines.some((l) => /^gorde restore: \S+\/18d+ was not restored: its name or path is too long for the target file system\.$/.test(l)), r.err);
    assert.ok(lines.some((l) => /^gorde restore: \S+\/deep\.txt was not restored: a folder above it could not be made\.$/.test(l)), r.err);
    assert.match(lines.at(-1)!, /entries of root\.tree could not be restored as they were \(listed above\); the rest is in /);
    assert.equal(fs.readFileSync(path.join(target, "top.txt"), "utf8"), link.join("\n"), "the rest is restored");
    // With --json: the document lists them too.
    const target2 = `${target}2`;
    const j = gorde("restore", store, "ct/102/latest", "root.tree", target2, "--json");
    assert.equal(j.code, 1);
    const doc = JSON.parse(j.out) as { skipped: { path: string; reason: string }[] };
    assert.ok(doc.skipped.length > 0 && doc.skipped.every((x) => x.reason.endsWith(".")), j.out);
  });

  void it("restore onto a file system without extended attributes restores every file, names each attribute refused, and exits 1", (t) => {
    const src2 = path.join(tmp.dir, "xattr-src");
    fs.mkdirSync(path.join(src2, "etc"), { recursive: true });
    fs.writeFileSync(path.join(src2, "etc", "labelled.conf"), "labelled\n");
    fs.writeFileSync(path.join(src2, "plain.txt"), "plain\n");
    try {
      lsetxattr(path.join(src2, "etc", "labelled.conf"), "user.origin", Buffer.from("web"));
    } catch {
      return t.skip(`SKIPPED: the file system of ${tmp.dir} has no user xattrs to back up`);
    }
    if (process.getuid?.() !== 0) return t.skip("SKIPPED: mounting a ramfs (no xattrs) in a mount namespace of its own needs root");
    const store = path.join(tmp.dir, "xattr-repo");
    assert.equal(gorde("init", store).code, 0);
    const b = gorde("backup", store, "ct/103", `root.tree=${src2}`);
    assert.equal(b.code, 0, b.err);
    // ramfs keeps no extended attributes (ENOTSUP); mounted in a namespace of its own, nothing
    // outside this command sees it, and it goes with the namespace.
    const mnt = path.join(tmp.dir, "ramfs");
    fs.mkdirSync(mnt);
    const script = `mount -t ramfs none "$1" && "$2" "$3" restore "$4" ct/103/latest root.tree "$1/out"; echo "exit=$?"; cat "$1/out/etc/labelled.conf" "$1/out/plain.txt"`;
    const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", mnt, process.execPath, MAIN, store], { env: { ...process.env, NODE_COMPILE_CACHE: cache } });
    const out = r.stdout.toString();
    const err = r.stderr.toString();
    assert.match(out, /\nexit=1\nlabelled\nplain\n$/, err);
    const lines = err.trim().split("\n");
    assert.ok(lines.some((l) => /^gorde restore: \S*etc\/labelled\.conf: its extended attribute user\.origin was not restored: the target file system does not support it\.$/.test(l)), err);
    assert.match(lines.at(-1)!, /^gorde restore: 1 entry of root\.tree could not be restored as it was \(named above\); the rest is in /);
    assert.equal(fs.readdirSync(mnt).length, 0, "the ramfs was the namespace's only");
  });

  void it("restore --path brings back one file", () => {
    const out = path.join(tmp.dir, "one");
    assert.equal(gorde("restore", repo, "ct/101/latest", "root.tree", out, "--path", "etc/hostname").code, 0);
    assert.equal(fs.readFileSync(path.join(out, "etc/hostname"), "utf8"), "web\n");
  });
});
