// How long an admin's login takes on `gorde server` while another user's password is
// being guessed: a fresh server per round, user alice, a burst of wrong passwords for her
// sent at once over a few HTTP/2 connections, and admin's first request (on a connection
// of its own, so no cached check helps it) sent 100 ms into the burst.
//
//   node bench/login-burst.ts [--rounds 5] [--burst 200]
import { spawn, type ChildProcess } from "node:child_process";
import fsp from "node:fs/promises";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { AuthStore, formatAuthorization } from "../src/host/auth.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "5" }, burst: { type: "string", default: "200" } } });
const ROUNDS = Number(values.rounds);
const BURST = Number(values.burst);
const BIN = path.join(import.meta.dirname, "..", "bin", "gorde.js");

async function startServer(dir: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [BIN, "server", "--listen", "127.0.0.1:0", "--state-dir", path.join(dir, "state"), "--datastore", `main=${path.join(dir, "ds")}`], {
    env: { ...process.env, GORDE_ADMIN_PASSWORD: "correct horse battery" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /listening on .*:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });
  return { child, port };
}

function request(session: http2.ClientHttp2Session, auth: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": "/api/datastores", authorization: auth });
    let status = 0;
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", () => undefined);
    req.on("end", () => resolve(status));
    req.on("error", reject);
    req.end();
  });
}

function connect(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

const admin: number[] = [];
const quiet: number[] = [];
const bursts: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "gorde-login-burst-"));
  try {
    // alice exists before the server starts, with the default scrypt cost
    const store = await AuthStore.open(path.join(dir, "state"));
    await store.createFirstAdmin("admin", "correct horse battery");
    await store.addUser("alice", "alice's real password");
    const { child, port } = await startServer(dir);
    try {
      // an admin login with nothing else going on
      const q = await connect(port);
      let t = performance.now();
      if ((await request(q, formatAuthorization("admin", "correct horse battery"))) !== 200) throw new Error("admin's quiet login failed");
      quiet.push(performance.now() - t);
      q.close();

      const attackers = await Promise.all(Array.from({ length: 4 }, () => connect(port)));
      const adminSession = await connect(port);
      const statuses = new Map<number, number>();
      t = performance.now();
      const burst = Promise.all(
        Array.from({ length: BURST }, (_, i) =>
          request(attackers[i % attackers.length]!, formatAuthorization("alice", `guess-${i}`)).then((s) => statuses.set(s, (statuses.get(s) ?? 0) + 1)),
        ),
      ).then(() => performance.now() - t);
      await new Promise((r) => setTimeout(r, 100));
      const a = performance.now();
      const status = await request(adminSession, formatAuthorization("admin", "correct horse battery"));
      const adminMs = performance.now() - a;
      if (status !== 200) throw new Error(`admin's login during the burst answered ${status}`);
      admin.push(adminMs);
      const burstMs = await burst;
      bursts.push(burstMs);
      console.log(
        `round ${round + 1}: quiet admin ${quiet.at(-1)!.toFixed(0)} ms, admin during burst ${adminMs.toFixed(0)} ms, burst of ${BURST} answered in ${burstMs.toFixed(0)} ms (${[...statuses].map(([s, n]) => `${n}×${s}`).join(", ")})`,
      );
      for (const s of [...attackers, adminSession]) s.close();
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
console.log(
  `median of ${ROUNDS}: quiet admin ${median(quiet).toFixed(0)} ms, admin during burst ${median(admin).toFixed(0)} ms, burst ${median(bursts).toFixed(0)} ms`,
);
