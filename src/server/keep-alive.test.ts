// A client whose link is cut mid-backup sends no FIN and no RST: the server notices it by an
// unanswered ping and aborts its session, so the group's next backup is not refused for
// minutes ("another backup is running") until the idle timeout.
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { RemoteRepository } from "../client/remote.ts";
import { parseGroup } from "../format/names.ts";
import { tempDir } from "../../test/helpers.ts";
import { type GordeServer, startServer } from "./server.ts";

const PASSWORD = "admin-pass-1";
const GROUP = parseGroup("vm/100");

void describe("server keep-alive", () => {
  const tmp = tempDir("gorde-keepalive-");
  let server: GordeServer;

  before(async () => {
    server = await startServer({
      stateDir: path.join(tmp.dir, "state"),
      host: "127.0.0.1",
      port: 0,
      datastores: { main: path.join(tmp.dir, "main") },
      adminPassword: PASSWORD,
      authFailureDelayMs: 0,
      keepAlive: { everyMs: 200, timeoutMs: 500 },
    });
  });

  after(async () => {
    await server?.close();
    tmp.cleanup();
  });

  void it("aborts the backup session of a client that went silent, and the group's next backup opens", { timeout: 30_000 }, async () => {
    const sockets: net.Socket[] = [];
    let frozen = false;
    // A relay that can go silent: the client's link cut, as the server sees it.
    const relay = net.createServer((client) => {
      const up = net.connect(server.port, "127.0.0.1");
      sockets.push(client, up);
      for (const s of [client, up]) s.on("error", () => undefined);
      client.on("data", (b: Buffer) => void (frozen || up.write(b)));
      up.on("data", (b: Buffer) => void (frozen || client.write(b)));
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const relayPort = (relay.address() as { port: number }).port;
    const connect = (port: number): Promise<RemoteRepository> =>
      RemoteRepository.connect(`https://admin@127.0.0.1:${port}/main`, { secret: PASSWORD, fingerprint: server.fingerprint });
    const cut = await connect(relayPort);
    const direct = await connect(server.port);
    try {
      await cut.openBackup({ ns: [], group: GROUP, startedMs: Date.now(), keyFingerprint: null });
      await assert.rejects(direct.openBackup({ ns: [], group: GROUP, startedMs: Date.now(), keyFingerprint: null }), /another backup of vm\/100 is running/);
      frozen = true;
      // Its idle timeout is 5 minutes: only the unanswered ping frees the group in this time.
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          const next = await direct.openBackup({ ns: [], group: GROUP, startedMs: Date.now(), keyFingerprint: null });
          await next.abort();
          break;
        } catch (e) {
          if (!/another backup/.test((e as Error).message) || Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      direct.close();
      cut.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });
});
