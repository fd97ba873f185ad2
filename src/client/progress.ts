import type { WriteStats } from "./chunk-writer.ts";

export interface ProgressEvent {
  /** bytes processed so far, of `total` */
  done: number;
  total: number;
  stats?: WriteStats;
  /** current file or archive, when known */
  item?: string;
}

export type ProgressFn = (e: ProgressEvent) => void;
