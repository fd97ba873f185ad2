// The API's answers the pages show, as the route table types them.
import type { NODE_ROUTES } from "../../src/api/node-routes.ts";
import type { RouteResult } from "../../src/api/route-types.ts";
import type { ROUTES } from "../../src/api/routes.ts";

export type GuestStatus = RouteResult<(typeof NODE_ROUTES)["guestStatus"]>;
export type TaskInfo = RouteResult<(typeof NODE_ROUTES)["getTask"]>;
export type Permissions = RouteResult<(typeof NODE_ROUTES)["permissions"]>;
export type Snapshot = RouteResult<(typeof NODE_ROUTES)["storageSnapshots"]>[number];
export type Storage = RouteResult<(typeof NODE_ROUTES)["listStorages"]>[number];
export type Drill = RouteResult<(typeof NODE_ROUTES)["listDrills"]>[number];
export type ClusterStatus = RouteResult<(typeof NODE_ROUTES)["clusterStatus"]>;
export type HaResource = RouteResult<(typeof NODE_ROUTES)["haStatus"]>[number];
export type JobRun = RouteResult<(typeof NODE_ROUTES)["listRuns"]>[number];
export type StorageStatus = RouteResult<(typeof NODE_ROUTES)["storageStatus"]>;
export type ArchiveEntry = RouteResult<(typeof NODE_ROUTES)["browseArchive"]>[number];
export type Recovery = RouteResult<(typeof NODE_ROUTES)["listRecoveries"]>[number];
export type UsageSample = RouteResult<(typeof NODE_ROUTES)["storageHistory"]>[number];
export type DatastoreEntry = RouteResult<(typeof ROUTES)["listDatastores"]>[number];
export type MaintenanceMode = DatastoreEntry["maintenance"];
