// The types of a route's request and answer, derived from its schemas: what a handler
// receives once the host has validated the request (the schemas' output), what it may
// answer (the response schema's input), what a client sends and gets back. The server,
// the node, their clients and the web interface all use these, never a copy of them.
import type { z } from "zod";
import type { Route } from "./route.ts";

type Output<S> = S extends z.ZodType ? z.output<S> : never;
type Input<S> = S extends z.ZodType ? z.input<S> : never;
type Empty = Record<string, never>;

/** The validated path parameters a handler receives. */
export type RouteParams<R extends Route> = R extends { params: infer S } ? Output<S> : Empty;
/** The validated query a handler receives. */
export type RouteQuery<R extends Route> = R extends { query: infer S } ? Output<S> : Empty;
/** The validated body a handler receives (a Buffer for a binary body). */
export type RouteBody<R extends Route> = R extends { body: "binary" } ? Buffer : R extends { body: infer S } ? Output<S> : undefined;

/** What a handler answers: its route's kind of response, or that it answered the stream itself. */
export type RouteAnswer<R extends Route> =
  | { handled: true }
  | (R["response"] extends "binary"
      ? { binary: Buffer } | { file: string }
      : R["response"] extends "text"
        ? { text: string }
        : R["response"] extends "ndjson"
          ? never
          : { json: Input<R["response"]>; setCookie?: string });

/** A route's JSON body as a client sends it. */
export type RouteBodyInput<R extends Route> = R extends { body: "binary" } ? never : R extends { body: infer S } ? Input<S> : never;

/** What a client gets back from a JSON route. */
export type RouteResult<R extends Route> = R["response"] extends z.ZodType ? z.output<R["response"]> : never;

type Optional<K extends string, T> = [T] extends [Empty] ? { [P in K]?: never } : object extends T ? { [P in K]?: T } : { [P in K]: T };
/** A schema's input for a URL: a coercing field (whose input zod types `unknown`) takes a string or a number. */
type UrlInput<S> = { [K in keyof Input<S>]: unknown extends Input<S>[K] ? string | number | undefined : Input<S>[K] };

/**
 * What a client sends: path parameters (less those it fills itself, `Given`) and query as
 * the URL carries them, a JSON body as the schema takes it.
 */
export type CallOptions<R extends Route, Given extends string = never> = Optional<"params", R extends { params: infer S } ? Omit<UrlInput<S>, Given> : Empty> &
  Optional<"query", R extends { query: infer S } ? UrlInput<S> : Empty> &
  Optional<"json", R extends { body: "binary" } ? Empty : R extends { body: infer S } ? Input<S> : Empty>;

/** A client call's options as arguments: optional when the route needs none. */
export type CallArgs<R extends Route, Given extends string = never> = object extends CallOptions<R, Given> ? [opts?: CallOptions<R, Given>] : [opts: CallOptions<R, Given>];
