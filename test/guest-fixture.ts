// Talking to a demo guest's HTTP service on its 127.0.0.1 forward.
import { setTimeout as sleep } from "node:timers/promises";

/** The service's answer, polled until the guest is up (at most `ms`). */
export async function serviceGet(port: number, p: string, ms = 60_000, init?: RequestInit): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${p}`, { ...init, signal: AbortSignal.timeout(2000) });
      if (r.ok) return await r.text();
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from 127.0.0.1:${port}${p} within ${ms} ms`);
    await sleep(200);
  }
}
