import assert from "node:assert/strict";
import { test } from "node:test";
import { parseGuestConfig } from "./guest-config.ts";

const vm = { kind: "vm", id: 100, name: "web", memoryMiB: 256, cpus: 1, disks: { disk0: "/var/lib/gorde/images/100/disk0.raw" }, httpPort: 18080 };

void test("guest configurations: valid ones parse, every mistake is named", () => {
  assert.deepEqual(parseGuestConfig(vm), vm);
  const ct = { kind: "ct", id: 101, name: "db", memoryMiB: 128, cpus: 1, rootfs: "/var/lib/gorde/ct/101", init: "/service/run", httpPort: 18081 };
  assert.deepEqual(parseGuestConfig(ct), ct);
  assert.throws(() => parseGuestConfig({ ...vm, memroy: 512 }), /unknown key "memroy"/);
  assert.throws(() => parseGuestConfig({ ...vm, id: 99 }), /id is invalid/);
  assert.throws(() => parseGuestConfig({ ...vm, disks: {} }), /at least one disk/);
  assert.throws(() => parseGuestConfig({ ...vm, disks: { disk0: "relative.raw" } }), /absolute path/);
  assert.throws(() => parseGuestConfig({ ...vm, disks: { "../x": "/a" } }), /disks has an invalid name "\.\.\/x"/);
  assert.throws(() => parseGuestConfig({ ...vm, httpPort: 80 }), /httpPort is invalid/);
  assert.throws(() => parseGuestConfig({ ...vm, kind: "lxc" }), /kind is invalid/);
  assert.throws(() => parseGuestConfig({ ...ct, disks: vm.disks }), /unknown key "disks"/);
});
