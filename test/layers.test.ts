// Layers point one way: format ← api, datastore ← client, server ← node ← cli (sys and
// errors at the bottom). Client and server share only the API schemas, never each other's
// code; the node agent backs up through the client.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

const SRC = new URL("../src/", import.meta.url).pathname;
const RANK: Record<string, number> = { "errors.ts": 0, sys: 0, format: 1, schedule: 1, api: 2, datastore: 2, jobs: 2.5, client: 3, server: 3, node: 3.5, cli: 4 };

function layerOf(rel: string): string {
  return rel.split("/")[0]!;
}

void test("no import points to a higher layer", () => {
  const wrong: string[] = [];
  const files = fs.readdirSync(SRC, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));
  assert.ok(files.length > 10);
  for (const file of files) {
    const from = layerOf(file);
    const text = fs.readFileSync(path.join(SRC, file), "utf8");
    for (const m of text.matchAll(/from\s+"(\.[^"]+)"/g)) {
      const target = path.relative(SRC, path.resolve(path.dirname(path.join(SRC, file)), m[1]!));
      const to = layerOf(target);
      if (RANK[from] === undefined || RANK[to] === undefined) {
        wrong.push(`${file}: unknown layer in ${m[1]}`);
      } else if (RANK[to]! > RANK[from]! || (RANK[to] === RANK[from] && RANK[to]! >= 2 && to !== from)) {
        wrong.push(`${file} (${from}) imports ${target} (${to})`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});
