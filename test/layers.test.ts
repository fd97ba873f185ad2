// Layers point one way: format ← api, datastore ← jobs, host ← client ← node ← cli, and
// host ← server ← cli (sys and errors at the bottom). The host kit (TLS, the HTTP/2 host,
// auth, tasks) is what server and node both build on, side by side: neither imports the
// other. Client and server share only the API schemas, never each other's code; the node
// agent backs up through the client. Layers of one rank never import each other. Inside a
// layer, files import each other without a cycle (type-only imports count: a cycle of
// types is a cycle of design).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

const SRC = new URL("../src/", import.meta.url).pathname;
const RANK: Record<string, number> = {
  "errors.ts": 0,
  "schema-issue.ts": 0,
  sys: 0,
  format: 1,
  schedule: 1,
  api: 2,
  datastore: 2,
  jobs: 2.5,
  host: 2.5,
  client: 3,
  cluster: 3,
  server: 3.5,
  node: 3.5,
  cli: 4,
};
/** Layers of different ranks that still must not import each other. */
const APART: readonly (readonly [string, string])[] = [["server", "client"]];

function layerOf(rel: string): string {
  return rel.split("/")[0]!;
}

/** One relative import: the file that imports, the file imported, its line and what it takes. */
interface Import {
  from: string;
  to: string;
  line: number;
  names: string;
}

/** The relative imports (static, `export … from`, dynamic) of every non-test file under src/. */
function imports(): Import[] {
  const files = fs.readdirSync(SRC, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));
  assert.ok(files.length > 10);
  const out: Import[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(SRC, file), "utf8");
    const re = /(?:^|\n)\s*(?:import|export)\s+(type\s+)?([^;]*?)\s*from\s+"(\.[^"]+)"|import\(\s*"(\.[^"]+)"\s*\)/g;
    for (const m of text.matchAll(re)) {
      const spec = m[3] ?? m[4]!;
      const to = path.relative(SRC, path.resolve(path.dirname(path.join(SRC, file)), spec));
      const line = text.slice(0, m.index + m[0].length).split("\n").length;
      const names = m[4] !== undefined ? "(dynamic import)" : `${m[1] ?? ""}${m[2]!.replace(/\s+/g, " ")}`;
      out.push({ from: file, to, line, names });
    }
  }
  return out;
}

void test("no import points to a higher layer", () => {
  const wrong: string[] = [];
  for (const { from: file, to: target, line } of imports()) {
    const from = layerOf(file);
    const to = layerOf(target);
    if (RANK[from] === undefined || RANK[to] === undefined) {
      wrong.push(`${file}:${line}: unknown layer in ${target}`);
    } else if (
      RANK[to]! > RANK[from]! ||
      (RANK[to] === RANK[from] && RANK[to]! >= 2 && to !== from) ||
      APART.some(([a, b]) => (from === a && to === b) || (from === b && to === a))
    ) {
      wrong.push(`${file}:${line} (${from}) imports ${target} (${to})`);
    }
  }
  assert.deepEqual(wrong, []);
});

