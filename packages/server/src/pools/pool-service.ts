import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { createPoolRequest, updatePoolRequest, type CreatePoolRequest, type PoolView } from "@sandbar/shared";
import type { Store } from "../store/store.js";
import { NameTakenError } from "../store/store.js";
import type { PoolRecord, SandboxRecord, SnapshotRecord } from "../store/records.js";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { ServerConfig } from "../config.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { newId, nowIso } from "../util/ids.js";
import { KeyedLock } from "../util/keyed-lock.js";

/** Pooled boots in flight at once, all pools together: refills must not starve user creates. */
const REFILL_CONCURRENCY = 2;
/** How often every pool is checked (dead members replaced, config pools whose snapshot appeared). */
const REPAIR_INTERVAL_MS = 5000;
/** After a failed refill boot a pool waits this long, doubling per failure, before the next. */
const BACKOFF_MS = 2000;
const MAX_BACKOFF_MS = 5 * 60_000;

interface Resolver {
  workspaceId(name: string): Promise<string | undefined>;
}

/**
 * Warm pools: per snapshot and size, `size` sandboxes booted ahead of time. A create with the
 * same snapshot and resources claims the oldest ready one in one store transaction (so two
 * creates, or two servers, never get the same sandbox) and the pool refills in the background.
 * Pooled sandboxes belong to no one until claimed: the API never shows them, they count
 * against no quota and no retention timer runs on them. Everything is recomputed from the
 * store, so a restart adopts running pooled sandboxes and replaces the ones that died.
 */
export class PoolService {
  private readonly lock = new KeyedLock();
  private readonly backoff = new Map<string, { failures: number; until: number }>();
  private readonly waiters: (() => void)[] = [];
  private slots = REFILL_CONCURRENCY;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private configApplied = false;

  constructor(
    private readonly store: Store,
    private readonly sandboxes: SandboxService,
    private readonly config: Pick<ServerConfig, "defaults" | "pools">,
    private readonly workspaces: Resolver,
    private readonly log: Logger,
  ) {}

  async view(p: PoolRecord): Promise<PoolView> {
    const members = await this.members(p.id);
    return {
      id: p.id,
      snapshot_id: p.snapshot_id,
      size: p.size,
      vcpus: p.vcpus,
      mem_bytes: p.mem_bytes,
      fs_capacity_bytes: p.fs_capacity_bytes,
      ready: members.filter((s) => s.status === "ready").length,
      booting: members.filter((s) => s.status === "provisioning").length,
      source: p.source,
      created_at: p.created_at,
      updated_at: p.updated_at,
    };
  }

  async create(workspaceId: string, req: CreatePoolRequest, source: PoolRecord["source"] = "api"): Promise<PoolRecord> {
    const ref = req.snapshot_id ?? req.snapshot_name ?? "";
    const snap = await this.store.getSnapshot(workspaceId, ref);
    if (!snap || (req.snapshot_id !== undefined && snap.id !== req.snapshot_id) || (req.snapshot_name !== undefined && snap.name !== req.snapshot_name)) {
      throw new SandbarError("SNAPSHOT_NOT_FOUND", `snapshot '${ref}' not found`);
    }
    if (snap.status !== "ready") throw new SandbarError("SNAPSHOT_NOT_READY", `snapshot '${snap.name}' is ${snap.status}; pools need a ready snapshot`);
    const d = this.config.defaults;
    const now = nowIso();
    // The same defaults a create applies, so a create that names no size matches this pool.
    const rec: PoolRecord = {
      id: newId(),
      workspace_id: workspaceId,
      snapshot_id: snap.id,
      size: req.size,
      vcpus: req.vcpus ?? d.vcpus,
      mem_bytes: req.mem_bytes ?? d.memBytes,
      fs_capacity_bytes: req.fs_capacity_bytes ?? snap.fs_capacity_bytes ?? d.fsCapacityBytes,
      source,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.store.insertPool(rec);
    } catch (e) {
      if (e instanceof NameTakenError) {
        throw new SandbarError("POOL_EXISTS", `a pool of snapshot '${snap.name}' with ${rec.vcpus} vcpus, ${rec.mem_bytes} mem_bytes and ${rec.fs_capacity_bytes} fs_capacity_bytes exists already`);
      }
      throw e;
    }
    this.log.info({ poolId: rec.id, snapshotId: snap.id, size: rec.size }, "pool created");
    this.kick(rec.id);
    return rec;
  }

  async get(workspaceId: string, id: string): Promise<PoolRecord> {
    const p = await this.store.getPool(workspaceId, id);
    if (!p) throw new SandbarError("POOL_NOT_FOUND", `pool '${id}' not found`);
    return p;
  }

  list(workspaceId: string): Promise<PoolRecord[]> {
    return this.store.listPools(workspaceId);
  }

  async resize(workspaceId: string, id: string, size: number): Promise<PoolRecord> {
    const p = await this.get(workspaceId, id);
    await this.store.updatePool(p.id, { size, updated_at: nowIso() });
    this.kick(p.id);
    return this.get(workspaceId, p.id);
  }

