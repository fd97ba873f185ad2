// A snapshot's drill state (manifest format 2), in a module of its own: the API's route
// table and the web interface use it without the manifest's codec.
import { z } from "zod";

/** the newest drill of the snapshot (format 2), like verify's state */
export const DrillStateSchema = z.strictObject({
  result: z.enum(["passed", "failed", "error"]),
  time: z.number().int(),
  node: z.string().max(253).optional(),
  /** seconds from the drill's start to every probe passing */
  rtoSeconds: z.number().nonnegative().optional(),
  /** the check that failed, and why */
  check: z.string().max(64).optional(),
  message: z.string().max(1024).optional(),
});
export type DrillState = z.infer<typeof DrillStateSchema>;
