// Following a server task whose connection is cut: the task runs on, and the client follows
// it again on a new connection, every log line once, to its end.
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startServer, type GordeServer } from "../server/server.ts";
import { parseGroup } from "../format/names.ts";
import { runBackup } from "./backup.ts";
import { RemoteRepository } from "./remote.ts";
import type { TaskProgressEvent } from "./repository.ts";
import { tempDir } from "../../test/helpers.ts";
import { userBlocks, writeUserImage, writeUserTree } from "../../test/user-data.ts";

const PASSWORD = "admin-pass-1";

/** A TCP relay to the server whose connections can be cut, as a link that drops. */
async function relay(to: number): Promise<{ port: number; cut(): number; close(): Promise<void> }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(to, "127.0.0.1");
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut: () => {
      const n = open.size;
      for (const s of open) s.destroy();
      return n;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

void describe("followTask", () => {
  const tmp = tempDir("gorde-follow-");
  let server: GordeServer;

  before(async () => {
    server = await startServer({ stateDir: path.join(tmp.dir, "state"), host: "127.0.0.1", port: 0, datastores: { main: path.join(tmp.dir, "main") }, adminPassword: PASSWORD, authFailureDelayMs: 0 });
    // Something to verify: a user's disk image and tree, twice.
    const blocks = userBlocks(3);
    const image = path.join(tmp.dir, "disk.img");
    const tree = path.join(tmp.dir, "tree");
    writeUserImage(image, blocks);
    writeUserTree(tree, blocks);
    const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${server.port}/main`, { secret: PASSWORD, fingerprint: server.fingerprint });
    try {
      for (let i = 0; i < 2; i++) {
        await runBackup({ group: parseGroup("vm/100"), sources: [{ archive: "disk0.img", source: image }, { archive: "root.tree", source: tree }] }, (req) => repo.openBackup(req));
      }
    } finally {
      repo.close();
    }
  });

  after(async () => {
    await server?.close();
    tmp.cleanup();
  });

  void it("a task's stream cut off is followed again to the task's end, each log line once", async () => {
    const link = await relay(server.port);
    const repo = await RemoteRepository.connect(`https://admin@127.0.0.1:${link.port}/main`, { secret: PASSWORD, fingerprint: server.fingerprint });
    try {
      const events: TaskProgressEvent[] = [];
      let cuts = 0;
      const report = await repo.verify([], undefined, {
        onEvent: (e) => {
          events.push(e);
          // The link drops right after the first line came.
          if (e.type === "log" && cuts === 0) cuts = link.cut();
        },
      });
      assert.ok(cuts > 0, "the connection was cut");
      assert.equal(report.snapshots.length, 2);
      const numbers = events.filter((e) => e.type === "log").map((e) => e.n);
      assert.deepEqual(numbers, numbers.map((_, i) => i), "every log line once, in order");
      assert.equal(events.filter((e) => e.type === "end").length, 1);
      assert.equal(events.at(-1)?.type, "end");
    } finally {
      repo.close();
      await link.close();
    }
  });
});
