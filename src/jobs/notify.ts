// Notifications for scheduled jobs (backup, prune, GC, verify, sync, drill): a JSON webhook or a
// plain-text mail for each target a matcher picks. A target that fails is reported, never
// thrown: a broken mail relay must not turn a finished job into a crashed one.
import tls from "node:tls";
import { createTransport } from "nodemailer";
import addressparser from "nodemailer/lib/addressparser";
import { formatBytes } from "../format/units.ts";
import { GordeError } from "../errors.ts";

/** success = info, skipped = warning, failure = error (see severityFor) */
export type Severity = "info" | "warning" | "error";
export type JobResult = "ok" | "failed" | "skipped";

export interface JobEvent {
  job: string;
  /** backup, prune, gc, verify, sync, drill */
  kind: string;
  target?: string;
  result: JobResult;
  severity: Severity;
  /** unix milliseconds */
  start: number;
  end: number;
  message: string;
  bytes?: number;
  newBytes?: number;
  reusedBytes?: number;
  log?: string;
  node?: string;
}

export interface WebhookTarget {
  type: "webhook";
  name: string;
  url: string;
  headers?: Record<string, string>;
  /** for the whole request, answer included; default 10 s */
  timeoutMs?: number;
}

export interface SmtpTarget {
  type: "smtp";
  name: string;
  host: string;
  port: number;
  /** implicit TLS from the first byte (usually port 465) */
  secure?: boolean;
  /** true: require STARTTLS; false: never use it; unset: use it when the server offers it */
  starttls?: boolean;
  user?: string;
  password?: string;
  from: string;
  to: string[];
  /** for the whole delivery; default 30 s */
  timeoutMs?: number;
}

export type NotifyTarget = WebhookTarget | SmtpTarget;

/**
 * Matchers as PBS/PVE notification matchers: by minimum severity, by job name, by result. A
 * missing or empty `jobs`/`results` does not filter. An empty matcher list matches everything.
 */
export interface Matcher {
  target: string;
  minSeverity?: Severity;
  jobs?: string[];
  results?: JobResult[];
}

export interface NotifyResult {
  target: string;
  ok: boolean;
  error?: string;
}

const WEBHOOK_TIMEOUT_MS = 10_000;
// SMTP takes several round trips, and some servers delay their greeting on purpose.
const SMTP_TIMEOUT_MS = 30_000;
const LOG_LINES = 50;
/** the log tail in a mail is also cut to this many characters: one line may be huge */
const LOG_CHARS = 16 * 1024;

const RANK: Record<Severity, number> = { info: 0, warning: 1, error: 2 };

export function severityFor(result: JobResult): Severity {
  return result === "ok" ? "info" : result === "skipped" ? "warning" : "error";
}

/**
 * Names of the targets to notify for `event`, each once, in matcher order. With no matchers
 * every name in `allTargets` is returned.
 */
export function matchTargets(event: JobEvent, matchers: Matcher[], allTargets: readonly string[] = []): string[] {
  if (matchers.length === 0) return [...new Set(allTargets)];
  const names = new Set<string>();
  for (const m of matchers) {
    if (m.minSeverity && RANK[event.severity] < RANK[m.minSeverity]) continue;
    if (m.jobs?.length && !m.jobs.includes(event.job)) continue;
    if (m.results?.length && !m.results.includes(event.result)) continue;
    names.add(m.target);
  }
  return [...names];
}

