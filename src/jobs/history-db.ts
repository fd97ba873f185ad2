// The SQLite files a host keeps its histories in (job runs, drills): WAL, a schema version
// in user_version, refused when a newer gorde wrote it, its tables made on first open.
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { GordeError } from "../errors.ts";

/**
 * Opens (or creates) the database at `file`; `create` runs once on a new file, which then
 * gets `version`. `what` names it in errors ("task history", "drill history").
 */
export function openHistoryDb(file: string, what: string, version: number, create: string): DatabaseSync {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  try {
    const db = new DatabaseSync(file);
    db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
    const { user_version: found } = db.prepare("PRAGMA user_version").get() as { user_version: number };
    if (found > version) throw new GordeError("unsupported", `${what} ${file} was written by a newer gorde (schema ${found}).`);
    if (found === 0) db.exec(`${create}\nPRAGMA user_version = ${version};`);
    return db;
  } catch (err) {
    if (err instanceof GordeError) throw err;
    throw new GordeError("corrupt", `${what} ${file} cannot be opened: ${(err as Error).message.replace(/\.$/, "")}.`);
  }
}
