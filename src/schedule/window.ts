// Low-load windows (`window: 01:00-05:00`, across midnight too) and the node's load, read
// from /proc: a job may start only inside its window and waits there while the node is
// busy. The decisions are pure; only `readLoad` touches the system.
import fs from "node:fs";
import { GordeError } from "../errors.ts";

export interface Window {
  readonly text: string;
  /** minutes after midnight, local time; end may be before start (the window spans midnight) */
  readonly start: number;
  readonly end: number;
}

function minutes(s: string, text: string, which: string): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(s);
  const h = Number(m?.[1]);
  const mi = Number(m?.[2]);
  if (!m || h > 24 || mi > 59 || (h === 24 && mi !== 0)) throw new GordeError("usage", `window ${JSON.stringify(text)}: its ${which} "${s}" is not a time HH:MM.`);
  return h * 60 + mi;
}

/** `HH:MM-HH:MM`; a window that never opens (start = end) is refused. */
export function parseWindow(text: string): Window {
  const parts = text.trim().split("-");
  if (parts.length !== 2) throw new GordeError("usage", `window ${JSON.stringify(text)} is not HH:MM-HH:MM.`);
  const start = minutes(parts[0]!.trim(), text, "start");
  // 24:00 as the end stays 1440: 00:00-24:00 is the whole day.
  const end = minutes(parts[1]!.trim(), text, "end");
  if (start % (24 * 60) === end % (24 * 60) && !(start === 0 && end === 24 * 60)) throw new GordeError("usage", `window ${JSON.stringify(text)} never opens: its start and end are the same time.`);
  return { text, start: start % (24 * 60), end: start === 0 ? end : end % (24 * 60) };
}

function wallMinutes(at: Date, tz: "UTC" | "local"): number {
  return tz === "UTC" ? at.getUTCHours() * 60 + at.getUTCMinutes() : at.getHours() * 60 + at.getMinutes();
}

/** Whether `at` lies inside the window. */
export function windowOpen(w: Window, at: Date, tz: "UTC" | "local" = "local"): boolean {
  const m = wallMinutes(at, tz);
  return w.start < w.end ? m >= w.start && m < w.end : m >= w.start || m < w.end;
}

/** When the window that is open at `at` closes (undefined when it is closed). */
export function windowCloses(w: Window, at: Date, tz: "UTC" | "local" = "local"): Date | undefined {
  if (!windowOpen(w, at, tz)) return undefined;
  const m = wallMinutes(at, tz);
  const left = w.end > m ? w.end - m : w.end + 24 * 60 - m;
  const d = new Date(at.getTime() + left * 60_000);
  // Whole minutes: the seconds of `at` are not part of the window.
  return new Date(Math.floor(d.getTime() / 60_000) * 60_000);
}

export interface LoadReading {
  /** 1-minute load average divided by the number of CPUs */
  loadPerCpu: number;
  /** PSI "some avg10" of CPU and I/O in percent, when the kernel has pressure stall information */
  cpuPressure?: number;
  ioPressure?: number;
}

export interface LoadLimits {
  /** busy above this load per CPU (default 1.5) */
  maxLoadPerCpu?: number;
  /** busy above this CPU pressure in percent (default 40) */
  maxCpuPressure?: number;
  /** busy above this I/O pressure in percent (default 30) */
  maxIoPressure?: number;
}

/** Why the node is too busy to start a job now, or undefined when it is not. */
export function busyReason(r: LoadReading, limits: LoadLimits = {}): string | undefined {
  const maxLoad = limits.maxLoadPerCpu ?? 1.5;
  const maxCpu = limits.maxCpuPressure ?? 40;
  const maxIo = limits.maxIoPressure ?? 30;
  if (r.loadPerCpu > maxLoad) return `load ${r.loadPerCpu.toFixed(2)} per CPU is above ${maxLoad}`;
  if (r.cpuPressure !== undefined && r.cpuPressure > maxCpu) return `CPU pressure ${r.cpuPressure}% is above ${maxCpu}%`;
  if (r.ioPressure !== undefined && r.ioPressure > maxIo) return `I/O pressure ${r.ioPressure}% is above ${maxIo}%`;
  return undefined;
}

/** `some avg10=…` of a /proc/pressure file. */
export function parsePressure(text: string): number | undefined {
  const m = /^some avg10=(\d+(?:\.\d+)?)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** The node's load now, from /proc/loadavg and /proc/pressure (absent on older kernels). */
export function readLoad(cpus: number): LoadReading {
  const avg = Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  const pressure = (file: string): number | undefined => {
    try {
      return parsePressure(fs.readFileSync(file, "utf8"));
    } catch {
      return undefined;
    }
  };
  return { loadPerCpu: avg / Math.max(1, cpus), cpuPressure: pressure("/proc/pressure/cpu"), ioPressure: pressure("/proc/pressure/io") };
}
