// What every route of an API is: its method, path, who may call it, the schemas of its
// parameters, query, body and answer; and the names every route table shares. The server's
// table (routes.ts), the access routes both hosts serve (access-routes.ts) and the node's
// table (node-routes.ts) are built from these.
import { z } from "zod";
import { REMOTE_NAME_RE, remoteNameProblem } from "../format/names.ts";

/** Who may call a route (checked by the host; documented in the OpenAPI document). */
export type Access =
  | "public" // no credentials
  | "authenticated" // any valid user or token
  | "datastore" // a privilege on /datastore/<store>[/<ns>], see `access` text
  | "system" // Sys.* or Permissions.Modify on /
  | "remote"; // a privilege on /remote[/<name>]

export interface Route {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  summary: string;
  access: Access;
  /** the privileges the host requires, in words */
  permission: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** a JSON body schema, or "binary" (application/octet-stream) */
  body?: z.ZodType | "binary";
  /** a JSON response schema, "binary", or "ndjson" (a stream of JSON lines) */
  response: z.ZodType | "binary" | "ndjson" | "text";
}

/** Declares a route, keeping its exact schema types for the handlers' and clients' types. */
export function route<const R extends Route>(r: R): R {
  return r;
}

/** Fills the `{param}` placeholders of a route's path. */
export function routePath(r: Route, params: Readonly<Record<string, unknown>> = {}): string {
  return r.path.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params[k];
    if (typeof v !== "string" && typeof v !== "number") throw new Error(`missing path parameter ${k}`);
    return encodeURIComponent(String(v));
  });
}

const name = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/, "a name of letters, digits, '.', '_' or '-'");
export const StoreName = name;
export const UserName = name;
/** `user` or `user!token` */
export const AuthId = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(![A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$/, "a user or user!token");
/** namespace `a/b` (empty: the root) */
export const Namespace = z
  .string()
  .max(512)
  .regex(/^([A-Za-z0-9_][A-Za-z0-9._-]{0,63}(\/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){0,7})?$/, "a namespace a/b/c");
export const GroupName = z.string().regex(/^(vm|ct|host)\/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/, "vm/<id>, ct/<id> or host/<name>");
export const SnapshotName = z
  .string()
  .regex(/^(vm|ct|host)\/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z|latest)$/, "<type>/<id>/<time>");
export const RemoteName = z.string().max(1024).regex(REMOTE_NAME_RE, { error: (iss) => remoteNameProblem(String(iss.input)) });
export const Digest = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");
export const FileName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/, "a file name");
export const SessionId = z.string().regex(/^[A-Za-z0-9_-]{16,64}$/, "a session id");
export const TaskId = z.string().regex(/^UPID-[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{8}-[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "a task id");
/** a count in a query string */
export const count = z.coerce.number().int().min(0).max(1_000_000);
export const Ok = z.object({ ok: z.literal(true) });
/** the answer of a route that starts a task */
export const TaskRef = z.object({ task: TaskId });
