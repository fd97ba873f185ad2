// The web interface in a real Chromium (Debian's, driven by playwright-core) against a real
// `gorde node` and `gorde server` with the demo container: log in, see the guests, back
// one up and follow its task log and progress bar to the end, switch to Basque and find no English left,
// log out; an auditor sees no button to act, and a request forged from its session is
// refused (403), as is one without the CSRF token; every page passes axe-core's checks.
// The backup server serves its own view: its datastore, verify, prune, GC and maintenance
// run from there. Screenshots of each page in both languages are saved under a temp dir
// (path printed).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Browser, Page } from "playwright-core";
import { lxcAvailable } from "../src/node/lxc.ts";
import en from "../ui/src/locales/en.json" with { type: "json" };
import eu from "../ui/src/locales/eu.json" with { type: "json" };
import { assertAccessible, browserMissing, englishIn, launchBrowser, logIn, openPage } from "./browser-fixture.ts";
import { tempDir } from "./helpers.ts";
import { type NodeProcess, type ServerProcess, freePort, gorde, startNodeProcess, startServerProcess } from "./server-fixture.ts";

const lxc = lxcAvailable();
const why = browserMissing() ?? (!lxc.ok ? lxc.why : undefined);
if (why) console.error(`\n*** SKIPPED: web interface tests: ${why}. ***\n`);

