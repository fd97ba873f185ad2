// Remotes: the other gorde servers this one may pull from, each configured by an
// administrator (PBS's remote.cfg). A sync names a remote; it never takes an address from
// whoever starts it, so nobody can make the server connect where they choose (a network
// probe whose answers would show in the task log).
//
// State: <state>/remotes.json (name, URL without a secret, certificate fingerprint) and
// <state>/remote-secrets.json (each remote's password or token secret). Both are validated
// on load and written atomically with mode 0600; only the first is ever listed. A remote is
// added secret first and removed secret last, so a crash between the two writes leaves at
// most a secret nobody names, never a remote without its secret.
import path from "node:path";
import { z } from "zod";
import { normalizeFingerprint, parseServerUrl } from "../api/connection.ts";
import { REMOTE_NAME_RE } from "../format/names.ts";
import { GordeError } from "../errors.ts";
import { isValidAuthId } from "../host/auth-roles.ts";
import { readState, writeState } from "../host/auth.ts";

/** What a listing shows of a remote: never its secret. */
export interface RemoteInfo {
  name: string;
  /** https://<user>[!<token>]@<host>:<port>/<store> */
  url: string;
  fingerprint: string;
}

/** A remote with what a sync needs to connect. */
export interface Remote extends RemoteInfo {
  host: string;
  port: number;
  authId: string;
  store: string;
  secret: string;
}

const MAX_REMOTES = 1000;
const MAX_SECRET = 1024;
const MAX_URL = 1024;

const RemotesFile = z.strictObject({
  version: z.literal(1),
  remotes: z
    .array(z.strictObject({ name: z.string().regex(REMOTE_NAME_RE), url: z.string().max(MAX_URL), fingerprint: z.string().max(200) }))
    .max(MAX_REMOTES),
});
const SecretsFile = z.strictObject({
  version: z.literal(1),
  secrets: z.record(z.string().regex(REMOTE_NAME_RE), z.string().min(1).max(MAX_SECRET)),
});

function usage(message: string): GordeError {
  return new GordeError("usage", message);
}

/**
 * A remote's URL and fingerprint, checked and in canonical form: it must name a user (or
 * token) and a datastore, and carry no password.
 */
export function parseRemote(url: string, fingerprint: string): { url: string; fingerprint: string; host: string; port: number; authId: string; store: string } {
  if (url.length > MAX_URL) throw usage(`a remote's URL is at most ${MAX_URL} characters.`);
  if (!url.startsWith("https://")) throw usage(`"${url}" is not an https:// URL: expected https://<user>[!<token>]@<host>[:<port>]/<store>.`);
  let addr: ReturnType<typeof parseServerUrl>;
  try {
    addr = parseServerUrl(url);
  } catch (err) {
    // parseServerUrl speaks of GORDE_PASSWORD; a remote's secret is given apart from its URL
    if (err instanceof GordeError && /password/.test(err.message)) throw usage("a remote's URL carries no password: give the secret on its own.");
    throw err;
  }
  if (!addr.authId || !isValidAuthId(addr.authId)) throw usage(`"${url}" names no valid user: expected https://<user>[!<token>]@<host>[:<port>]/<store>.`);
  if (addr.store === "") throw usage(`"${url}" names no datastore: expected https://<user>[!<token>]@<host>[:<port>]/<store>.`);
  if (addr.host === "") throw usage(`"${url}" names no host.`);
  const host = addr.host.includes(":") ? `[${addr.host}]` : addr.host;
  return {
    url: `https://${addr.authId}@${host}:${addr.port}/${addr.store}`,
    fingerprint: normalizeFingerprint(fingerprint),
    host: addr.host,
    port: addr.port,
    authId: addr.authId,
    store: addr.store,
  };
}

export class RemoteStore {
  private readonly remotesFile: string;
  private readonly secretsFile: string;
  private remotes: RemoteInfo[] = [];
  private secrets: Record<string, string> = {};
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(stateDir: string) {
    this.remotesFile = path.join(stateDir, "remotes.json");
    this.secretsFile = path.join(stateDir, "remote-secrets.json");
  }

  static async open(stateDir: string): Promise<RemoteStore> {
    const s = new RemoteStore(stateDir);
    s.remotes = (await readState(s.remotesFile, RemotesFile, "remotes"))?.remotes ?? [];
    s.secrets = (await readState(s.secretsFile, SecretsFile, "remote secrets"))?.secrets ?? {};
    for (const r of s.remotes) {
      try {
        parseRemote(r.url, r.fingerprint);
      } catch (err) {
        throw new GordeError("invalid", `${s.remotesFile} is not a valid remotes file: remote ${r.name}: ${(err as Error).message}`, { cause: err });
      }
      if (!Object.hasOwn(s.secrets, r.name)) throw new GordeError("invalid", `remote ${r.name} in ${s.remotesFile} has no secret in ${s.secretsFile}; remove it and add it again.`);
    }
    return s;
  }

  /** Every remote, by name, without secrets. */
  list(): RemoteInfo[] {
    return this.remotes.map((r) => ({ ...r })).sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): Remote | undefined {
    const r = this.remotes.find((x) => x.name === name);
    const secret = Object.hasOwn(this.secrets, name) ? this.secrets[name] : undefined;
    if (!r || secret === undefined) return undefined;
    return { ...r, ...parseRemote(r.url, r.fingerprint), secret };
  }

  async add(r: { name: string; url: string; fingerprint: string; secret: string }): Promise<RemoteInfo> {
    if (!REMOTE_NAME_RE.test(r.name)) throw usage(`"${r.name}" is not a valid remote name: a letter, then letters, digits, '_' or '-', at most 32.`);
    const parsed = parseRemote(r.url, r.fingerprint);
    if (r.secret.length === 0 || r.secret.length > MAX_SECRET) throw usage(`a remote's secret is 1 to ${MAX_SECRET} characters.`);
    const info: RemoteInfo = { name: r.name, url: parsed.url, fingerprint: parsed.fingerprint };
    return this.serial(async () => {
      if (this.remotes.some((x) => x.name === r.name)) throw new GordeError("exists", `remote ${r.name} exists already; remove it first to change it.`);
      if (this.remotes.length >= MAX_REMOTES) throw usage(`a server keeps at most ${MAX_REMOTES} remotes.`);
      const secrets = { ...this.secrets, [r.name]: r.secret };
      await writeState(this.secretsFile, { version: 1, secrets });
      this.secrets = secrets;
      const remotes = [...this.remotes, info];
      await writeState(this.remotesFile, { version: 1, remotes });
      this.remotes = remotes;
      return { ...info };
    });
  }

  async remove(name: string): Promise<void> {
    await this.serial(async () => {
      if (!this.remotes.some((x) => x.name === name)) throw new GordeError("not-found", `no remote ${name}.`);
      const remotes = this.remotes.filter((x) => x.name !== name);
      await writeState(this.remotesFile, { version: 1, remotes });
      this.remotes = remotes;
      const secrets = Object.fromEntries(Object.entries(this.secrets).filter(([k]) => k !== name));
      await writeState(this.secretsFile, { version: 1, secrets });
      this.secrets = secrets;
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
