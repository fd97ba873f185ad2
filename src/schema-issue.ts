// The first issue of a failed zod parse, in words, for the one-sentence errors of every
// file that checks a schema (configs, key files, manifests, plans, request bodies).
import type { z } from "zod";

export interface SchemaIssue {
  issue: z.core.$ZodIssue;
  /** the dotted path to the value at fault; "" when it is the whole value */
  path: string;
  /** zod's message without a final period */
  message: string;
}

/** The first issue of `error`, its path dotted and its message ready to end a sentence. */
export function firstIssue(error: z.ZodError): SchemaIssue {
  const issue = error.issues[0]!;
  return { issue, path: issue.path.map(String).join("."), message: issue.message.replace(/\.$/, "") };
}

/** The first issue as one sentence: `<subject> <path> is invalid: <message>.` */
export function issueSentence(error: z.ZodError, subject: string): string {
  const { path, message } = firstIssue(error);
  return `${subject}${path ? ` ${path}` : ""} is invalid: ${message}.`;
}
