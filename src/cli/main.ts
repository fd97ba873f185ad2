// gorde's command line. Only this file prints and exits; commands parse, call one
// library function and format its result.
import module from "node:module";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { GordeError, type ErrorCode } from "../errors.ts";
import type { CommandContext } from "./command.ts";

process.env.UV_THREADPOOL_SIZE ??= "8"; // directory scans and small reads in parallel
// Cache the compiled sources: besides a faster start, a process (and each worker thread)
// that finds its modules cached never loads the TypeScript stripper (~16 MiB each).
process.env.NODE_COMPILE_CACHE ??= path.join(os.tmpdir(), `gorde-compile-cache-${process.getuid?.() ?? "u"}`);
module.enableCompileCache?.(process.env.NODE_COMPILE_CACHE);
const { COMMANDS } = await import("./commands.ts");

export const EXIT_CODES: Record<ErrorCode | "ok" | "failed", number> = {
  ok: 0,
  failed: 1, // the operation failed (I/O, or verify found bad data)
  io: 1,
  usage: 2,
  "not-found": 3,
  exists: 3,
  locked: 4,
  corrupt: 5,
  invalid: 5,
  unsupported: 6,
  denied: 7,
};

const HELP = `gorde — backup and recovery for small virtualization clusters

Usage: gorde <command> [options]

Datastore commands (<repo> is a datastore directory or https://[<user>[!<token>]@]<host>[:8007]/<store>):
  init <dir>                                   create a datastore
  backup <repo> <group> <archive>=<source>...  back up block images (<name>.img=<file|device>)
                                               and directories (<name>.tree=<dir>)
        [--time <iso>] [--ns <ns>] [--exclude <glob>]... [--one-file-system]
        [--chunk-size <bytes>] [--compression-level 0-19] [--notes <text>] [--json]
        [--keyfile <file>] [--concurrency N]
  snapshots <repo> [<group>] [--json]          list snapshots (unfinished ones are marked)
  restore <repo> <snapshot> <archive> <target> [--path <p>] [--keyfile <file>] [--json]
  ls <repo> <snapshot> <archive> [<path>] [--recursive] [--keyfile <file>] [--json]
                                               (--keyfile is needed for an encrypted snapshot,
                                               and ignored, with a warning, for a plain one)
  forget <repo> <snapshot>                     remove one snapshot
  protect <repo> <snapshot> [--off]            protected snapshots are never pruned
  notes <repo> <snapshot> [<text>]             show or set a snapshot's notes
  prune <repo> <group> [--keep-last N] [--keep-hourly N] [--keep-daily N]
        [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--dry-run] [--json]
  gc <repo> [--cutoff <seconds>] [--json]      remove chunks no snapshot uses
  verify <repo> [<snapshot>] [--json]          check every chunk's CRC and digest
  calendar <event> [--from <iso>] [--iterations N]   the next elapses of a calendar event
                                               (PVE/systemd grammar, local time zone), UTC
  plan check <file> [--repo <repo>] [--json]   the plan checked, its jobs' next runs, and
                                               with a repository each guest against its RPO
                                               (exit 1 when one is out of it)
  plan apply <file> --node <url> | --server <url>
                                               shows what changes and applies it: a node runs
                                               the backup jobs, the server prune, GC and verify
                                               (nothing happens when unchanged)
  plan status --node <url> | --server <url>    each job there: last run and result, next run
  demo [--keep] [--json]                       the whole story on this machine; --json: the
                                               story on stderr, one document on stdout

Server (the password of <user> in GORDE_PASSWORD; the server's certificate pinned with
--fingerprint <fp> or GORDE_FINGERPRINT; --rate <bytes/s> limits bandwidth):
  server [--listen <host:port>] --state-dir <dir> --datastore <name>=<dir>... [--config <file>]
                                               first start: user admin, password GORDE_ADMIN_PASSWORD
  status <repo>                                usage, chunks, dedup factor, free-space warning
  maintenance <repo> none|read-only|offline
  owner <repo> <group> [<new owner>]
  user list|add|passwd|update|remove <server> [<name>]   (new password in GORDE_NEW_PASSWORD)
  token list|add|remove <server> <user> [<name>]         (the secret is shown once)
  acl list|set|remove <server> [<path> <user or token> <role>]
        roles: Admin DatastoreAdmin DatastorePowerUser DatastoreBackup DatastoreReader
               DatastoreAudit RemoteAdmin RemoteAudit RemoteSyncOperator NoAccess,
               on nodes PVEAuditor PVEVMUser;
               paths: / /datastore/<store>[/<ns>] /remote /remote/<name> /vms /vms/<id>
  remote list <server>                         the other servers a sync may pull from
  remote add <server> <name> --url https://<user>[!<token>]@<host>[:<port>]/<store>
        --remote-fingerprint <fp>              (its secret in GORDE_REMOTE_PASSWORD)
  remote remove <server> <name>
  task list|log|abort <server> [<task id>] [--running]   GC, verify and sync runs
  sync <repo> <remote> [--group <g>]... [--last N]
                                               pull snapshots from a remote into <repo>

Nodes and guests (the node's URL https://<user>@<host>[:8006] in --node or GORDE_NODE,
its password in GORDE_PASSWORD, its certificate pinned like a server's):
  node --config <file> [--listen <host:port>]  the node agent (first start: user admin,
                                               password GORDE_ADMIN_PASSWORD)
  guest list | status|config|log|start|stop|remove <id>
  guest create <id> --demo vm|ct --port <p> [--name <n>] [--memory <MiB>] [--disk-size <MiB>]
  guest create <id> --config <file>            a guest from its configuration (JSON)
  guest backup <id> [--mode snapshot|suspend|stop]   to the node's backup server
  guest restore <snapshot> [--id <new id>] [--port <p>] [--start] [--force]
  drill run <guest> [--snapshot <snapshot>] [--json]   a restore drill in a sandbox: verify,
                                               restore, boot, the guest's health checks;
                                               exit 0 only when it passed
  drill list [--guest <id>] [--json] | drill show <id> [--json]   the node's drill history

The cluster (two nodes and the backup server as witness, three etcd members):
  cluster create <name> --address <ip> [--node <url>]      on its first node
  cluster join <name> <member url> --member-fingerprint <fp> --address <ip> [--node <url>]
  cluster witness <name> <member url> --member-fingerprint <fp> --address <ip> --server <url>
                                               (the member's secret in GORDE_MEMBER_PASSWORD;
                                               --peer-port, --client-port: 2380, 2379)
  cluster status [--node <url> | --server <url>] [--json]
  ha add <vm|ct>:<id> [--max-restart N] [--max-relocate N] [--state started|stopped]
                                               a guest the cluster keeps running: restored from
                                               its newest good backup on the survivor if its
                                               node is lost
  ha remove <vm|ct>:<id> | ha status [--json] | ha recoveries [--json]

Encryption keys (passphrase in GORDE_KEY_PASSPHRASE):
  key create|info|passwd|paper <file>          passwd takes the new one from GORDE_NEW_KEY_PASSPHRASE
  key import <paper key text file> <file>      a key file back from its paper copy

<group> is vm/<id>, ct/<id> or host/<name>; <snapshot> is <group>/<YYYY-MM-DDTHH:MM:SSZ>
or <group>/latest. --ns <a/b> selects a namespace.

Exit codes: 0 success; 1 the operation failed; 2 bad usage; 3 not found or already
exists; 4 locked by another operation; 5 corrupt or malformed data (verify found
damage); 6 written by a newer gorde; 7 authentication failed or permission denied.
`;

