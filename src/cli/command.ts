// What every command is given and returns, and the helpers the command files share:
// options read from the parsed arguments, a repository opened for the command's call.
import type { ParseArgsOptionsConfig } from "node:util";
import { GordeError } from "../errors.ts";
import { RemoteRepository } from "../client/remote.ts";
import { LocalRepository } from "../client/local-repository.ts";
import type { Repository } from "../client/repository.ts";
import { parseRate } from "../format/units.ts";

export interface CommandContext {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  signal: AbortSignal;
  out(s: string): void;
  err(s: string): void;
}

export interface Command {
  options: ParseArgsOptionsConfig;
  run(ctx: CommandContext): Promise<number | void>;
}

/**
 * A command, or how to load it: the daemons, the cluster commands and the demo pull in
 * etcd's client, X.509 and the web server, which no other command pays for at its start.
 */
export type CommandEntry = Command | (() => Promise<Command>);

export function str(ctx: CommandContext, name: string): string | undefined {
  const v = ctx.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable option's values (none when absent). */
export function strs(ctx: CommandContext, name: string): string[] | undefined {
  const v = ctx.values[name];
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === "string");
}

export function int(ctx: CommandContext, name: string): number | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new GordeError("usage", `--${name} takes a non-negative whole number, not "${v}".`);
  return Number(v);
}

/** Resolves when the command is interrupted (SIGINT, SIGTERM): daemons run until then. */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

export function isRemote(repo: string): boolean {
  return /^https?:\/\//.test(repo);
}

/** Opens a repository (a datastore directory, or an https:// URL of one on a server). */
async function openRepo(ctx: CommandContext, repo: string): Promise<Repository> {
  if (isRemote(repo)) {
    return RemoteRepository.connect(repo, {
      secret: process.env.GORDE_PASSWORD,
      fingerprint: str(ctx, "fingerprint") ?? process.env.GORDE_FINGERPRINT,
      rate: rate(ctx),
      signal: ctx.signal,
    });
  }
  if (str(ctx, "fingerprint") !== undefined) throw new GordeError("usage", "--fingerprint applies to https:// repositories only.");
  return LocalRepository.open(repo);
}

/** Opens a repository for `fn` and closes it afterwards. */
export async function withRepo<T>(ctx: CommandContext, repo: string, fn: (r: Repository) => Promise<T>): Promise<T> {
  const r = await openRepo(ctx, repo);
  try {
    return await fn(r);
  } finally {
    r.close();
  }
}

/** `--rate 10M`: bytes per second with an optional K, M or G (powers of 1024). */
function rate(ctx: CommandContext): number | undefined {
  const v = str(ctx, "rate");
  return v === undefined ? undefined : parseRate(v);
}
