// The node's HA routes: the resources with their state, adding and removing one (Sys.Modify
// on /), and the recoveries this node made. A resource shows only to who may see its guest.
import { HA_ROUTES } from "../api/ha-routes.ts";
import { parseSid } from "../cluster/ha-store.ts";
import { GordeError } from "../errors.ts";
import { denied } from "../host/access-handlers.ts";
import type { ApiHandlers } from "../host/api-host.ts";
import type { AuthStore } from "../host/auth.ts";
import type { RecoveryHistory } from "../jobs/recovery-history.ts";
import type { HaAgent } from "./ha-agent.ts";

export function haHandlers(parts: { auth: AuthStore; ha: () => HaAgent | undefined; recoveries: RecoveryHistory }): ApiHandlers<typeof HA_ROUTES> {
  const { auth, recoveries } = parts;
  const agent = (): HaAgent => {
    const a = parts.ha();
    if (!a) throw new GordeError("locked", "the node is starting; try again in a moment.");
    return a;
  };
  const sees = (authId: string, id: number): boolean => auth.can(authId, `/vms/${id}`, "VM.Audit");
  return {
    haStatus: async ({ authId }) => ({ json: (await agent().resources()).filter((r) => sees(authId, parseSid(r.sid).id)) }),
    addHa: async ({ authId, body }) => {
      if (!auth.can(authId, "/", "Sys.Modify")) throw denied(authId, `make ${body.sid} an HA resource`);
      return { json: await agent().store().addResource(body.sid, body) };
    },
    removeHa: async ({ authId, params }) => {
      if (!auth.can(authId, "/", "Sys.Modify")) throw denied(authId, `take ${params.sid} out of HA`);
      await agent().store().removeResource(params.sid);
      return { json: { ok: true as const } };
    },
    listRecoveries: ({ authId, query }) => ({ json: recoveries.list(query.limit).filter((r) => sees(authId, r.guest)) }),
  };
}