/** The lines of HELP about command `name` (with their continuation lines). */
export function helpFor(name: string): string {
  const lines = HELP.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^ {2}\S/.test(lines[i]!) || !new RegExp(`^ {2}${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?=$|[ |])`).test(lines[i]!)) continue;
    out.push(lines[i]!);
    while (i + 1 < lines.length && /^ {6,}\S/.test(lines[i + 1]!)) out.push(lines[++i]!);
  }
  return `Usage: gorde ${name} …\n\n${out.join("\n")}\n\nRun gorde --help for every command, the repository URLs and the exit codes.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(HELP);
    return 0;
  }
  if (name === "--version") {
    process.stdout.write("gorde 0.1.0\n");
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!entry) {
    process.stderr.write(`gorde: unknown command ${JSON.stringify(name)}; run gorde --help for the list.\n`);
    return EXIT_CODES.usage;
  }
  const end = rest.indexOf("--");
  if ((end === -1 ? rest : rest.slice(0, end)).some((a) => a === "--help" || a === "-h")) {
    process.stdout.write(helpFor(name));
    return 0;
  }
  const cmd = typeof entry === "function" ? await entry() : entry;
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new GordeError("io", "interrupted."));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    } catch (err) {
      throw new GordeError("usage", `${(err as Error).message.split("\n")[0]!.replace(/\.$/, "")}; see gorde ${name} --help.`);
    }
    const ctx: CommandContext = {
      values: parsed.values as Record<string, string | boolean | string[] | undefined>,
      positionals: parsed.positionals,
      signal: abort.signal,
      out: (s) => process.stdout.write(s),
      err: (s) => process.stderr.write(s),
    };
    const code = await cmd.run(ctx);
    return code ?? 0;
  } catch (err) {
    const e = err instanceof GordeError ? err : undefined;
    const msg = e ? e.message : describe(err);
    process.stderr.write(`gorde ${name}: ${oneLine(msg)}\n`);
    return e ? EXIT_CODES[e.code] : EXIT_CODES.failed;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Errors are one line: control characters from names and paths the user gave are escaped. */
function oneLine(msg: string): string {
  // eslint-disable-next-line no-control-regex
  return msg.replace(/[\x00-\x1f\x7f]/g, (c) => JSON.stringify(c).slice(1, -1));
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOSPC") return "no space left on the device.";
  if (e?.code === "EACCES" || e?.code === "EPERM") return `permission denied${e.path ? `: ${e.path}` : ""}.`;
  return e?.message ? e.message.replace(/\.?$/, ".") : String(err);
}

if (import.meta.main) {
  // Exit once the command has ended: work it left behind (a retry's timer, a connection
  // still closing) must not hold a finished command open. Writes to stdout and stderr
  // are synchronous for files and pipes, so nothing printed is lost.
  process.exit(await main(process.argv.slice(2)));
}
