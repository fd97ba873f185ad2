import { GordeError, corrupt } from "../errors.ts";
import { INDEX_HEADER_SIZE, kindVersion, magicKind } from "./magic.ts";

/** Refuses a file that is not of `kind`, or that a newer gorde wrote. */
export function checkMagic(buf: Buffer, kind: string, what: string): void {
  if (buf.length < INDEX_HEADER_SIZE) throw corrupt(`${what} is truncated (${buf.length} bytes).`);
  const m = magicKind(buf);
  if (!m || m.kind !== kind) throw corrupt(`${what} does not start with the expected magic.`);
  if (m.version < 1) throw corrupt(`${what} has an invalid format version 0.`);
  if (m.version > kindVersion(m.kind)) {
    throw new GordeError(
      "unsupported",
      `${what} was written by a newer gorde (format version ${m.version}); this gorde reads up to version ${kindVersion(m.kind)}.`,
    );
  }
}
