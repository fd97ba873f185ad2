// A progress line on stderr when it is a terminal: bytes, MB/s, ETA, new vs reused.
import type { ProgressEvent, ProgressFn } from "../client/progress.ts";
import { formatBytes } from "../format/units.ts";

export { formatBytes };

export function progressBar(stream: NodeJS.WriteStream, label: string): { fn: ProgressFn | undefined; end(): void } {
  if (!stream.isTTY) return { fn: undefined, end() {} };
  const started = Date.now();
  let last = 0;
  let shown = false;
  const draw = (e: ProgressEvent): void => {
    const secs = (Date.now() - started) / 1000;
    const rate = secs > 0 ? e.done / secs : 0;
    const eta = rate > 0 && e.total > e.done ? Math.ceil((e.total - e.done) / rate) : 0;
    const width = 24;
    const frac = e.total > 0 ? Math.min(1, e.done / e.total) : 0;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    const s = e.stats;
    const dedup = s ? `  new ${formatBytes(s.newBytes)}  reused ${formatBytes(s.reusedBytes)}` : "";
    const line = `${e.item ?? label} [${bar}] ${formatBytes(e.done)}/${formatBytes(e.total)}  ${(rate / 1e6).toFixed(0)} MB/s  ETA ${eta}s${dedup}`;
    stream.write(`\r\x1b[K${line.slice(0, (stream.columns || 120) - 1)}`);
    shown = true;
  };
  return {
    fn: (e) => {
      const now = Date.now();
      if (now - last < 100 && e.done < e.total) return;
      last = now;
      draw(e);
    },
    end() {
      if (shown) stream.write("\r\x1b[K");
    },
  };
}

/**
 * A progress line for a server task (GC, verify, sync) on a terminal: the counts the task
 * reports, and its log lines printed above the line.
 */
export function taskProgress(stream: NodeJS.WriteStream, label: string): { event(e: { type: string; line?: string; progress?: Record<string, unknown> }): void; end(): void } {
  const tty = stream.isTTY;
  let shown = false;
  let last = 0;
  const clear = (): void => {
    if (shown) stream.write("\r\x1b[K");
    shown = false;
  };
  return {
    event(e) {
      if (e.type === "log" && e.line) {
        clear();
        stream.write(`${e.line}\n`);
      } else if (e.type === "progress" && tty && e.progress) {
        const p = e.progress;
        const done = Number(p.done ?? p.snapshots ?? 0);
        const total = Number(p.total ?? 0);
        const now = Date.now();
        if (now - last < 100) return;
        last = now;
        const width = 24;
        const frac = total > 0 ? Math.min(1, done / total) : 0;
        const what = typeof p.phase === "string" ? p.phase : typeof p.snapshot === "string" ? p.snapshot : label;
        const line = `${label} ${what} [${"#".repeat(Math.round(frac * width)).padEnd(width, ".")}] ${done}${total ? `/${total}` : ""}`;
        stream.write(`\r\x1b[K${line.slice(0, (stream.columns || 120) - 1)}`);
        shown = true;
      }
    },
    end: clear,
  };
}
