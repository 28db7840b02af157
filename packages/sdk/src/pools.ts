import type { PoolView } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";

/**
 * A warm pool as the server describes it (snake_case, as on the wire): `size` sandboxes of one
 * snapshot and size kept booted; `ready` of them can be claimed now, `booting` are refills.
 *
 * @example
 * ```ts
 * const p: Pool = await client.pools.get(poolId);
 * console.log(p.snapshot_id, p.size, p.ready, p.booting);
 * ```
 */
export type Pool = PoolView;

/**
 * Fields of {@link Pools.create}: the snapshot (exactly one of `snapshotId`, `snapshotName`),
 * how many sandboxes to keep ready, and their size (server defaults when omitted; a create
 * must ask for the same size to be served by the pool).
 *
 * @example
 * ```ts
 * const opts: CreatePoolOptions = { snapshotName: "python", size: 4, memBytes: 1024 ** 3 };
 * await client.pools.create(opts);
 * ```
 */
export interface CreatePoolOptions {
  snapshotId?: string;
  snapshotName?: string;
  /** Sandboxes kept ready, 0-256. */
  size: number;
  vcpus?: number;
  memBytes?: number;
  fsCapacityBytes?: number;
}

/**
 * Warm pools of the workspace, as `client.pools`. A {@link SandboxClient.createSandbox} whose
 * snapshot and size match a pool takes one of its ready sandboxes (ready at once) and the pool
 * boots a replacement in the background. Pooled sandboxes are nobody's until claimed: they
 * are not listed and count against no quota.
 *
 * @example
 * ```ts
 * const pool = await client.pools.create({ snapshotName: "python", size: 4 });
 * const sb = await client.createSandbox("python"); // claimed from the pool when one is ready
 * await client.pools.resize(pool.id, 8);
 * await client.pools.delete(pool.id); // deletes the waiting sandboxes, not claimed ones
 * ```
 */
export class Pools {
  /** Made by {@link SandboxClient}; use `client.pools`. */
  constructor(private readonly http: HttpSettings) {}

  private url(path = ""): string {
    return `${this.http.baseUrl}/pools${path}`;
  }

  /**
   * Create a pool; it starts filling at once. `ResourceNameConflictError` (code `POOL_EXISTS`)
   * when the snapshot already has a pool of that size, `ResourceNotFoundError` for an unknown
   * snapshot.
   *
   * @example `const p = await client.pools.create({ snapshotId: snap.id, size: 2 })`
   */
  create(opts: CreatePoolOptions): Promise<Pool> {
    const body = { snapshot_id: opts.snapshotId, snapshot_name: opts.snapshotName, size: opts.size, vcpus: opts.vcpus, mem_bytes: opts.memBytes, fs_capacity_bytes: opts.fsCapacityBytes };
    return callJson<Pool>(this.http, this.url(), "POST", body);
  }

  /**
   * The workspace's pools, oldest first.
   *
   * @example `for (const p of await client.pools.list()) console.log(p.id, p.ready, "/", p.size)`
   */
  async list(): Promise<Pool[]> {
    return (await callJson<{ pools: Pool[] }>(this.http, this.url(), "GET")).pools;
  }

  /**
   * A pool by id; `ResourceNotFoundError` (code `POOL_NOT_FOUND`) when none.
   *
   * @example `const { ready } = await client.pools.get(poolId)`
   */
  get(id: string): Promise<Pool> {
    return callJson<Pool>(this.http, this.url(`/${encodeURIComponent(id)}`), "GET");
  }

  /**
   * Change how many sandboxes the pool keeps ready: growing boots the missing ones, shrinking
   * deletes the surplus; 0 keeps the pool empty.
   *
   * @example `await client.pools.resize(poolId, 8)`
   */
  resize(id: string, size: number): Promise<Pool> {
    return callJson<Pool>(this.http, this.url(`/${encodeURIComponent(id)}`), "PATCH", { size }, { idempotent: true });
  }

  /**
   * Delete a pool and the sandboxes waiting in it; sandboxes claimed from it are not touched.
   *
   * @example `await client.pools.delete(poolId)`
   */
  async delete(id: string): Promise<void> {
    await call(this.http, this.url(`/${encodeURIComponent(id)}`), { method: "DELETE" });
  }
}
