// A guest's answers captured at backup time, and the check of a live answer against them.
// A backup reads each `http` probe marked `expect: "snapshot"` (a read-only GET on the
// guest's 127.0.0.1 service port) just before its point-in-time view and again once the
// view is in place and the guest runs again: equal answers (status and body) are stored in
// the manifest as `captured` (SHA-256 of the body and a short excerpt), different ones as
// `unstable`, an error as `failed`. A capture never fails the backup. A restore drill reads
// the restored service with the same `readAnswer` and judges it with `checkAnswer`.
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import type { GuestConfig, Probe } from "../api/guest-config.ts";
import { GordeError } from "../errors.ts";
import { type Capture, sha256Hex } from "../format/manifest.ts";

export type HttpProbe = Extract<Probe, { type: "http" }>;

export interface Answer {
  status: number;
  body: Buffer;
}

/** An answer larger than this is refused: probes read a note or a status page, not data. */
export const MAX_ANSWER_BYTES = 64 * 1024;
/** characters of the body kept in the manifest for people reading the snapshot */
const EXCERPT_CHARS = 256;

/**
 * One GET of `probe.path` on 127.0.0.1:`port`, within the probe's timeout; the body at
 * most MAX_ANSWER_BYTES. Throws a GordeError naming the probe and what went wrong.
 */
export function readAnswer(port: number, probe: HttpProbe, signal?: AbortSignal): Promise<Answer> {
  const where = `GET http://127.0.0.1:${port}${probe.path}`;
  const timeout = AbortSignal.timeout(probe.timeoutSeconds * 1000);
  const sig = signal ? AbortSignal.any([signal, timeout]) : timeout;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (message: string, cause?: unknown): void => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(new GordeError("io", `probe ${probe.name}: ${where} ${message}.`, { cause }));
    };
    const failed = (err: Error & { code?: string }): void => {
      if (signal?.aborted) {
        if (!settled) reject(signal.reason instanceof Error ? signal.reason : new GordeError("io", `probe ${probe.name}: ${where} was aborted.`));
        settled = true;
      } else if (timeout.aborted) fail(`gave no whole answer within ${probe.timeoutSeconds} s`, err);
      else if (err.code === "ECONNREFUSED") fail("was refused (nothing listens on the port)", err);
      else fail(`failed: ${err.message}`, err);
    };
    const req = http.get({ host: "127.0.0.1", port, path: probe.path, agent: false, signal: sig, headers: { accept: "*/*", connection: "close" } }, (res) => {
      const status = res.statusCode ?? 0;
      if (Number(res.headers["content-length"] ?? 0) > MAX_ANSWER_BYTES) return fail(`answered more than ${MAX_ANSWER_BYTES / 1024} KiB (${res.headers["content-length"]} bytes)`);
      const parts: Buffer[] = [];
      let n = 0;
      res.on("data", (b: Buffer) => {
        n += b.length;
        if (n > MAX_ANSWER_BYTES) fail(`answered more than ${MAX_ANSWER_BYTES / 1024} KiB`);
        else parts.push(b);
      });
      res.on("error", failed);
      res.on("end", () => {
        if (settled) return;
        settled = true;
        resolve({ status, body: Buffer.concat(parts) });
      });
      res.on("close", () => {
        if (!res.complete) failed(new Error("the answer was cut off"));
      });
    });
    req.on("error", failed);
  });
}

/** The body as text for messages and excerpts: at most `chars` characters, never half a surrogate pair. */
function excerpt(body: Buffer, chars: number): string {
  let s = body.subarray(0, chars * 4).toString("utf8").slice(0, chars);
  if (/[\ud800-\udbff]$/.test(s)) s = s.slice(0, -1);
  return s;
}

/** A quoted beginning of a text for a message. */
function quoted(text: string): string {
  const s = excerpt(Buffer.from(text), 40);
  return JSON.stringify(s) + (s.length < text.length ? "…" : "");
}

function shortText(body: Buffer): string {
  return quoted(body.toString("utf8"));
}

/**
 * Whether a live answer passes the probe: its expected status, `contains` and `matches`,
 * and, given a `captured` capture, the same status and body (by digest) as at backup time.
 * A capture that is `unstable` or `failed` is not compared (the message says so).
 */
export function checkAnswer(probe: HttpProbe, answer: Answer, capture?: Capture): { ok: boolean; message: string } {
  const what = `GET ${probe.path}`;
  if (answer.status !== probe.status) return { ok: false, message: `${what} answered status ${answer.status}, expected ${probe.status}.` };
  const text = answer.body.toString("utf8");
  if (probe.contains !== undefined && !text.includes(probe.contains)) return { ok: false, message: `${what} answered ${shortText(answer.body)}, which does not contain ${JSON.stringify(probe.contains)}.` };
  if (probe.matches !== undefined && !new RegExp(probe.matches).test(text)) return { ok: false, message: `${what} answered ${shortText(answer.body)}, which does not match /${probe.matches}/.` };
  if (!capture) return { ok: true, message: `${what} answered status ${answer.status}${probe.expect === "snapshot" ? " (no answer captured at backup time to compare)" : ""}.` };
  if (capture.state !== "captured") return { ok: true, message: `${what} answered status ${answer.status} (the answer at backup time was ${capture.state}: not compared).` };
  if (capture.status !== answer.status) return { ok: false, message: `${what} answered status ${answer.status}, but status ${capture.status} at backup time.` };
  const digest = sha256Hex(answer.body);
  if (digest !== capture.digest) {
    return { ok: false, message: `${what} answered ${shortText(answer.body)} (${answer.body.length} bytes), not the answer captured at backup time (${quoted(capture.excerpt ?? "")}, sha256 ${capture.digest?.slice(0, 12)}…).` };
  }
  return { ok: true, message: `${what} gave the answer captured at backup time (status ${answer.status}, sha256 ${digest.slice(0, 12)}…).` };
}

