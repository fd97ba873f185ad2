// The OpenAPI 3.1 document of the server, generated from the route table: the schemas in
// it are the ones that validate requests.
import { z } from "zod";
import { API_VERSION, ROUTES, type Route } from "../api/routes.ts";

function schemaOf(t: z.ZodType): unknown {
  return z.toJSONSchema(t, { target: "draft-2020-12", unrepresentable: "any", io: "input" });
}

function parameters(route: Route): unknown[] {
  const out: unknown[] = [];
  for (const [where, obj] of [
    ["path", route.params],
    ["query", route.query],
  ] as const) {
    if (!obj) continue;
    for (const [name, field] of Object.entries(obj.shape as Record<string, z.ZodType>)) {
      out.push({ name, in: where, required: where === "path" || !field.safeParse(undefined).success, schema: schemaOf(field) });
    }
  }
  return out;
}

function content(kind: Route["response"] | Route["body"]): unknown {
  if (kind === undefined) return undefined;
  if (kind === "binary") return { "application/octet-stream": { schema: { type: "string", format: "binary" } } };
  if (kind === "ndjson") return { "application/x-ndjson": { schema: { type: "string" } } };
  if (kind === "text") return { "text/plain": { schema: { type: "string" } } };
  return { "application/json": { schema: schemaOf(kind) } };
}

let cached: Record<string, unknown> | undefined;

export function openApiDocument(): Record<string, unknown> {
  if (cached) return cached;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [name, route] of Object.entries(ROUTES) as [string, Route][]) {
    const op: Record<string, unknown> = {
      operationId: name,
      summary: route.summary,
      description: `Permission: ${route.permission}.`,
      parameters: parameters(route),
      responses: {
        "200": { description: "success", content: content(route.response) },
        "400": { description: "invalid request", content: content(ErrorBody) },
        ...(route.access === "public" ? {} : { "401": { description: "no or wrong credentials" }, "403": { description: "permission denied" } }),
      },
    };
    if (route.access !== "public") op.security = [{ basic: [] }];
    if (route.body) op.requestBody = { required: true, content: content(route.body) };
    (paths[route.path] ??= {})[route.method.toLowerCase()] = op;
  }
  cached = {
    openapi: "3.1.0",
    info: { title: "gorde server API", version: String(API_VERSION) },
    components: { securitySchemes: { basic: { type: "http", scheme: "basic", description: "user:password or user!token:secret" } } },
    paths,
  };
  return cached;
}

const ErrorBody = z.object({ error: z.string() });
