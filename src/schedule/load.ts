// The host's load, read from /proc: a job inside its window waits while the host is busy.
// The decision is pure; only `readLoad` touches the system.
import fs from "node:fs";

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