/**
 * The capture of two reads of one probe, `time` (unix seconds) that of the first: equal
 * status and body → `captured`, else `unstable`; an answer that fails the probe's own
 * checks (status, contains, matches) → `failed`, as a drill could never pass it.
 */
export function compareAnswers(a: Answer, b: Answer, probe: HttpProbe, time: number): Capture {
  const base = { probe: probe.name, path: probe.path, time };
  if (a.status !== b.status || !a.body.equals(b.body)) {
    return { ...base, state: "unstable", message: `the answers before and after the view differed: status ${a.status}, ${shortText(a.body)}; then status ${b.status}, ${shortText(b.body)}.` };
  }
  const own = checkAnswer(probe, a);
  if (!own.ok) return captureFailed(probe, time, `at backup time: ${own.message}`);
  return { ...base, state: "captured", status: a.status, digest: sha256Hex(a.body), excerpt: excerpt(a.body, EXCERPT_CHARS) };
}

export function captureFailed(probe: HttpProbe, time: number, message: string): Capture {
  return { probe: probe.name, path: probe.path, state: "failed", time, message: message.slice(0, 1024) };
}

/** The guest's probes whose answer a backup captures. */
export function snapshotProbes(config: GuestConfig): HttpProbe[] {
  return (config.healthChecks?.probes ?? []).filter((p): p is HttpProbe => p.type === "http" && p.expect === "snapshot");
}

/** One line of the backup's log for a capture; `ms`: how long its reads took. */
export function captureLine(c: Capture, ms: number[] = []): string {
  const head = `answer of probe ${c.probe} (GET ${c.path}): ${c.state}`;
  const took = ms.length ? ` (read in ${ms.map((n) => `${n} ms`).join(" and ")})` : "";
  return c.state === "captured" ? `${head}, status ${c.status}, sha256 ${c.digest}${took}` : `${head}: ${(c.message ?? "").replace(/\.$/, "")}${took}`;
}

type Read = { time: number; ms: number; answer?: Answer; error?: string };

/**
 * The two reads of a backup: `before()` right before the point-in-time view, `after()`
 * once it is in place and the guest runs again. Never throws for a probe's sake (an abort
 * of the backup still throws). Without `expect: snapshot` probes it does nothing and
 * `after()` gives undefined, so the manifest has no `captures`.
 */
export class AnswerCapture {
  readonly probes: HttpProbe[];
  private readonly port: number;
  private readonly log: (line: string) => void;
  private readonly signal: AbortSignal | undefined;
  private first: Read[] | undefined;

  constructor(config: GuestConfig, log: (line: string) => void, signal?: AbortSignal) {
    this.probes = snapshotProbes(config);
    this.port = config.httpPort;
    this.log = log;
    this.signal = signal;
  }

  private async read(probe: HttpProbe, deadline?: number): Promise<Read> {
    const t0 = Date.now();
    const time = Math.floor(t0 / 1000);
    for (;;) {
      try {
        const answer = await readAnswer(this.port, probe, this.signal);
        return { time, ms: Date.now() - t0, answer };
      } catch (err) {
        if (this.signal?.aborted) throw err;
        // A guest started again (stop mode) answers once its service is up.
        if (deadline === undefined || Date.now() >= deadline) return { time, ms: Date.now() - t0, error: (err as Error).message };
        await sleep(250, undefined, { signal: this.signal });
      }
    }
  }

  /** The first reads, all probes at once (so the view waits at most the longest timeout). */
  async before(): Promise<void> {
    if (this.probes.length === 0) return;
    this.first = await Promise.all(this.probes.map((p) => this.read(p)));
  }

  /**
   * The second reads and the captures, one log line each. `waitForService`: the guest has
   * just started again, so a read is retried until the probe's timeout.
   */
  async after(opts: { waitForService?: boolean } = {}): Promise<Capture[] | undefined> {
    const first = this.first;
    if (!first) return undefined;
    const started = Date.now();
    const results = await Promise.all(
      this.probes.map(async (probe, i): Promise<[Capture, number[]]> => {
        const a = first[i]!;
        if (!a.answer) return [captureFailed(probe, a.time, a.error ?? "no answer"), [a.ms]];
        const b = await this.read(probe, opts.waitForService ? started + probe.timeoutSeconds * 1000 : undefined);
        if (!b.answer) return [captureFailed(probe, a.time, `after the view: ${b.error ?? "no answer"}`), [a.ms, b.ms]];
        return [compareAnswers(a.answer, b.answer, probe, a.time), [a.ms, b.ms]];
      }),
    );
    for (const [c, ms] of results) this.log(captureLine(c, ms));
    return results.map(([c]) => c);
  }
}
