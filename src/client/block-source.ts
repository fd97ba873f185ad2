// Size of a block image source: a regular file's length, or a block device's size from sysfs.
import fs from "node:fs";
import { GordeError } from "../errors.ts";

export function sourceSize(file: string, st: fs.BigIntStats): number {
  if (st.isFile()) return Number(st.size);
  if (st.isBlockDevice()) {
    const rdev = Number(st.rdev);
    const major = Math.floor(rdev / 256) & 0xfff;
    const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    const sectors = fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8").trim();
    return Number(sectors) * 512;
  }
  throw new GordeError("usage", `${file} is neither a regular file nor a block device.`);
}
