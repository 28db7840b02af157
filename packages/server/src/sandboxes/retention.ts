import type { Logger } from "pino";
import type { Store } from "../store/store.js";
import type { SandboxService } from "./sandbox-service.js";

/**
 * The two-stage retention of seed 004: a ready sandbox idle for idle_ttl_seconds is
 * stopped; a stopped one is deleted delete_after_stop_seconds after stopped_at. Timers are
 * not held in memory: every sweep recomputes them from the store, so they survive restarts.
 * `timeScale` divides every duration (tests use it to avoid waiting minutes).
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly store: Store,
    private readonly sandboxes: SandboxService,
    private readonly timeScale: number,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass; also callable directly. */
  async sweep(now = Date.now()): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const s of await this.store.listAllSandboxes()) {
        if (s.pool_id !== null) continue; // waiting in a warm pool: no one's, no timers
        try {
          if (s.status === "ready" && s.idle_ttl_seconds > 0) {
            const idleMs = now - Date.parse(s.last_active_at);
            if (idleMs * this.timeScale >= s.idle_ttl_seconds * 1000) {
              this.log.info({ sandboxId: s.id, idleTtl: s.idle_ttl_seconds }, "idle sandbox stopped");
              await this.sandboxes.stop(s.workspace_id, s.id, `stopped after ${s.idle_ttl_seconds}s without activity`);
            }
          } else if (s.status === "stopped" && s.delete_after_stop_seconds > 0 && s.stopped_at) {
            const stoppedMs = now - Date.parse(s.stopped_at);
            if (stoppedMs * this.timeScale >= s.delete_after_stop_seconds * 1000) {
              this.log.info({ sandboxId: s.id, deleteAfterStop: s.delete_after_stop_seconds }, "stopped sandbox deleted");
              await this.sandboxes.delete(s.workspace_id, s.id);
            }
          }
        } catch (e) {
          this.log.warn({ sandboxId: s.id, err: e instanceof Error ? e.message : String(e) }, "retention action failed");
        }
      }
    } finally {
      this.running = false;
    }
  }
}