  /** Delete a pool and the sandboxes waiting in it (claimed ones are their owners'). */
  async delete(workspaceId: string, id: string): Promise<void> {
    const p = await this.get(workspaceId, id);
    await this.remove(p);
  }

  /** Before a snapshot is deleted: its pools go, with their pooled sandboxes. */
  async drainSnapshot(snapshotId: string): Promise<void> {
    for (const p of await this.store.listPools()) {
      if (p.snapshot_id === snapshotId) await this.remove(p);
    }
    // Members of pools deleted earlier whose drain did not finish (a crash) go too.
    await this.lock.run("orphans", () => this.removeOrphans());
  }

  private async remove(p: PoolRecord): Promise<void> {
    // The record goes first: no claim matches it and no refill boots into it from now on.
    await this.store.deletePool(p.id);
    await this.lock.run(p.id, async () => {
      for (const s of await this.members(p.id)) await this.sandboxes.deletePooled(s.id);
    });
    this.backoff.delete(p.id);
    this.log.info({ poolId: p.id, snapshotId: p.snapshot_id }, "pool deleted");
  }

  /**
   * SandboxService's claimer: the oldest ready sandbox of the pool matching `rec` (snapshot,
   * vcpus, mem_bytes, fs_capacity_bytes, and memory restore as the pool boots them), given
   * `rec`'s name, labels, timers and policy. Undefined sends the create down the boot path.
   */
  claim = async (rec: SandboxRecord, snap: SnapshotRecord, restore: boolean): Promise<SandboxRecord | undefined> => {
    const hasMemory = snap.memory_snapshot_size_bytes !== null && snap.agent_token !== null;
    if (restore !== hasMemory) return undefined;
    const pool = (await this.store.listPools(rec.workspace_id)).find(
      (p) => p.snapshot_id === snap.id && p.vcpus === rec.vcpus && p.mem_bytes === rec.mem_bytes && p.fs_capacity_bytes === rec.fs_capacity_bytes,
    );
    if (!pool) return undefined;
    let claimed: SandboxRecord | undefined;
    try {
      claimed = await this.store.claimPooledSandbox(pool.id, {
        name: rec.name,
        idle_ttl_seconds: rec.idle_ttl_seconds,
        delete_after_stop_seconds: rec.delete_after_stop_seconds,
        labels: rec.labels,
        network_policy: rec.network_policy,
        preserve_memory_on_stop: rec.preserve_memory_on_stop,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        last_active_at: rec.last_active_at,
      });
    } catch (e) {
      if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `sandbox name '${rec.name}' is already in use`);
      throw e;
    }
    this.kick(pool.id);
    if (!claimed) {
      this.log.info({ poolId: pool.id }, "pool empty; booting instead");
      return undefined;
    }
    try {
      await this.sandboxes.finishClaim(claimed);
    } catch (e) {
      // Never hand out a sandbox without its policy: it goes, and the create boots afresh.
      this.log.error({ poolId: pool.id, sandboxId: claimed.id, err: (e as Error).message }, "claimed sandbox could not be set up; deleting it");
      await this.sandboxes.delete(claimed.workspace_id, claimed.id).catch(() => undefined);
      return undefined;
    }
    this.log.info({ poolId: pool.id, sandboxId: claimed.id }, "pooled sandbox claimed");
    return claimed;
  };

  /** Apply SANDBAR_POOLS, fill every pool, and keep checking them. */
  async start(): Promise<void> {
    await this.lock.run("orphans", () => this.removeOrphans());
    await this.applyConfig();
    for (const p of await this.store.listPools()) this.kick(p.id);
    this.timer = setInterval(() => void this.repair(), REPAIR_INTERVAL_MS);
    this.timer.unref();
  }

  /** No more refills; boots in flight finish (SandboxService.drain waits for them). */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const w of this.waiters.splice(0)) w();
  }

  private async repair(): Promise<void> {
    try {
      if (!this.configApplied) await this.applyConfig();
      await this.lock.run("orphans", () => this.removeOrphans());
      for (const p of await this.store.listPools()) this.kick(p.id);
    } catch (e) {
      this.log.error({ err: e }, "pool repair failed");
    }
  }

  /** Config pools are set again at every start; config pools no longer configured go. */
  private async applyConfig(): Promise<void> {
    let complete = true;
    const wanted = new Set<string>();
    for (const c of this.config.pools) {
      const ws = await this.workspaces.workspaceId(c.workspace ?? "default");
      const snap = ws === undefined ? undefined : await this.store.getSnapshot(ws, c.snapshot);
      if (ws === undefined || !snap || snap.status !== "ready") {
        // A snapshot that does not exist yet (built after the start) is retried by repair.
        if (!this.configApplied) this.log.warn({ pool: c }, "configured pool waits: no ready snapshot of that name or id in the workspace");
        complete = false;
        continue;
      }
      const req = { snapshot_id: snap.id, size: c.size, vcpus: c.vcpus, mem_bytes: c.mem_bytes, fs_capacity_bytes: c.fs_capacity_bytes };
      const d = this.config.defaults;
      const existing = (await this.store.listPools(ws)).find(
        (p) =>
          p.snapshot_id === snap.id &&
          p.vcpus === (c.vcpus ?? d.vcpus) &&
          p.mem_bytes === (c.mem_bytes ?? d.memBytes) &&
          p.fs_capacity_bytes === (c.fs_capacity_bytes ?? snap.fs_capacity_bytes ?? d.fsCapacityBytes),
      );
      if (existing) {
        await this.store.updatePool(existing.id, { size: c.size, source: "config", updated_at: nowIso() });
        wanted.add(existing.id);
      } else {
        wanted.add((await this.create(ws, req, "config")).id);
      }
    }
    if (complete) {
      for (const p of await this.store.listPools()) {
        if (p.source === "config" && !wanted.has(p.id)) await this.remove(p);
      }
    }
    this.configApplied = complete;
  }

  private async members(poolId: string): Promise<SandboxRecord[]> {
    return (await this.store.listAllSandboxes()).filter((s) => s.pool_id === poolId);
  }

  private async removeOrphans(): Promise<void> {
    const pools = new Set((await this.store.listPools()).map((p) => p.id));
    for (const s of await this.store.listAllSandboxes()) {
      if (s.pool_id !== null && !pools.has(s.pool_id)) await this.sandboxes.deletePooled(s.id);
    }
  }

  /** Bring one pool to its size, in the background (one pass per pool at a time). */
  private kick(poolId: string): void {
    if (this.closed) return;
    void this.lock
      .run(poolId, () => this.refill(poolId))
      .catch((e: unknown) => this.log.error({ poolId, err: e }, "pool refill failed"));
  }

  private async refill(poolId: string): Promise<void> {
    const pool = (await this.store.listPools()).find((p) => p.id === poolId);
    if (!pool) return;
    const members = await this.members(pool.id);
    // Members that died (the monitor stopped them) or never came up are replaced.
    for (const s of members.filter((m) => m.status === "failed" || m.status === "stopped")) await this.sandboxes.deletePooled(s.id);
    const live = members.filter((m) => m.status === "ready" || m.status === "provisioning");
    // Shrink: the ones still booting first, then the newest.
    const extra = live.length - pool.size;
    if (extra > 0) {
      const order = [...live].sort((a, b) => (a.status === b.status ? b.created_at.localeCompare(a.created_at) : a.status === "provisioning" ? -1 : 1));
      for (const s of order.slice(0, extra)) await this.sandboxes.deletePooled(s.id);
      return;
    }
    const snap = await this.store.getSnapshotById(pool.snapshot_id);
    if (!snap || snap.status !== "ready") return;
    for (let missing = -extra; missing > 0 && !this.closed; missing--) {
      const wait = this.backoff.get(pool.id);
      if (wait && Date.now() < wait.until) return; // the repair tick tries again later
      // Re-read: the pool may have been resized or deleted while the last one booted.
      const current = (await this.store.listPools()).find((p) => p.id === pool.id);
      if (!current || (await this.members(pool.id)).filter((m) => m.status === "ready" || m.status === "provisioning").length >= current.size) return;
      await this.acquireSlot();
      try {
        if (this.closed) return;
        await this.sandboxes.bootPooled(current, snap);
        this.backoff.delete(pool.id);
      } catch (e) {
        const failures = (wait?.failures ?? 0) + 1;
        const delay = Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** (failures - 1));
        this.backoff.set(pool.id, { failures, until: Date.now() + delay });
        this.log.warn({ poolId: pool.id, err: (e as Error).message, retryInMs: delay }, "pooled sandbox failed to boot");
        return;
      } finally {
        this.releaseSlot();
      }
    }
  }

  private acquireSlot(): Promise<void> {
    if (this.slots > 0 || this.closed) {
      this.slots--;
      return Promise.resolve();
    }
    return new Promise((r) => this.waiters.push(() => (this.slots--, r())));
  }

  private releaseSlot(): void {
    this.slots++;
    this.waiters.shift()?.();
  }
}

const idParams = z.object({ id: z.string().min(1).max(128) });

/** Control plane: /pools (mounted under both control prefixes). */
export function poolRoutes(app: FastifyInstance, pools: PoolService): void {
  app.post("/pools", async (req, reply) => {
    const body = parse(createPoolRequest, req.body, "body");
    return reply.status(201).send(await pools.view(await pools.create(req.workspaceId, body)));
  });
  app.get("/pools", async (req) => {
    const views = await Promise.all((await pools.list(req.workspaceId)).map((p) => pools.view(p)));
    return { pools: views };
  });
  app.get("/pools/:id", async (req) => {
    const { id } = parse(idParams, req.params, "params");
    return pools.view(await pools.get(req.workspaceId, id));
  });
  app.patch("/pools/:id", async (req) => {
    const { id } = parse(idParams, req.params, "params");
    const body = parse(updatePoolRequest, req.body, "body");
    return pools.view(await pools.resize(req.workspaceId, id, body.size));
  });
  app.delete("/pools/:id", async (req, reply) => {
    const { id } = parse(idParams, req.params, "params");
    await pools.delete(req.workspaceId, id);
    return reply.status(204).send();
  });
}
