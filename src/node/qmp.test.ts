// QEMU's monitor as a hostile peer: a line that is not QMP fails the connection with one
// sentence (every pending command rejected), it never throws out of the socket's handler.
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { after, describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { Qmp, parseQmpLine } from "./qemu.ts";

const tmp = tempDir("gorde-qmp-");
after(() => tmp.cleanup());

/** A monitor that greets, accepts qmp_capabilities, then answers the next command with `reply`. */
async function monitor(reply: string): Promise<{ sock: string; close(): void }> {
  const sock = path.join(tmp.dir, `qmp-${Math.random().toString(16).slice(2)}.sock`);
  const server = net.createServer((c) => {
    c.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + "\n");
    let n = 0;
    c.on("data", () => {
      c.write(n++ === 0 ? '{"return": {}}\n' : reply);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { sock, close: () => server.close() };
}

void describe("QMP", () => {
  for (const [what, reply, error] of [
    ["a line that is not JSON", "{not json\n", /QEMU's monitor sent a line that is not JSON/],
    ["null", "null\n", /not a JSON object/],
    ["an event without a name", '{"event": 5}\n', /an event without a name/],
    ["a message of no known kind", '{"hello": 1}\n', /neither an answer nor an event/],
  ] as const) {
    void it(`refuses ${what} in one sentence and closes the monitor`, async () => {
      const m = await monitor(reply);
      const q = await Qmp.connect(m.sock);
      try {
        await assert.rejects(q.execute("query-status"), error);
        await assert.rejects(q.execute("query-status"), /monitor is closed/);
      } finally {
        q.close();
        m.close();
      }
    });
  }

  void it("reads an error without a description, and answers and events as QEMU sends them", () => {
    assert.deepEqual(parseQmpLine('{"error": {"class": "GenericError"}}'), { kind: "error", desc: "no reason given" });
    assert.deepEqual(parseQmpLine('{"return": {"status": "running"}}'), { kind: "return", value: { status: "running" } });
    assert.deepEqual(parseQmpLine('{"event": "STOP", "data": {}}'), { kind: "event", event: "STOP", data: {} });
  });
});
