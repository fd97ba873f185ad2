import assert from "node:assert/strict";
import os from "node:os";
import { describe, it } from "node:test";
import { busyReason, parsePressure, readLoad } from "./load.ts";
import { parseWindow, windowCloses, windowOpen } from "./window.ts";

const at = (iso: string) => new Date(iso);

void describe("low-load windows", () => {
  void it("opens and closes at its minutes, also across midnight", () => {
    const night = parseWindow("01:00-05:00");
    assert.equal(windowOpen(night, at("2026-11-25T00:59:59Z"), "UTC"), false);
    assert.equal(windowOpen(night, at("2026-11-25T01:00:00Z"), "UTC"), true);
    assert.equal(windowOpen(night, at("2026-11-25T04:59:59Z"), "UTC"), true);
    assert.equal(windowOpen(night, at("2026-11-25T05:00:00Z"), "UTC"), false);
    assert.deepEqual(windowCloses(night, at("2026-11-25T03:30:20Z"), "UTC"), at("2026-11-25T05:00:00Z"));
    assert.equal(windowCloses(night, at("2026-11-25T06:00:00Z"), "UTC"), undefined);
    const late = parseWindow("22:30-02:00");
    assert.equal(windowOpen(late, at("2026-11-25T23:00:00Z"), "UTC"), true);
    assert.equal(windowOpen(late, at("2026-11-26T01:59:00Z"), "UTC"), true);
    assert.equal(windowOpen(late, at("2026-11-26T12:00:00Z"), "UTC"), false);
    assert.deepEqual(windowCloses(late, at("2026-11-25T23:15:00Z"), "UTC"), at("2026-11-26T02:00:00Z"));
    assert.equal(windowOpen(parseWindow("00:00-24:00"), at("2026-11-25T12:00:00Z"), "UTC"), true);
  });

  void it("refuses a malformed window and one that never opens", () => {
    assert.throws(() => parseWindow("01:00-01:00"), /never opens/);
    assert.throws(() => parseWindow("1-5"), /start "1" is not a time HH:MM/);
    assert.throws(() => parseWindow("01:00"), /is not HH:MM-HH:MM/);
    assert.throws(() => parseWindow("25:00-05:00"), /not a time/);
    assert.throws(() => parseWindow("01:00-05:60"), /end "05:60" is not a time/);
  });
});

void describe("node load", () => {
  void it("says why the node is busy, or nothing", () => {
    assert.equal(busyReason({ loadPerCpu: 0.5, cpuPressure: 3, ioPressure: 1 }), undefined);
    assert.match(busyReason({ loadPerCpu: 2.25 })!, /load 2.25 per CPU is above 1.5/);
    assert.match(busyReason({ loadPerCpu: 0.1, ioPressure: 55.5 })!, /I\/O pressure 55.5% is above 30%/);
    assert.match(busyReason({ loadPerCpu: 0.1, cpuPressure: 20 }, { maxCpuPressure: 10 })!, /CPU pressure 20% is above 10%/);
  });

  void it("reads /proc", () => {
    assert.equal(parsePressure("some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), 12.5);
    assert.equal(parsePressure("garbage"), undefined);
    const r = readLoad(os.availableParallelism());
    assert.ok(Number.isFinite(r.loadPerCpu) && r.loadPerCpu >= 0);
  });
});
