// The document `gorde demo --json` prints on stdout at its end (design.md's command-line
// contract): {"ok", "steps": [{"name", "ok", "seconds"}], "recoveries": [...], "drills":
// [{"guest", "result", "rto_s"}]}. Steps are timed from one title to the next; a step that
// threw is the last one and is not ok; the demo is ok only if it has steps and all are ok.

export interface DemoStep {
  name: string;
  ok: boolean;
  seconds: number;
}

export interface DemoRecovery {
  guest: number;
  node: string;
  snapshot: string;
  mode: string;
  rpo_s: number | null;
  rto_s: number | null;
}

export interface DemoDrill {
  guest: number;
  result: "running" | "passed" | "failed" | "error";
  rto_s: number | null;
}

export interface DemoReport {
  ok: boolean;
  steps: DemoStep[];
  recoveries: DemoRecovery[];
  drills: DemoDrill[];
}

export class DemoSteps {
  readonly steps: DemoStep[] = [];
  readonly recoveries: DemoRecovery[] = [];
  readonly drills: DemoDrill[] = [];
  readonly #now: () => number;
  #current: { name: string; start: number } | null = null;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Ends the running step (it worked) and starts the next. */
  begin(name: string): void {
    this.end(true);
    this.#current = { name, start: this.#now() };
  }

  /** Ends the running step, if any. */
  end(ok: boolean): void {
    if (!this.#current) return;
    const seconds = Math.round(this.#now() - this.#current.start) / 1000;
    this.steps.push({ name: this.#current.name, ok, seconds });
    this.#current = null;
  }

  report(): DemoReport {
    const ok = this.#current === null && this.steps.length > 0 && this.steps.every((s) => s.ok);
    return { ok, steps: [...this.steps], recoveries: [...this.recoveries], drills: [...this.drills] };
  }
}