/** The sets of files that import each other in a loop (Tarjan's strongly connected components). */
function loops(next: Map<string, Import[]>): Set<string>[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: Set<string>[] = [];
  let counter = 0;
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const { to } of next.get(v) ?? []) {
      if (!index.has(to)) {
        visit(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) {
        low.set(v, Math.min(low.get(v)!, index.get(to)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const c = new Set<string>();
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.add(w);
      } while (w !== v);
      if (c.size > 1 || (next.get(v) ?? []).some((e) => e.to === v)) found.push(c);
    }
  };
  for (const f of [...next.keys()].sort()) if (!index.has(f)) visit(f);
  return found;
}

/**
 * The import cycles among `edges`, one sentence per import to change. In a cycle, the file
 * that imports more files is the higher one (a registry, an entry point): the import to
 * change is the one pointing up to it from a file below, whose shared part belongs in a
 * file of its own that both import. That import is set aside and the search repeated,
 * until no cycle is left.
 */
export function cycles(edges: readonly Import[]): string[] {
  const fanOut = new Map<string, Set<string>>();
  for (const e of edges) fanOut.set(e.from, (fanOut.get(e.from) ?? new Set()).add(e.to));
  const up = (e: Import): number => (fanOut.get(e.to)?.size ?? 0) - (fanOut.get(e.from)?.size ?? 0);
  let rest = [...edges];
  const found: string[] = [];
  while (true) {
    const next = new Map<string, Import[]>();
    for (const e of rest) next.set(e.from, [...(next.get(e.from) ?? []), e]);
    const comps = loops(next);
    if (comps.length === 0) return found;
    for (const inside of comps) {
      // Ties go by name, so the message is stable.
      const cut = [...inside]
        .flatMap((f) => (next.get(f) ?? []).filter((e) => inside.has(e.to)))
        .sort((a, b) => up(b) - up(a) || a.from.localeCompare(b.from) || a.to.localeCompare(b.to))[0]!;
      // The way back from the imported file to the importing one, shortest first.
      const back = new Map<string, string>([[cut.to, ""]]);
      const queue = [cut.to];
      while (queue.length > 0 && !back.has(cut.from)) {
        const v = queue.shift()!;
        for (const { to } of next.get(v) ?? []) {
          if (inside.has(to) && !back.has(to)) {
            back.set(to, v);
            queue.push(to);
          }
        }
      }
      const loop = [cut.from];
      for (let v = cut.from; v !== cut.to; v = back.get(v)!) loop.unshift(back.get(v)!);
      found.push(
        `src/${cut.from}:${cut.line} imports ${cut.names} from src/${cut.to}, which imports it back (${loop.map((f) => `src/${f}`).join(" → ")}): ` +
          `change that import, moving what it takes into a file that src/${cut.to} and src/${cut.from} both import`,
      );
      rest = rest.filter((e) => e !== cut);
    }
  }
}

void test("no import cycle between files", () => {
  assert.deepEqual(cycles(imports()), []);
});

void test("a cycle is found and the import from the lower file named", () => {
  const edge = (from: string, to: string, names = "{ x }"): Import => ({ from, to, line: 3, names });
  // commands.ts registers the commands; plan-command.ts takes a helper back from it.
  const graph = [
    edge("cli/main.ts", "cli/commands.ts"),
    edge("cli/commands.ts", "cli/plan-command.ts", "{ planCommand }"),
    edge("cli/commands.ts", "cli/progress-bar.ts"),
    edge("cli/commands.ts", "client/remote.ts"),
    edge("cli/plan-command.ts", "cli/commands.ts", "{ type Command, withRepo }"),
  ];
  assert.deepEqual(cycles(graph), [
    "src/cli/plan-command.ts:3 imports { type Command, withRepo } from src/cli/commands.ts, which imports it back " +
      "(src/cli/commands.ts → src/cli/plan-command.ts): change that import, moving what it takes into a file that " +
      "src/cli/commands.ts and src/cli/plan-command.ts both import",
  ]);
  // Two files in one loop with a third: each import to change is named.
  assert.equal(cycles([...graph, edge("cli/key-command.ts", "cli/commands.ts"), edge("cli/commands.ts", "cli/key-command.ts")]).length, 2);
  // A longer loop and a file that imports itself.
  assert.equal(cycles([edge("a.ts", "b.ts"), edge("b.ts", "c.ts"), edge("c.ts", "a.ts")]).length, 1);
  assert.equal(cycles([edge("a.ts", "a.ts")]).length, 1);
  assert.deepEqual(cycles([edge("a.ts", "b.ts"), edge("b.ts", "c.ts")]), []);
});

void test("writeFileAtomic and fsyncDir are defined once, in src/sys/atomic-write.ts, and imported from there", () => {
  const files = fs.readdirSync(SRC, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));
  const wrong: string[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(SRC, file), "utf8");
    for (const m of text.matchAll(/\bfunction\s+(writeFileAtomic|fsyncDir)\b|\bexport\s*\{[^}]*\b(writeFileAtomic|fsyncDir)\b[^}]*\}/g)) {
      if (file !== "sys/atomic-write.ts") wrong.push(`src/${file}: ${m[0].replace(/\s+/g, " ")} (import it from src/sys/atomic-write.ts instead)`);
    }
  }
  for (const { from, to, line, names } of imports()) {
    if (/\b(writeFileAtomic|fsyncDir)\b/.test(names) && to !== "sys/atomic-write.ts") wrong.push(`src/${from}:${line} imports ${names} from src/${to}, not src/sys/atomic-write.ts`);
  }
  assert.deepEqual(wrong, []);
});

void test("the web interface imports from src/ only the API's routes and types and the pure schedule and prune modules, and nothing of Node", () => {
  const UI = new URL("../ui/src/", import.meta.url).pathname;
  const allowed = (rel: string): boolean => rel.startsWith("api/") || rel.startsWith("schedule/") || rel === "datastore/prune.ts";
  const wrong: string[] = [];
  const reached = new Set<string>();
  const visit = (file: string): void => {
    if (reached.has(file)) return;
    reached.add(file);
    const text = fs.readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s+(type\s+)?[^;]*?\s*from\s+"([^"]+)"/g)) {
      const spec = m[2]!;
      if (spec.startsWith("node:")) wrong.push(`${path.relative(SRC, file)} imports ${spec}`);
      if (!spec.startsWith(".") || m[1]) continue;
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(SRC)) {
        if (target.startsWith(UI) && /\.tsx?$/.test(target)) visit(target);
        continue;
      }
      if (file.startsWith(UI) && !allowed(path.relative(SRC, target))) wrong.push(`${path.relative(UI, file)} imports src/${path.relative(SRC, target)}`);
      visit(target);
    }
  };
  for (const f of fs.readdirSync(UI, { recursive: true, encoding: "utf8" })) if (/\.tsx?$/.test(f)) visit(path.join(UI, f));
  assert.ok([...reached].some((f) => f.startsWith(SRC)), "the interface uses the API's own modules");
  assert.deepEqual(wrong, []);
});