/** Throws a "usage" GordeError naming what is wrong with a configured target. */
export function checkTarget(t: NotifyTarget): void {
  if (typeof t.name !== "string" || t.name.trim() === "") throw new GordeError("usage", "a notification target has no name.");
  const bad = (why: string) => new GordeError("usage", `notification target "${t.name}": ${why}`);
  if (t.timeoutMs !== undefined && !(Number.isInteger(t.timeoutMs) && t.timeoutMs > 0)) {
    throw bad("timeoutMs must be a positive whole number of milliseconds.");
  }
  if (t.type === "webhook") {
    let url: URL;
    try {
      url = new URL(t.url);
    } catch {
      throw bad(`the webhook URL "${t.url}" is not a valid URL.`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw bad(`the webhook URL must use http or https, not ${url.protocol.slice(0, -1)}.`);
    }
    // fetch refuses such URLs; say so now rather than at the first failed job
    if (url.username || url.password) throw bad("put webhook credentials in a header, not in the URL.");
    try {
      new Headers(t.headers);
    } catch {
      throw bad("the webhook headers have an invalid name or value.");
    }
  } else if (t.type === "smtp") {
    if (typeof t.host !== "string" || t.host.trim() === "") throw bad("the SMTP host is missing.");
    if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535) throw bad(`SMTP port ${t.port} is not between 1 and 65535.`);
    if (t.secure && t.starttls) throw bad("secure (implicit TLS) and starttls exclude each other.");
    if ((t.user === undefined) !== (t.password === undefined)) throw bad("SMTP user and password go together.");
    if (typeof t.from !== "string" || t.from.trim() === "") throw bad("the sender (from) is missing.");
    if (!isMailbox(t.from)) throw bad(`the sender "${t.from}" is not one e-mail address.`);
    if (!Array.isArray(t.to) || t.to.length === 0) throw bad("the recipient list (to) is empty.");
    for (const to of t.to) if (typeof to !== "string" || !isMailbox(to)) throw bad(`the recipient "${String(to)}" is not one e-mail address.`);
  } else {
    throw bad(`unknown target type "${String((t as { type?: unknown }).type)}".`);
  }
}

/** One address, optionally with a display name: "root@node1" or "Gorde <gorde@example.com>". */
function isMailbox(s: string): boolean {
  const list = addressparser(s, { flatten: true });
  return list.length === 1 && /^[^\s@]+@[^\s@]+$/.test(list[0]!.address);
}

/**
 * Sends `event` to each target the matchers pick, all at once. Never throws for a failing
 * target: a malformed one, an unknown name, a refusal or a timeout is reported in its entry.
 */
export async function notify(event: JobEvent, targets: NotifyTarget[], matchers: Matcher[], opts: { signal?: AbortSignal } = {}): Promise<NotifyResult[]> {
  trustSystemCertificates();
  const byName = new Map(targets.map((t) => [t.name, t]));
  const names = matchTargets(event, matchers, targets.map((t) => t.name));
  return Promise.all(
    names.map(async (name): Promise<NotifyResult> => {
      const t = byName.get(name);
      if (!t) return { target: name, ok: false, error: `no notification target is named "${name}".` };
      try {
        checkTarget(t);
        if (t.type === "webhook") await postWebhook(t, event, opts.signal);
        else await sendMail(t, event, opts.signal);
        return { target: name, ok: true };
      } catch (err) {
        return { target: name, ok: false, error: reason(err) };
      }
    }),
  );
}

let systemTrusted = false;

/**
 * A mail relay or webhook receiver is checked against the host's CA store (/etc/ssl/certs,
 * where an operator installs the company CA), as PVE does, and not only against the CAs
 * bundled with Node. Once per process.
 */
function trustSystemCertificates(): void {
  if (systemTrusted) return;
  systemTrusted = true;
  const known = new Set(tls.getCACertificates("default"));
  const system = tls.getCACertificates("system").filter((c) => !known.has(c));
  if (system.length > 0) tls.setDefaultCACertificates([...known, ...system]);
}

async function postWebhook(t: WebhookTarget, event: JobEvent, outer: AbortSignal | undefined): Promise<void> {
  const headers = new Headers({ "content-type": "application/json", "user-agent": "gorde" });
  for (const [k, v] of Object.entries(t.headers ?? {})) headers.set(k, v);
  await withDeadline(t.timeoutMs ?? WEBHOOK_TIMEOUT_MS, outer, async (signal) => {
    const res = await fetch(t.url, {
      method: "POST",
      headers,
      body: JSON.stringify({ version: 1, ...event }),
      // A followed 301/302 turns the POST into a GET that may "succeed" without the event.
      redirect: "manual",
      signal,
    });
    // Read the body either way: it frees the connection, and a refusal often says why.
    const body = await res.text();
    if (!res.ok) {
      const why = body.trim().split("\n", 1)[0]!.slice(0, 200);
      throw new Error(`the webhook answered ${res.status} ${res.statusText}${why ? `: ${why}` : ""}`);
    }
  });
}

