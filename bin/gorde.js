#!/usr/bin/env node
// Launcher: gorde runs its TypeScript sources directly, which needs Node 24. When an
// older node started this file, hand over to the project's own Node 24.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const major = Number(process.versions.node.split(".")[0]);
const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
if (major >= 24) {
  process.env.UV_THREADPOOL_SIZE ??= "8";
  const { main: run } = await import(main);
  process.exit(await run(process.argv.slice(2)));
} else {
  const local = fileURLToPath(new URL("../node_modules/.bin/node", import.meta.url));
  if (!existsSync(local)) {
    process.stderr.write(`gorde needs Node 24 or newer (this is ${process.version}); run npm install in the gorde checkout.\n`);
    process.exit(1);
  }
  const r = spawnSync(local, [main, ...process.argv.slice(2)], { stdio: "inherit" });
  process.exit(r.status ?? 1);
}
