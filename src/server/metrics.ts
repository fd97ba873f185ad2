// Prometheus metrics of the server: requests, backups, chunks, tasks, datastore usage.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Datastore } from "../datastore/datastore.ts";
import { datastoreStatus } from "../datastore/status.ts";
import type { TaskManager } from "../host/tasks.ts";

export class ServerMetrics {
  private readonly registry = new Registry();
  private readonly requests = new Counter({ name: "gorde_http_requests_total", help: "HTTP requests by route and status", labelNames: ["route", "status"], registers: [this.registry] });
  private readonly duration = new Histogram({
    name: "gorde_http_request_duration_seconds",
    help: "HTTP request durations by route",
    labelNames: ["route"],
    buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
    registers: [this.registry],
  });
  private readonly backups = new Counter({ name: "gorde_backups_total", help: "Finished backup sessions by result", labelNames: ["store", "result"], registers: [this.registry] });
  private readonly backupBytes = new Counter({ name: "gorde_backup_new_bytes_total", help: "Plain bytes of new chunks stored by backups", labelNames: ["store"], registers: [this.registry] });
  private readonly chunksIn = new Counter({ name: "gorde_chunks_received_total", help: "Chunks uploaded, by whether they were new", labelNames: ["store", "state"], registers: [this.registry] });
  private readonly bytesIn = new Counter({ name: "gorde_chunk_bytes_received_total", help: "Encoded chunk bytes uploaded", labelNames: ["store"], registers: [this.registry] });
  private readonly chunksOut = new Counter({ name: "gorde_chunks_served_total", help: "Chunks served to readers", labelNames: ["store"], registers: [this.registry] });

  constructor(stores: () => { name: string; store: Datastore }[], tasks: TaskManager) {
    const registers = [this.registry];
    new Gauge({
      name: "gorde_tasks",
      help: "Tasks by state (the last 1000 kept)",
      labelNames: ["type", "state"],
      registers,
      collect() {
        this.reset();
        for (const t of tasks.list({ limit: 1000 })) this.inc({ type: t.type, state: t.state });
      },
    });
    const usage = new Gauge({ name: "gorde_datastore_bytes", help: "Datastore file system bytes by kind", labelNames: ["store", "kind"], registers });
    const chunks = new Gauge({ name: "gorde_datastore_chunks", help: "Chunks stored", labelNames: ["store"], registers });
    const dedup = new Gauge({ name: "gorde_datastore_dedup_factor", help: "Logical bytes per stored chunk byte", labelNames: ["store"], registers });
    const snapshots = new Gauge({ name: "gorde_datastore_snapshots", help: "Finished snapshots", labelNames: ["store"], registers });
    this.collectStores = async () => {
      for (const { name, store } of stores()) {
        const s = await datastoreStatus(store);
        usage.set({ store: name, kind: "total" }, s.total);
        usage.set({ store: name, kind: "used" }, s.used);
        usage.set({ store: name, kind: "available" }, s.available);
        usage.set({ store: name, kind: "chunks" }, s.chunkBytes);
        usage.set({ store: name, kind: "logical" }, s.logicalBytes);
        chunks.set({ store: name }, s.chunks);
        dedup.set({ store: name }, s.dedupFactor);
        snapshots.set({ store: name }, s.snapshots);
      }
    };
  }

  private readonly collectStores: () => Promise<void>;

  request(route: string, status: number, ms: number): void {
    this.requests.inc({ route, status: String(status) });
    this.duration.observe({ route }, ms / 1000);
  }

  backupDone(store: string, result: "ok" | "failed", newBytes: number): void {
    this.backups.inc({ store, result });
    if (newBytes > 0) this.backupBytes.inc({ store }, newBytes);
  }

  chunkReceived(store: string, stored: boolean, bytes: number): void {
    this.chunksIn.inc({ store, state: stored ? "new" : "existing" });
    this.bytesIn.inc({ store }, bytes);
  }

  chunksReceived(store: string, stored: number, existing: number, bytes: number): void {
    if (stored) this.chunksIn.inc({ store, state: "new" }, stored);
    if (existing) this.chunksIn.inc({ store, state: "existing" }, existing);
    this.bytesIn.inc({ store }, bytes);
  }

  chunkServed(store: string): void {
    this.chunksOut.inc({ store });
  }

  async render(): Promise<string> {
    await this.collectStores();
    return this.registry.metrics();
  }
}
