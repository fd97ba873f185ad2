// One error type for the whole project. `code` is what callers branch on and what the
// CLI maps to an exit code; `message` is one sentence naming the problem.

export const ERROR_CODES = [
  "usage", // bad arguments
  "invalid", // malformed input: a file, an archive, an index, a manifest
  "corrupt", // stored data fails its checksum or digest
  "not-found",
  "exists",
  "locked", // another operation holds the lock
  "unsupported", // e.g. a newer format version
  "denied", // authentication failed or permission refused (a server's 401/403)
  "io",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Whether `s` (a server's answer, a task's record) names one of the codes. */
export function isErrorCode(s: unknown): s is ErrorCode {
  return (ERROR_CODES as readonly unknown[]).includes(s);
}

export class GordeError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GordeError";
    this.code = code;
  }
}

/** Refused before it was checked: too many recent failures (HTTP 429 with Retry-After). */
export class ThrottledError extends GordeError {
  readonly retryAfterMs: number;

  constructor(message: string, retryAfterMs: number) {
    super("denied", message);
    this.name = "ThrottledError";
    this.retryAfterMs = retryAfterMs;
  }
}

/** A request's connection was lost before its answer ended: not an answer of the server (a request that may be made again). */
export class ConnectionLostError extends GordeError {
  constructor(message: string, cause?: unknown) {
    super("io", message, { cause });
    this.name = "ConnectionLostError";
  }
}

export function invalid(message: string, cause?: unknown): GordeError {
  return new GordeError("invalid", message, { cause });
}

export function corrupt(message: string, cause?: unknown): GordeError {
  return new GordeError("corrupt", message, { cause });
}

/**
 * The code of the failed system call (ENOSPC, ENOENT, …) behind `err`: its own, or its
 * cause's when gorde wrapped it. Callers branch on this, never on a message's words.
 */
export function systemCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!(e instanceof GordeError) && typeof code === "string" && /^E[A-Z0-9]+$/.test(code)) return code;
  }
  return undefined;
}
