import assert from "node:assert/strict";
import { test } from "node:test";
import { DEMO_CT_HEALTH_CHECKS, DEMO_VM_HEALTH_CHECKS, parseGuestConfig } from "./guest-config.ts";

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

void test("health checks: the demo's parse, a mistake in a probe is named, a command is never accepted", () => {
  const withChecks = (healthChecks: unknown, base: object = vm) => parseGuestConfig({ ...base, healthChecks });
  const ct = { kind: "ct", id: 101, name: "db", memoryMiB: 128, cpus: 1, rootfs: "/r", init: "/init", httpPort: 18081 };
  assert.deepEqual(withChecks(DEMO_VM_HEALTH_CHECKS).healthChecks, DEMO_VM_HEALTH_CHECKS);
  assert.deepEqual(withChecks(DEMO_CT_HEALTH_CHECKS, ct).healthChecks, DEMO_CT_HEALTH_CHECKS);
  // defaults: GET, status 200, the timeouts
  const short = withChecks({ boot: { type: "agent" }, probes: [{ type: "http", name: "home", path: "/" }, { type: "tcp", name: "port" }] });
  assert.deepEqual(short.healthChecks, {
    boot: { type: "agent", timeoutSeconds: 120 },
    probes: [
      { type: "http", name: "home", method: "GET", path: "/", status: 200, timeoutSeconds: 30 },
      { type: "tcp", name: "port", timeoutSeconds: 30 },
    ],
  });
  const boot = { type: "serial", marker: "up" };
  const bad: [unknown, RegExp][] = [
    [{ boot, probes: [{ type: "script", name: "app", script: "check", command: "rm -rf /" }] }, /unknown key "command"/],
    [{ boot, probes: [{ type: "exec", name: "app", command: "true" }] }, /healthChecks\.probes\.0\.type is invalid/],
    [{ boot, probes: [{ type: "tcp", name: "boot" }] }, /a name other than verify, restore and boot/],
    [{ boot, probes: [{ type: "tcp", name: "Port!" }] }, /a check name of lower-case letters/],
    [{ boot, probes: [{ type: "tcp", name: "a" }, { type: "tcp", name: "a" }] }, /probe names that differ/],
    [{ boot, probes: [{ type: "http", name: "a", path: "/", matches: "(" }] }, /a valid regular expression/],
    [{ boot, probes: [{ type: "http", name: "a", path: "/", method: "POST" }] }, /method is invalid/],
    [{ boot, probes: [{ type: "http", name: "a", path: "no-slash" }] }, /an absolute path/],
    [{ boot, probes: [{ type: "script", name: "a", script: "../bin/sh" }] }, /a script name/],
    [{ boot, probes: [{ type: "tcp", name: "a", timeoutSeconds: 0 }] }, /timeoutSeconds is invalid/],
    [{ boot: { type: "init" }, probes: [] }, /healthChecks\.boot\.type is invalid/],
    [{ probes: [] }, /healthChecks\.boot is invalid/],
  ];
  for (const [checks, error] of bad) assert.throws(() => withChecks(checks), error, JSON.stringify(checks));
  assert.throws(() => withChecks({ boot, probes: [] }, ct), /healthChecks\.boot/);
});
