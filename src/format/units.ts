// Sizes for people: 1.5 GiB, 820 KiB (powers of 1024), in messages, mails and progress lines;
// and bandwidth limits as people write them (500K, 20M, 1G per second).
import { GordeError } from "../errors.ts";

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

/** `500K`, `20M`, `1G`, `1.5MiB/s`: bytes per second (powers of 1024), at least 1K. */
export function parseRate(v: string, what = "--rate"): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)(?:i?B)?(?:\/s)?$/i.exec(v);
  if (!m) throw new GordeError("usage", `${what} takes bytes per second like 500K, 20M or 1G, not "${v}".`);
  const n = Number(m[1]) * 1024 ** " KMG".indexOf((m[2] || " ").toUpperCase());
  if (n < 1024) throw new GordeError("usage", `${what} must be at least 1K (1024 bytes per second).`);
  return Math.floor(n);
}
