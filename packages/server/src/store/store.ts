import type { ApiKeyRecord, Page, PoolRecord, RegistryRecord, SandboxRecord, SnapshotRecord, WorkspaceRecord } from "./records.js";
import type { QuotaNumbers, QuotaView, SandboxStatus } from "@sandbar/shared";

export interface SandboxListFilter extends Page {
  nameContains?: string;
  status?: SandboxStatus;
  sortBy: "created_at" | "updated_at" | "name";
  sortDirection: "asc" | "desc";
}

export interface SnapshotListFilter extends Page {
  nameContains?: string;
}

/**
 * Metadata store. SQLite is the embedded implementation; the interface is async so
 * that a networked database can implement it too. Name uniqueness is enforced by the
 * store: inserts and renames throw {@link NameTakenError}.
 */
export interface Store {
  close(): void;

  createWorkspace(ws: WorkspaceRecord): Promise<void>;
  getWorkspace(id: string): Promise<WorkspaceRecord | undefined>;
  getWorkspaceByName(name: string): Promise<WorkspaceRecord | undefined>;
  listWorkspaces(): Promise<WorkspaceRecord[]>;
  /** Replace a workspace's quota overrides (null: the server's defaults). */
  setWorkspaceQuotas(id: string, quotas: Partial<QuotaNumbers> | null): Promise<void>;
  /** What a workspace's sandboxes (pooled ones left out) use now; see {@link QuotaNumbers}. */
  workspaceUsage(workspaceId: string): Promise<QuotaView["usage"]>;

  createApiKey(key: ApiKeyRecord): Promise<void>;
  findApiKeyByHash(hash: string): Promise<ApiKeyRecord | undefined>;
  listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]>;
  revokeApiKey(id: string, at: string): Promise<boolean>;

  insertSnapshot(s: SnapshotRecord): Promise<void>;
  updateSnapshot(id: string, patch: Partial<SnapshotRecord>): Promise<void>;
  getSnapshot(workspaceId: string, idOrName: string): Promise<SnapshotRecord | undefined>;
  getSnapshotById(id: string): Promise<SnapshotRecord | undefined>;
  listSnapshots(workspaceId: string, filter: SnapshotListFilter): Promise<SnapshotRecord[]>;
  listAllSnapshots(): Promise<SnapshotRecord[]>;
  deleteSnapshot(id: string): Promise<void>;
  /** How many snapshots (any workspace) and build-cache entries reference each layer digest. */
  layerReferenceCounts(): Promise<Map<string, number>>;

  insertSandbox(s: SandboxRecord): Promise<void>;
  updateSandbox(id: string, patch: Partial<SandboxRecord>): Promise<void>;
  /** Update only while the sandbox's status is `status` (atomically); false when it was not. */
  updateSandboxIf(id: string, status: SandboxStatus, patch: Partial<SandboxRecord>): Promise<boolean>;
  /** A sandbox of the workspace by id or name; pooled (unclaimed) sandboxes are never found. */
  getSandbox(workspaceId: string, nameOrId: string): Promise<SandboxRecord | undefined>;
  getSandboxById(id: string): Promise<SandboxRecord | undefined>;
  /** The workspace's sandboxes, pooled ones left out. */
  listSandboxes(workspaceId: string, filter: SandboxListFilter): Promise<SandboxRecord[]>;
  /** Every sandbox record, pooled ones included (recovery, monitor, retention). */
  listAllSandboxes(): Promise<SandboxRecord[]>;
  /** Claimed (not pooled) sandboxes of a snapshot. */
  countSandboxesUsingSnapshot(snapshotId: string): Promise<number>;
  /**
   * Atomically take the oldest ready sandbox of a pool: it leaves the pool and gets `patch`
   * (its new name, workspace fields, times). Undefined when none is ready. Throws
   * {@link NameTakenError} (and claims nothing) when the new name is taken.
   */
  claimPooledSandbox(poolId: string, patch: Partial<SandboxRecord>): Promise<SandboxRecord | undefined>;
  /** Atomically mark a still-pooled sandbox "deleting" so no claim can take it; false when it was claimed. */
  retirePooledSandbox(id: string, at: string): Promise<boolean>;
  deleteSandbox(id: string): Promise<void>;

  /** A cached Dockerfile step: undefined when unknown; `layer` null for config-only steps. */
  getBuildCache(key: string): Promise<{ layer: string | null } | undefined>;
  putBuildCache(key: string, layer: string | null, at: string): Promise<void>;

  insertRegistry(r: RegistryRecord): Promise<void>;
  updateRegistry(id: string, patch: Partial<RegistryRecord>): Promise<void>;
  getRegistry(workspaceId: string, idOrName: string): Promise<RegistryRecord | undefined>;
  listRegistries(workspaceId: string, filter: SnapshotListFilter): Promise<RegistryRecord[]>;
  deleteRegistry(id: string): Promise<void>;

  /** Throws {@link NameTakenError} ("pool") when one exists for the snapshot and size. */
  insertPool(p: PoolRecord): Promise<void>;
  updatePool(id: string, patch: Partial<PoolRecord>): Promise<void>;
  getPool(workspaceId: string, id: string): Promise<PoolRecord | undefined>;
  /** Pools of one workspace, or of every workspace. */
  listPools(workspaceId?: string): Promise<PoolRecord[]>;
  deletePool(id: string): Promise<void>;
}

/** Thrown by the store when a unique name is already used. */
export class NameTakenError extends Error {
  constructor(readonly kind: "sandbox" | "snapshot" | "workspace" | "registry" | "pool", readonly takenName: string) {
    super(`${kind} name '${takenName}' is already in use`);
    this.name = "NameTakenError";
  }
}