void describe("the web interface", { skip: why ?? false }, () => {
  const tmp = tempDir("gorde-web-");
  const shots = tempDir("gorde-web-screenshots-");
  let server: ServerProcess;
  let node: NodeProcess;
  let browser: Browser;
  let base: string;
  const ctPort = { value: 0 };

  before(async () => {
    server = await startServerProcess({ stateDir: path.join(tmp.dir, "server"), datastores: { store: path.join(tmp.dir, "store") } });
    node = await startNodeProcess({ name: "node1", dataDir: path.join(tmp.dir, "node1"), serverUrl: server.url("store"), serverFingerprint: server.fingerprint, serverSecret: "admin-pass-1" });
    base = `https://127.0.0.1:${node.port}`;
    const onNode = (args: string[], env: Record<string, string> = {}) => gorde([...args, "--node", node.url(), "--fingerprint", node.fingerprint], { GORDE_PASSWORD: "node-admin-1", ...env }, 120_000);
    ctPort.value = await freePort();
    for (const args of [
      ["guest", "create", "101", "--demo", "ct", "--port", String(ctPort.value)],
      ["guest", "start", "101"],
      ["guest", "backup", "101"],
      ["guest", "backup", "101"],
    ]) {
      const r = await onNode(args);
      assert.equal(r.code, 0, `gorde ${args.join(" ")}: ${r.err}`);
    }
    const planFile = path.join(tmp.dir, "plan.yaml");
    fs.writeFileSync(planFile, 'version: 1\nguests:\n  "101": { rpo: 1d }\njobs:\n  - { name: nightly, type: backup, schedule: "02:00", window: "01:00-05:00", guests: all }\n');
    const plan = await onNode(["plan", "apply", planFile]);
    assert.equal(plan.code, 0, plan.err);
    const admin = { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node.fingerprint };
    assert.equal((await gorde(["user", "add", node.url(), "auditor"], { ...admin, GORDE_NEW_PASSWORD: "auditor-pass-1" })).code, 0);
    assert.equal((await gorde(["acl", "set", node.url(), "/", "auditor", "PVEAuditor"], admin)).code, 0);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await node?.stop();
    await server?.stop();
    tmp.cleanup();
    console.log(`screenshots of the web interface: ${shots.dir}`);
  });

  const open = (): Promise<Page> => openPage(browser, base);
  const accessibility = assertAccessible;
  const shot = async (page: Page, name: string): Promise<void> => {
    await page.screenshot({ path: path.join(shots.dir, `${name}.png`), fullPage: true });
  };

  void it("logs in, shows the guests, backs one up with its task log followed to the end, speaks Basque, logs out", async () => {
    const page = await open();
    // Bad input: an empty form says so beside it and sends nothing.
    const logins: string[] = [];
    page.on("request", (r) => {
      if (r.url().endsWith("/api/access/ticket")) logins.push(r.method());
    });
    await page.getByRole("button", { name: en.login }).click();
    await page.getByRole("alert").getByText(en.loginMissing).waitFor();
    assert.deepEqual(logins, [], "nothing was sent");
    await accessibility(page, "login page");
    await shot(page, "login-en");
    await page.getByLabel(en.username).fill("admin");
    await page.getByLabel(en.password).fill("wrong-password");
    await page.getByRole("button", { name: en.login }).click();
    await page.getByRole("alert").getByText(en.loginFailed).waitFor();
    await logIn(page, "admin", "node-admin-1");
    // The cookie is out of the page's reach, and marked so.
    const cookie = (await page.context().cookies()).find((c) => c.name === "GordeSession");
    assert.ok(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", JSON.stringify(cookie));
    assert.equal(await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie), "");

    await page.getByRole("navigation").getByText("101 (ct101)").waitFor();
    await page.getByRole("cell", { name: "Container" }).waitFor();
    // Its RPO against the plan's 1 day: its last backup is minutes old.
    await page.getByRole("cell", { name: /^within \(1 day\)$/ }).waitFor();
    // The storage's usage and dedup factor, as the server counts them.
    await page.getByText(/dedup factor \d+(\.\d+)? \(/).first().waitFor();
    await accessibility(page, "datacenter");
    await shot(page, "datacenter-en");

    await page.getByRole("navigation").getByText("101 (ct101)").click();
    await page.getByRole("heading", { name: "Container 101 (ct101)" }).waitFor();
    // Files enough that the backup reads for a while: its progress shows as a bar, by archive.
    const data = path.join(tmp.dir, "node1", "rootfs", "101", "srv", "data");
    fs.mkdirSync(data, { recursive: true });
    for (let i = 0; i < 1500; i++) fs.writeFileSync(path.join(data, `f${i}`), randomBytes(48 * 1024));
    await page.getByRole("button", { name: en.backupNow }).click();
    const log = page.getByRole("region", { name: en.taskLog });
    await log.getByRole("progressbar", { name: en.taskProgress }).waitFor();
    await log.getByText(/^root\.tree \d+ %$/).waitFor();
    await log.getByText(en.taskState.ok, { exact: true }).waitFor({ timeout: 120_000 });
    assert.match((await log.locator("pre").textContent()) ?? "", /ct\/101\//);
    // Its console, read again while shown.
    await page.getByRole("button", { name: en.showConsole }).click();
    const consoleText = await page.getByRole("region", { name: en.console }).locator("pre").filter({ hasText: /\S/ }).innerText();
    assert.match(consoleText, /gorde-guest/, consoleText);
    await accessibility(page, "guest");
    await shot(page, "guest-en");
    await page.getByRole("button", { name: en.showConsole }).click();
    await page.getByRole("region", { name: en.console }).waitFor({ state: "detached" });
    // The backup server as the node's storage: a note edited, a snapshot protected, read back from the server.
    await page.getByRole("navigation").getByText(`${en.storage} store`).click();
    await page.getByRole("heading", { name: `${en.storage} store` }).waitFor();
    // Its used space and dedup factor over time: the server sampled them at its start.
    await page.getByRole("img", { name: en.usedOverTime }).locator("canvas").waitFor();
    await page.getByRole("img", { name: en.dedupOverTime }).locator("canvas").waitFor();
    const first = page.getByRole("row").filter({ hasText: "ct/101" }).first();
    const snapName = ((await first.getByRole("textbox").getAttribute("aria-label")) ?? "").replace(/^Notes of /, "");
    assert.match(snapName, /^ct\/101\/\d{4}-/);
    await first.getByRole("textbox").fill("before the upgrade, from the web");
    await first.getByRole("button", { name: en.save }).click();
    await first.getByRole("button", { name: en.save }).waitFor({ state: "detached" });
    await page.getByRole("checkbox", { name: `${snapName} protected` }).click();
    await page.getByRole("checkbox", { name: `${snapName} protected` }).and(page.locator(":checked")).waitFor();
    const onServer = await gorde(["snapshots", server.url("store"), "ct/101", "--json"], { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint });
    const stored = (JSON.parse(onServer.out) as { snapshot: string; notes: string | null; protected: boolean }[]).find((x) => x.snapshot === snapName);
    assert.deepEqual([stored?.notes, stored?.protected], ["before the upgrade, from the web", true], onServer.err);
    // Protected: forget is not offered for it.
    assert.equal(await page.getByRole("row").filter({ has: page.getByRole("checkbox", { name: `${snapName} protected` }) }).getByRole("button", { name: en.forget }).isDisabled(), true);
    // The container's file archive as folders; a file downloaded, byte-equal to the original.
    await first.getByRole("button", { name: `Browse root.tree of ${snapName}` }).click();
    const browser = page.getByRole("region", { name: `Files of ${snapName}` });
    await browser.getByRole("button", { name: "bin/" }).click();
    const [dl] = await Promise.all([page.waitForEvent("download"), browser.getByRole("button", { name: "Download bin/busybox" }).click()]);
    assert.equal(dl.suggestedFilename(), "busybox");
    const got = fs.readFileSync((await dl.path())!);
    const original = fs.readFileSync(path.join(tmp.dir, "node1", "rootfs", "101", "bin", "busybox"));
    assert.ok(original.length > 500_000, "a file of many chunks");
    assert.ok(got.equals(original), `the download is byte-equal to the original (${got.length} and ${original.length} bytes)`);
    await accessibility(page, "archive browser");
    await shot(page, "browse-en");
    await browser.getByRole("button", { name: en.close }).click();

    // The prune simulator: a bad value named beside its field, then what keep-last 1 would do.
    await page.getByLabel(en.group).selectOption("ct/101");
    const keepLast = page.getByLabel(en.keepName.keepLast);
    await keepLast.fill("x");
    await page.getByText(en.pruneBadValue).waitFor();
    await keepLast.fill("1");
    const snapshotsNow = await page.getByRole("row").filter({ hasText: "ct/101" }).count();
    // The protected newest is kept without counting; keep-last 1 keeps the next; the rest would go.
    assert.equal(snapshotsNow, 3);
    await page.getByRole("status").getByText("A prune would keep 2 and remove 1.").waitFor();
    await page.getByRole("row").filter({ hasText: "ct/101" }).nth(2).getByText(en.pruneAction.remove, { exact: true }).waitFor();
    await accessibility(page, "storage");
    await shot(page, "storage-en");

    // Restored as a new guest, started: it shows in the tree and answers the snapshot's data.
    await first.getByRole("button", { name: en.restore }).click();
    const form = page.getByRole("form", { name: `Restore ${snapName} as a guest` });
    await form.getByLabel(en.newGuestId).fill("12");
    await form.getByRole("button", { name: en.restore }).click();
    await form.getByText(en.restoreBadId).waitFor();
    await form.getByLabel(en.newGuestId).fill("201");
    await form.getByRole("button", { name: en.restore }).click();
    await page.getByRole("region", { name: en.taskLog }).getByText(en.taskState.ok, { exact: true }).waitFor({ timeout: 120_000 });
    await page.getByRole("navigation").getByText("201 (ct101-201)").click();
    await page.getByRole("heading", { name: "Container 201 (ct101-201)" }).waitFor();
    await page.getByText(en.stateName.running, { exact: true }).waitFor();

    // A drill of guest 101, run from its page: its result and checks in the history.
    await page.getByRole("navigation").getByText("101 (ct101)").click();
    await page.getByRole("button", { name: en.runDrill }).click();
    await page.getByRole("region", { name: en.taskLog }).getByText(en.taskState.ok, { exact: true }).waitFor({ timeout: 180_000 });
    const drillRow = page.getByRole("table", { name: en.drillHistory }).getByRole("row").nth(1);
    await drillRow.getByText(en.drillName.passed).waitFor();
    await drillRow.getByText("boot ✓").waitFor();
    assert.match(await drillRow.innerText(), new RegExp(`${new Date().getFullYear()},`), "the drill's start as a date of this year");
    await page.getByRole("img", { name: en.rtoOverTime }).locator("canvas").waitFor();
    await accessibility(page, "guest with drills");
    await shot(page, "guest-drill-en");
    // The dashboard: the guest's last drill and its RTO.
    await page.getByRole("navigation").getByText(en.datacenter).click();
    const guestRow = page.getByRole("table", { name: en.guests }).getByRole("row").filter({ has: page.getByRole("link", { name: "101", exact: true }) });
    await guestRow.getByText(/^passed · RTO \d+/).waitFor();
    await page.getByRole("navigation").getByText(en.tasks).click();
    await page.getByRole("cell", { name: "backup", exact: true }).first().waitFor();
    // Started times are this year's (the API counts them in milliseconds).
    const started = await page.getByRole("table").first().getByRole("row").nth(1).innerText();
    assert.match(started, new RegExp(`\\b${new Date().getFullYear()}\\b`), started);
    // Filtered: no task failed.
    await page.getByLabel(en.result).selectOption("failed");
    await page.getByRole("cell", { name: "backup", exact: true }).first().waitFor({ state: "detached" });
    await page.getByLabel(en.result).selectOption("");
    await shot(page, "tasks-en");

    // The plan: its job, a calendar event's next runs as it is typed, a bad plan refused naming its field.
    await page.getByRole("navigation").getByText(en.plan, { exact: true }).click();
    await page.getByRole("cell", { name: "nightly" }).waitFor();
    const calendar = page.getByLabel(en.calendarEvent);
    await calendar.fill("mon..fri 21:00");
    assert.equal(await page.locator("#calendar-out li").count(), 10);
    await calendar.fill("mon..fry 21:00");
    await page.locator("#calendar-out .bad").waitFor();
    assert.equal(await page.locator("#calendar-out li").count(), 0);
    await calendar.fill("daily");
    // The week: the window shaded each day, a run each night; redrawn as the plan is typed.
    const week = page.getByRole("img", { name: en.weekStrip });
    assert.equal(await week.locator('[data-job="nightly"] .window').count(), 7);
    assert.equal(await week.locator('[data-job="nightly"] .run').count(), 7);
    const planText = page.getByLabel(en.planText);
    const good = await planText.inputValue();
    await planText.fill(good.replace('schedule: "02:00"', 'schedule: "mon..fri 02:00"'));
    await page.getByText("nightly: 5 runs this week · window 01:00-05:00").waitFor();
    // A plan the parser refuses: named beside the text as it is typed, Apply not offered, nothing sent.
    const planWrites: string[] = [];
    page.on("request", (r) => {
      if (r.url().endsWith("/api/plan") && r.method() !== "GET") planWrites.push(r.method());
    });
    await planText.fill(good.replace("rpo: 1d", "rpo: soon"));
    await page.getByRole("alert").getByText(/guests\.101\.rpo is invalid/).waitFor();
    assert.equal(await page.getByRole("button", { name: en.apply }).isDisabled(), true);
    assert.deepEqual(planWrites, []);
    const kept = await page.evaluate(async () => ((await (await fetch("/api/plan")).json()) as { text: string }).text);
    assert.match(kept, /rpo: 1d/, "the refused plan changed nothing");
    await planText.fill(good);
    await accessibility(page, "plan");
    await shot(page, "plan-en");

    // Basque: no string of the English catalogue that Basque says otherwise is left on any page.
    await page.getByLabel(en.language).selectOption("eu");
    for (const [name, go] of [
      ["tasks", () => Promise.resolve()],
      ["datacenter", () => page.getByRole("navigation").getByText(eu.datacenter).click()],
      ["guest", () => page.getByRole("navigation").getByText("101 (ct101)").click()],
      ["storage", () => page.getByRole("navigation").getByText(`${eu.storage} store`).click()],
      ["plan", () => page.getByRole("navigation").getByText(eu.plan, { exact: true }).click()],
    ] as const) {
      await go();
      await page.getByRole("heading").first().waitFor();
      await page.waitForTimeout(300);
      assert.deepEqual(englishIn(await page.locator("body").innerText()), [], `English on the ${name} page in Basque`);
      await shot(page, `${name}-eu`);
    }
    assert.equal(await page.evaluate(() => (globalThis as unknown as { document: { documentElement: { lang: string } } }).document.documentElement.lang), "eu");
    // Dates as Basque writes them (the last backup's, on the guest page).
    assert.match(await page.locator("main").innerText(), /\d{4}\(e\)ko [a-z]+\. \d{1,2}\(a\) \d{2}:\d{2}:\d{2}/);
    // Remembered: a new page in this browser speaks Basque.
    await page.reload();
    await page.getByRole("button", { name: eu.logout }).click();
    await page.getByRole("button", { name: eu.login }).waitFor();
    await shot(page, "login-eu");
    // The session is over for the server too: the old cookie is refused.
    const status = await page.evaluate(async () => (await fetch("/api/guests")).status);
    assert.equal(status, 401);
    await page.context().close();
  });

  void it("logs in with an API token and its secret; the session is the token's", async () => {
    const tok = await gorde(["token", "add", node.url(), "auditor", "ui", "--json"], { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node.fingerprint });
    assert.equal(tok.code, 0, tok.err);
    const { tokenId, secret } = JSON.parse(tok.out) as { tokenId: string; secret: string };
    assert.equal(tokenId, "auditor!ui");
    // As PVE's tokens with privilege separation: its own ACL, within its user's.
    assert.equal((await gorde(["acl", "set", node.url(), "/", tokenId, "PVEAuditor"], { GORDE_PASSWORD: "node-admin-1", GORDE_FINGERPRINT: node.fingerprint })).code, 0);
    const page = await open();
    await logIn(page, tokenId, secret);
    await page.getByText("Logged in as auditor!ui").waitFor();
    await page.getByRole("navigation").getByText("101 (ct101)").waitFor();
    const who = await page.evaluate(async () => ((await (await fetch("/api/access/permissions")).json()) as { authId: string }).authId);
    assert.equal(who, "auditor!ui");
    await page.context().close();
  });

  void it("shows an auditor no button to act; a request forged from its session gets 403, one without the CSRF token too", async () => {
    const page = await open();
    await logIn(page, "auditor", "auditor-pass-1");
    await page.getByRole("navigation").getByText("101 (ct101)").click();
    await page.getByRole("heading", { name: "Container 101 (ct101)" }).waitFor();
    await page.getByRole("button", { name: en.showConsole }).waitFor();
    for (const name of [en.start, en.stop, en.backupNow]) assert.equal(await page.getByRole("button", { name, exact: true }).count(), 0, `no ${name} button`);
    await shot(page, "guest-auditor-en");
    // The storage: browsed, nothing to change.
    await page.getByRole("navigation").getByText(`${en.storage} store`).click();
    await page.getByRole("row").filter({ hasText: "ct/101" }).first().waitFor();
    assert.equal(await page.getByRole("button", { name: en.forget }).count(), 0);
    assert.equal(await page.getByRole("textbox").count(), 0);
    assert.ok(await page.getByRole("checkbox").first().isDisabled());
    const forgetForged = await page.evaluate(async () => (await fetch("/api/storage/store/protected", { method: "PUT", headers: { CSRFPreventionToken: sessionStorage.getItem("gorde.csrf") ?? "", "content-type": "application/json" }, body: JSON.stringify({ snapshot: "ct/101/latest", protected: false }) })).status);
    assert.equal(forgetForged, 403);
    const forged = await page.evaluate(async () => {
      const r = await fetch("/api/guests/101/stop", { method: "POST", headers: { CSRFPreventionToken: sessionStorage.getItem("gorde.csrf") ?? "" } });
      return { status: r.status, body: await r.text() };
    });
    assert.equal(forged.status, 403, forged.body);
    const noToken = await page.evaluate(async () => (await fetch("/api/guests/101/stop", { method: "POST" })).status);
    assert.equal(noToken, 403);
    await page.context().close();

    // The admin's session without the token: refused, the guest left running.
    const admin = await open();
    await logIn(admin, "admin", "node-admin-1");
    const r = await admin.evaluate(async () => {
      const res = await fetch("/api/guests/101/stop", { method: "POST" });
      return { status: res.status, body: await res.text() };
    });
    assert.equal(r.status, 403);
    assert.match(r.body, /CSRF token/);
    const st = spawnSync("lxc-info", ["-P", path.join(tmp.dir, "node1", "run", "101"), "-n", "ct101", "-sH"]).stdout.toString().trim();
    assert.equal(st, "RUNNING");
    await admin.context().close();
  });
  void it("refuses bad browse and download requests with one clear sentence and a 4xx", async () => {
    const page = await open();
    await logIn(page, "admin", "node-admin-1");
    const snaps = (await page.evaluate(async () => (await (await fetch("/api/storage/store/snapshots?group=ct/101")).json()) as { snapshot: string }[])).map((x) => x.snapshot);
    const snap = encodeURIComponent(snaps.at(-1)!);
    const cases: [string, number, RegExp][] = [
      [`/api/storage/store/browse?snapshot=${snap}&archive=root.tree&path=..%2Fetc`, 400, /without '\.' or '\.\.'/],
      [`/api/storage/store/browse?snapshot=${snap}&archive=root.tree&path=bin%2F..%2F..`, 400, /without '\.' or '\.\.'/],
      [`/api/storage/store/browse?snapshot=${snap}&archive=..%2Froot.tree`, 400, /file archive's name/],
      [`/api/storage/store/browse?snapshot=${snap}&archive=root.img`, 400, /file archive's name/],
      [`/api/storage/store/browse?snapshot=..%2F..%2Fetc&archive=root.tree`, 400, /snapshot/],
      [`/api/storage/store/browse?snapshot=${snap}&archive=root.tree&archive=root.tree`, 400, /archive/],
      [`/api/storage/store/browse?snapshot=${snap}&archive=root.tree&evil=1`, 400, /evil/],
      [`/api/storage/nope/browse?snapshot=${snap}&archive=root.tree`, 404, /no storage nope/],
      [`/api/storage/store/browse?snapshot=ct%2F101%2F2001-01-01T00%3A00%3A00Z&archive=root.tree`, 404, /./],
      [`/api/storage/store/download?snapshot=${snap}&archive=root.tree&path=bin`, 400, /bin in root\.tree is a dir, not a file/],
      [`/api/storage/store/download?snapshot=${snap}&archive=root.tree&path=no%2Fsuch`, 404, /has no no\/such/],
      [`/api/storage/store/download?snapshot=${snap}&archive=root.tree`, 400, /path/],
    ];
    for (const [url, status, message] of cases) {
      const r = await page.evaluate(async (u) => {
        const res = await fetch(u);
        return { status: res.status, body: await res.text() };
      }, url);
      assert.equal(r.status, status, `${url}: ${r.body}`);
      const error = (JSON.parse(r.body) as { error: string }).error;
      assert.match(error, message, url);
      assert.match(error, /^[^\n]+$/, `${url}: one line`);
    }
    await page.context().close();
  });

  void it("serves the backup server's own view: its datastore, a snapshot verified, an archive browsed and a file downloaded, a group pruned, GC, maintenance mode, in Basque too; its auditor acts on nothing", async () => {
    const srv = `https://admin@127.0.0.1:${server.port}`;
    const admin = { GORDE_PASSWORD: "admin-pass-1", GORDE_FINGERPRINT: server.fingerprint };
    assert.equal((await gorde(["user", "add", srv, "storeauditor"], { ...admin, GORDE_NEW_PASSWORD: "auditor-pass-1" })).code, 0);
    assert.equal((await gorde(["acl", "set", srv, "/datastore/store", "storeauditor", "DatastoreAudit"], admin)).code, 0);
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: "en-US" });
    const page = await ctx.newPage();
    page.on("dialog", (d) => void d.accept());
    await page.goto(`https://127.0.0.1:${server.port}`);
    await page.getByLabel(en.username).fill("admin");
    await page.getByLabel(en.password).fill("admin-pass-1");
    await page.getByRole("button", { name: en.login }).click();
    const tree = page.getByRole("navigation");
    await tree.getByText(en.backupServer).waitFor();
    // The dashboard: the datastore with its usage and dedup factor.
    await page.getByRole("table", { name: en.datastores }).getByText(/dedup factor \d+(\.\d+)? \(/).waitFor();
    await accessibility(page, "server dashboard");
    await shot(page, "server-en");

    await tree.getByText(`${en.datastore} store`).click();
    await page.getByRole("heading", { name: `${en.datastore} store` }).waitFor();
    const rows = page.getByRole("row").filter({ hasText: "ct/101" });
    await rows.first().waitFor();
    // One snapshot verified from here: its task followed to the end, its state read back.
    const newest = rows.first();
    const name = ((await newest.getByRole("button", { name: /^Verify ct\/101\// }).getAttribute("aria-label")) ?? "").replace(/^Verify /, "");
    await newest.getByRole("button", { name: `Verify ${name}` }).click();
    const log = page.getByRole("region", { name: en.taskLog });
    await log.getByText(en.taskState.ok, { exact: true }).waitFor({ timeout: 60_000 });
    await newest.getByRole("cell", { name: en.verifyName.ok, exact: true }).waitFor();
    // The container's archive browsed on the server itself; a file downloaded, byte-equal to the original.
    await newest.getByRole("button", { name: `Browse root.tree of ${name}` }).click();
    const files = page.getByRole("region", { name: `Files of ${name}` });
    await files.getByRole("button", { name: "bin/" }).click();
    const [dl] = await Promise.all([page.waitForEvent("download"), files.getByRole("button", { name: "Download bin/busybox" }).click()]);
    assert.ok(fs.readFileSync((await dl.path())!).equals(fs.readFileSync(path.join(tmp.dir, "node1", "rootfs", "101", "bin", "busybox"))), "the download is byte-equal to the original");
    await files.getByRole("button", { name: en.close }).click();
    // Prune: not offered without options; with keep-last 1, what the simulator said is what the server did.
    await page.getByLabel(en.group).selectOption("ct/101");
    const pruneNow = page.getByRole("button", { name: en.pruneNow });
    assert.equal(await pruneNow.isDisabled(), true);
    const before = await rows.count();
    await page.getByLabel(en.keepName.keepLast).fill("1");
    const said = /remove (\d+)\./.exec((await page.getByRole("status").filter({ hasText: "A prune would keep" }).innerText()) ?? "");
    const removed = Number(said?.[1]);
    assert.ok(removed >= 1, `the simulator removes some (${said?.[0]})`);
    await pruneNow.click();
    await page.getByRole("status").getByText(`ct/101 pruned: ${removed} removed.`).waitFor();
    await rows.nth(before - removed).waitFor({ state: "detached" });
    assert.equal(await rows.count(), before - removed);
    const onServer = await gorde(["snapshots", server.url("store"), "ct/101", "--json"], admin);
    assert.equal((JSON.parse(onServer.out) as unknown[]).length, before - removed, onServer.err);
    // Garbage collection, a task followed to the end.
    await page.getByRole("button", { name: en.gcNow }).click();
    await page.getByRole("region", { name: en.taskLog }).getByText(/^Task .*gc/).waitFor();
    await page.getByRole("region", { name: en.taskLog }).getByText(en.taskState.ok, { exact: true }).waitFor({ timeout: 60_000 });
    // Maintenance mode read-only and back: the server says so.
    const maintenance = page.getByLabel(en.maintenance);
    await maintenance.selectOption("read-only");
    await page.getByRole("status").getByText(`Maintenance mode: ${en.maintenanceName["read-only"]}.`).waitFor();
    const mode = async (): Promise<string> => page.evaluate(async () => ((await (await fetch("/api/datastores/store/status")).json()) as { maintenance: string }).maintenance);
    assert.equal(await mode(), "read-only");
    await maintenance.selectOption("none");
    await page.getByRole("status").getByText(`Maintenance mode: ${en.maintenanceName.none}.`).waitFor();
    assert.equal(await mode(), "none");
    await accessibility(page, "server datastore");
    await shot(page, "server-datastore-en");
    await tree.getByText(en.plan, { exact: true }).click();
    await page.getByLabel(en.planText).waitFor();
    await shot(page, "server-plan-en");

    // Basque, as on the node.
    await page.getByLabel(en.language).selectOption("eu");
    for (const [what, go] of [
      ["server", () => tree.getByText(eu.backupServer).click()],
      ["server-datastore", () => tree.getByText(`${eu.datastore} store`).click()],
      ["server-plan", () => tree.getByText(eu.plan, { exact: true }).click()],
    ] as const) {
      await go();
      await page.getByRole("heading").first().waitFor();
      await page.getByRole("table").first().waitFor();
      assert.deepEqual(englishIn(await page.locator("body").innerText()), [], `English on the ${what} page in Basque`);
      await shot(page, `${what}-eu`);
    }
    await page.getByRole("button", { name: eu.logout }).click();
    await page.getByLabel(eu.language).selectOption("en");

    // The datastore's auditor: sees the content, no button to change it; the API refuses a forged prune.
    await page.getByLabel(en.username).fill("storeauditor");
    await page.getByLabel(en.password).fill("auditor-pass-1");
    await page.getByRole("button", { name: en.login }).click();
    await tree.getByText(`${en.datastore} store`).click();
    await rows.first().waitFor();
    for (const b of [en.forget, en.pruneNow, en.gcNow, en.verifyAll]) assert.equal(await page.getByRole("button", { name: b, exact: true }).count(), 0, `no ${b} button`);
    // (a snapshot's buttons are named with it)
    for (const b of [/^Verify ct\/101\//, /^Browse root\.tree of /]) assert.equal(await page.getByRole("button", { name: b }).count(), 0, `no ${b} button`);
    assert.ok((await rows.count()) > 0, "the snapshots are listed");
    assert.equal(await page.getByLabel(en.maintenance).count(), 0);
    const forged = await page.evaluate(async () => {
      const r = await fetch("/api/datastores/store/prune", { method: "POST", headers: { CSRFPreventionToken: sessionStorage.getItem("gorde.csrf") ?? "", "content-type": "application/json" }, body: JSON.stringify({ group: "ct/101", keep: { keepLast: 1 } }) });
      return r.status;
    });
    assert.equal(forged, 403);
    await ctx.close();
  });
});