async function sendMail(t: SmtpTarget, event: JobEvent, outer: AbortSignal | undefined): Promise<void> {
  const transport = createTransport({
    host: t.host,
    port: t.port,
    secure: t.secure === true,
    requireTLS: t.starttls === true,
    ignoreTLS: t.starttls === false,
    auth: t.user !== undefined ? { user: t.user, pass: t.password } : undefined,
  });
  const { subject, text } = renderMail(event);
  try {
    await withDeadline(t.timeoutMs ?? SMTP_TIMEOUT_MS, outer, (signal) =>
      transport.sendMail({
        from: t.from,
        to: t.to,
        subject,
        text,
        // RFC 3834: keeps vacation auto-replies from answering a robot.
        headers: { "Auto-Submitted": "auto-generated" },
        signal,
      }),
    );
  } finally {
    transport.close();
  }
}

/** Runs `run` with a signal that aborts after `ms` or with `outer`, and names which one it was. */
async function withDeadline<T>(ms: number, outer: AbortSignal | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeout = AbortSignal.timeout(ms);
  try {
    return await run(outer ? AbortSignal.any([outer, timeout]) : timeout);
  } catch (err) {
    if (outer?.aborted) throw new Error("cancelled", { cause: err });
    if (timeout.aborted) throw new Error(`no answer within ${ms} ms`, { cause: err });
    throw err;
  }
}

/** One line for the report: OpenSSL's messages, for one, end in a newline. */
function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // fetch reports network errors as "fetch failed" with the useful part in the cause
  const text = err.message === "fetch failed" && err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
  // Node's hint about its flag means nothing to an operator: gorde already reads the system store.
  const hint = /unable to (verify|get local issuer)|self[- ]signed/i.test(text) ? " (is its CA installed in /etc/ssl/certs?)" : "";
  return text.replace(/; if the root CA is installed locally, try running Node\.js with --use-system-ca/, "").replace(/\s+/g, " ").trim() + hint;
}

const VERB: Record<JobResult, string> = { ok: "succeeded", failed: "failed", skipped: "was skipped" };

/** The mail for `event`: subject like "gorde: backup job nightly on node1 failed: vm/100". */
export function renderMail(event: JobEvent): { subject: string; text: string } {
  const on = event.node ? ` on ${event.node}` : "";
  const what = event.target ? `: ${event.target}` : "";
  // a header is one line: a stray newline in a job or target name must not start another
  const subject = `gorde: ${event.kind} job ${event.job}${on} ${VERB[event.result]}${what}`.replace(/\p{Cc}+/gu, " ");

  const rows: [string, string][] = [
    ["Job", event.job],
    ["Kind", event.kind],
  ];
  if (event.target) rows.push(["Target", event.target]);
  if (event.node) rows.push(["Node", event.node]);
  rows.push(["Result", `${event.result} (${event.severity})`], ["Started", iso(event.start)], ["Finished", `${iso(event.end)}${took(event.start, event.end)}`]);
  const data = (
    [
      ["total", event.bytes],
      ["new", event.newBytes],
      ["reused", event.reusedBytes],
    ] as const
  ).flatMap(([label, n]) => (n === undefined ? [] : [`${label} ${formatBytes(n)}`]));
  if (data.length) rows.push(["Data", data.join(", ")]);
  rows.push(["Message", event.message]);

  const lines = rows.map(([k, v]) => `${`${k}:`.padEnd(10)}${v}`);
  const log = event.log?.trimEnd();
  if (log) {
    const all = log.split(/\r?\n/);
    const tail = all.slice(-LOG_LINES).join("\n");
    lines.push("", all.length > LOG_LINES ? `Log (last ${LOG_LINES} of ${all.length} lines):` : "Log:");
    lines.push(tail.length > LOG_CHARS ? `…${tail.slice(-LOG_CHARS)}` : tail);
  }
  return { subject, text: lines.join("\n") + "\n" };
}

function iso(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? "unknown" : d.toISOString();
}

function took(start: number, end: number): string {
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return "";
  const s = Math.round((end - start) / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return ` (took ${h ? `${h}h ${m}m ` : m ? `${m}m ` : ""}${s % 60}s)`;
}
