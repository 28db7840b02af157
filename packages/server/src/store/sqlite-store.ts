import Database from "better-sqlite3";
import type { ApiKeyRecord, PoolRecord, RegistryRecord, SandboxRecord, SnapshotRecord, WorkspaceRecord } from "./records.js";
import { NameTakenError, type SandboxListFilter, type SnapshotListFilter, type Store } from "./store.js";
import { MIGRATIONS } from "./migrations.js";
import type { QuotaNumbers, QuotaView, SandboxStatus } from "@sandbar/shared";

type Row = Record<string, unknown>;

const SANDBOX_JSON = new Set(["labels", "network_policy"]);
const SNAPSHOT_JSON = new Set(["layers", "image_config"]);
const NO_JSON = new Set<string>();
const WORKSPACE_JSON = new Set(["quotas"]);
/** SQLite has no booleans: these columns hold 0/1. */
const BOOL_COLUMNS = ["preserve_memory_on_stop", "memory_preserved"];

function encode(patch: Row, jsonCols: Set<string>): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    out[k] = jsonCols.has(k) ? JSON.stringify(v) : typeof v === "boolean" ? (v ? 1 : 0) : v;
  }
  return out;
}

function decode<T>(row: Row | undefined, jsonCols: Set<string>): T | undefined {
  if (!row) return undefined;
  const out: Row = { ...row };
  for (const col of jsonCols) {
    if (typeof out[col] === "string") out[col] = JSON.parse(out[col] as string);
  }
  for (const col of BOOL_COLUMNS) {
    if (col in out) out[col] = out[col] === 1;
  }
  return out as T;
}

function isUniqueViolation(e: unknown): boolean {
  return e instanceof Error && "code" in e && (e as { code: unknown }).code === "SQLITE_CONSTRAINT_UNIQUE";
}

/** Escape LIKE wildcards so name_contains is a plain substring. */
function likePattern(s: string): string {
  return `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** The embedded store: one SQLite file in the data dir, WAL mode, statements prepared once. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts: ReturnType<SqliteStore["prepare"]>;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("foreign_keys = ON");
    this.migrate();
    this.stmts = this.prepare();
  }

  private migrate(): void {
    const version = this.db.pragma("user_version", { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      const sql = MIGRATIONS[v];
      if (sql === undefined) break;
      this.db.transaction(() => {
        this.db.exec(sql);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  private prepare() {
    const db = this.db;
    return {
      insertWorkspace: db.prepare("INSERT INTO workspaces (id, name, created_at) VALUES (@id, @name, @created_at)"),
      usage: db.prepare(`
        SELECT COUNT(*) AS sandboxes,
          COALESCE(SUM(CASE WHEN status IN ('ready', 'provisioning') THEN vcpus ELSE 0 END), 0) AS vcpus,
          COALESCE(SUM(CASE WHEN status IN ('ready', 'provisioning') THEN mem_bytes ELSE 0 END), 0) AS mem_bytes,
          COALESCE(SUM(fs_capacity_bytes), 0) AS storage_bytes
        FROM sandboxes WHERE workspace_id = ? AND pool_id IS NULL AND status != 'deleting'`),
      getWorkspace: db.prepare("SELECT * FROM workspaces WHERE id = ?"),
      getWorkspaceByName: db.prepare("SELECT * FROM workspaces WHERE name = ?"),
      listWorkspaces: db.prepare("SELECT * FROM workspaces ORDER BY created_at"),
      insertKey: db.prepare(
        "INSERT INTO api_keys (id, workspace_id, name, key_hash, prefix, created_at, revoked_at) VALUES (@id, @workspace_id, @name, @key_hash, @prefix, @created_at, @revoked_at)",
      ),
      keyByHash: db.prepare("SELECT * FROM api_keys WHERE key_hash = ?"),
      listKeys: db.prepare("SELECT * FROM api_keys ORDER BY created_at"),
      listKeysWs: db.prepare("SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY created_at"),
      revokeKey: db.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
      getSnapshot: db.prepare("SELECT * FROM snapshots WHERE workspace_id = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1"),
      getSnapshotById: db.prepare("SELECT * FROM snapshots WHERE id = ?"),
      listAllSnapshots: db.prepare("SELECT * FROM snapshots"),
      deleteSnapshot: db.prepare("DELETE FROM snapshots WHERE id = ?"),
      getSandbox: db.prepare("SELECT * FROM sandboxes WHERE workspace_id = ? AND (id = ? OR name = ?) AND pool_id IS NULL ORDER BY id = ? DESC LIMIT 1"),
      getSandboxById: db.prepare("SELECT * FROM sandboxes WHERE id = ?"),
      listAllSandboxes: db.prepare("SELECT * FROM sandboxes"),
      countUsing: db.prepare("SELECT COUNT(*) AS n FROM sandboxes WHERE snapshot_id = ? AND pool_id IS NULL"),
      oldestPooled: db.prepare("SELECT id FROM sandboxes WHERE pool_id = ? AND status = 'ready' ORDER BY created_at, id LIMIT 1"),
      retirePooled: db.prepare("UPDATE sandboxes SET status = 'deleting', updated_at = ? WHERE id = ? AND pool_id IS NOT NULL"),
      getPool: db.prepare("SELECT * FROM pools WHERE workspace_id = ? AND id = ?"),
      listPools: db.prepare("SELECT * FROM pools ORDER BY created_at, id"),
      listPoolsWs: db.prepare("SELECT * FROM pools WHERE workspace_id = ? ORDER BY created_at, id"),
      deletePool: db.prepare("DELETE FROM pools WHERE id = ?"),
      deleteSandbox: db.prepare("DELETE FROM sandboxes WHERE id = ?"),
      getRegistry: db.prepare("SELECT * FROM registries WHERE workspace_id = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1"),
      deleteRegistry: db.prepare("DELETE FROM registries WHERE id = ?"),
    };
  }

  close(): void {
    this.db.close();
  }

  async createWorkspace(ws: WorkspaceRecord): Promise<void> {
    try {
      this.stmts.insertWorkspace.run(ws);
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError("workspace", ws.name);
      throw e;
    }
  }
  async getWorkspace(id: string): Promise<WorkspaceRecord | undefined> {
    return decode<WorkspaceRecord>(this.stmts.getWorkspace.get(id) as Row | undefined, WORKSPACE_JSON);
  }
  async getWorkspaceByName(name: string): Promise<WorkspaceRecord | undefined> {
    return decode<WorkspaceRecord>(this.stmts.getWorkspaceByName.get(name) as Row | undefined, WORKSPACE_JSON);
  }
  async listWorkspaces(): Promise<WorkspaceRecord[]> {
    return (this.stmts.listWorkspaces.all() as Row[]).map((r) => decode<WorkspaceRecord>(r, WORKSPACE_JSON) as WorkspaceRecord);
  }
  async setWorkspaceQuotas(id: string, quotas: Partial<QuotaNumbers> | null): Promise<void> {
    this.db.prepare("UPDATE workspaces SET quotas = ? WHERE id = ?").run(quotas === null ? null : JSON.stringify(quotas), id);
  }
  async workspaceUsage(workspaceId: string): Promise<QuotaView["usage"]> {
    return this.stmts.usage.get(workspaceId) as QuotaView["usage"];
  }

  async createApiKey(key: ApiKeyRecord): Promise<void> {
    this.stmts.insertKey.run(key);
  }
  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    return this.stmts.keyByHash.get(hash) as ApiKeyRecord | undefined;
  }
  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    return (workspaceId ? this.stmts.listKeysWs.all(workspaceId) : this.stmts.listKeys.all()) as ApiKeyRecord[];
  }
  async revokeApiKey(id: string, at: string): Promise<boolean> {
    return this.stmts.revokeKey.run(at, id).changes > 0;
  }

  async insertSnapshot(s: SnapshotRecord): Promise<void> {
    const row = encode(s as unknown as Row, SNAPSHOT_JSON);
    const cols = Object.keys(row);
    try {
      this.db.prepare(`INSERT INTO snapshots (${cols.join(", ")}) VALUES (${cols.map((c) => `@${c}`).join(", ")})`).run(row);
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError("snapshot", s.name);
      throw e;
    }
  }
  async updateSnapshot(id: string, patch: Partial<SnapshotRecord>): Promise<void> {
    this.update("snapshots", id, encode(patch as Row, SNAPSHOT_JSON), "snapshot", patch.name);
  }
  async getSnapshot(workspaceId: string, idOrName: string): Promise<SnapshotRecord | undefined> {
    return decode<SnapshotRecord>(this.stmts.getSnapshot.get(workspaceId, idOrName, idOrName, idOrName) as Row | undefined, SNAPSHOT_JSON);
  }
  async getSnapshotById(id: string): Promise<SnapshotRecord | undefined> {
    return decode<SnapshotRecord>(this.stmts.getSnapshotById.get(id) as Row | undefined, SNAPSHOT_JSON);
  }
  async listSnapshots(workspaceId: string, f: SnapshotListFilter): Promise<SnapshotRecord[]> {
    const where = ["workspace_id = @ws"];
    const params: Row = { ws: workspaceId, limit: f.limit, offset: f.offset };
    if (f.nameContains) {
      where.push("name LIKE @like ESCAPE '\\' COLLATE NOCASE");
      params.like = likePattern(f.nameContains);
    }
    // Names starting with "." are a build's helper records (users cannot make such names).
    where.push("name NOT LIKE '.%'");
    const sql = `SELECT * FROM snapshots WHERE ${where.join(" AND ")} ORDER BY created_at DESC, id LIMIT @limit OFFSET @offset`;
    return (this.db.prepare(sql).all(params) as Row[]).map((r) => decode<SnapshotRecord>(r, SNAPSHOT_JSON) as SnapshotRecord);
  }
  async listAllSnapshots(): Promise<SnapshotRecord[]> {
    return (this.stmts.listAllSnapshots.all() as Row[]).map((r) => decode<SnapshotRecord>(r, SNAPSHOT_JSON) as SnapshotRecord);
  }
  async deleteSnapshot(id: string): Promise<void> {
    this.stmts.deleteSnapshot.run(id);
  }
  async layerReferenceCounts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const s of await this.listAllSnapshots()) {
      for (const d of s.layers) counts.set(d, (counts.get(d) ?? 0) + 1);
    }
    for (const r of this.db.prepare("SELECT layer FROM build_cache WHERE layer IS NOT NULL").all() as { layer: string }[]) {
      counts.set(r.layer, (counts.get(r.layer) ?? 0) + 1);
    }
    return counts;
  }

  async insertSandbox(s: SandboxRecord): Promise<void> {
    const row = encode(s as unknown as Row, SANDBOX_JSON);
    const cols = Object.keys(row);
    try {
      this.db.prepare(`INSERT INTO sandboxes (${cols.join(", ")}) VALUES (${cols.map((c) => `@${c}`).join(", ")})`).run(row);
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError("sandbox", s.name);
      throw e;
    }
  }
  async updateSandbox(id: string, patch: Partial<SandboxRecord>): Promise<void> {
    this.update("sandboxes", id, encode(patch as Row, SANDBOX_JSON), "sandbox", patch.name);
  }
  async updateSandboxIf(id: string, status: SandboxStatus, patch: Partial<SandboxRecord>): Promise<boolean> {
    const row = encode(patch as Row, SANDBOX_JSON);
    const cols = Object.keys(row).filter((c) => c !== "id");
    const sql = `UPDATE sandboxes SET ${cols.map((c) => `${c} = @${c}`).join(", ")} WHERE id = @id AND status = @expected`;
    return this.db.prepare(sql).run({ ...row, id, expected: status }).changes > 0;
  }
  async getSandbox(workspaceId: string, nameOrId: string): Promise<SandboxRecord | undefined> {
    return decode<SandboxRecord>(this.stmts.getSandbox.get(workspaceId, nameOrId, nameOrId, nameOrId) as Row | undefined, SANDBOX_JSON);
  }
  async getSandboxById(id: string): Promise<SandboxRecord | undefined> {
    return decode<SandboxRecord>(this.stmts.getSandboxById.get(id) as Row | undefined, SANDBOX_JSON);
  }
  async listSandboxes(workspaceId: string, f: SandboxListFilter): Promise<SandboxRecord[]> {
    const where = ["workspace_id = @ws", "pool_id IS NULL"];
    const params: Row = { ws: workspaceId, limit: f.limit, offset: f.offset };
    if (f.nameContains) {
      where.push("name LIKE @like ESCAPE '\\' COLLATE NOCASE");
      params.like = likePattern(f.nameContains);
    }
    if (f.status) {
      where.push("status = @status");
      params.status = f.status;
    }
    // sortBy/sortDirection come from a zod enum, never from raw input.
    const order = `${f.sortBy} ${f.sortDirection === "asc" ? "ASC" : "DESC"}, id`;
    const sql = `SELECT * FROM sandboxes WHERE ${where.join(" AND ")} ORDER BY ${order} LIMIT @limit OFFSET @offset`;
    return (this.db.prepare(sql).all(params) as Row[]).map((r) => decode<SandboxRecord>(r, SANDBOX_JSON) as SandboxRecord);
  }
  async listAllSandboxes(): Promise<SandboxRecord[]> {
    return (this.stmts.listAllSandboxes.all() as Row[]).map((r) => decode<SandboxRecord>(r, SANDBOX_JSON) as SandboxRecord);
  }
  async countSandboxesUsingSnapshot(snapshotId: string): Promise<number> {
    return (this.stmts.countUsing.get(snapshotId) as { n: number }).n;
  }
  async deleteSandbox(id: string): Promise<void> {
    this.stmts.deleteSandbox.run(id);
  }
  async claimPooledSandbox(poolId: string, patch: Partial<SandboxRecord>): Promise<SandboxRecord | undefined> {
    // One synchronous transaction: no other request (or server) can take the same sandbox.
    const claim = this.db.transaction((): string | undefined => {
      const row = this.stmts.oldestPooled.get(poolId) as { id: string } | undefined;
      if (!row) return undefined;
      this.update("sandboxes", row.id, encode({ ...patch, pool_id: null } as Row, SANDBOX_JSON), "sandbox", patch.name);
      return row.id;
    });
    const id = claim();
    return id === undefined ? undefined : this.getSandboxById(id);
  }
  async retirePooledSandbox(id: string, at: string): Promise<boolean> {
    return this.stmts.retirePooled.run(at, id).changes > 0;
  }

  async getBuildCache(key: string): Promise<{ layer: string | null } | undefined> {
    return this.db.prepare("SELECT layer FROM build_cache WHERE key = ?").get(key) as { layer: string | null } | undefined;
  }
  async putBuildCache(key: string, layer: string | null, at: string): Promise<void> {
    this.db.prepare("INSERT OR REPLACE INTO build_cache (key, layer, created_at) VALUES (?, ?, ?)").run(key, layer, at);
  }

  async insertRegistry(r: RegistryRecord): Promise<void> {
    const row = encode(r as unknown as Row, NO_JSON);
    const cols = Object.keys(row);
    try {
      this.db.prepare(`INSERT INTO registries (${cols.join(", ")}) VALUES (${cols.map((c) => `@${c}`).join(", ")})`).run(row);
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError("registry", r.name);
      throw e;
    }
  }
  async updateRegistry(id: string, patch: Partial<RegistryRecord>): Promise<void> {
    this.update("registries", id, encode(patch as Row, NO_JSON), "registry", patch.name);
  }
  async getRegistry(workspaceId: string, idOrName: string): Promise<RegistryRecord | undefined> {
    return decode<RegistryRecord>(this.stmts.getRegistry.get(workspaceId, idOrName, idOrName, idOrName) as Row | undefined, NO_JSON);
  }
  async listRegistries(workspaceId: string, f: SnapshotListFilter): Promise<RegistryRecord[]> {
    const where = ["workspace_id = @ws"];
    const params: Row = { ws: workspaceId, limit: f.limit, offset: f.offset };
    if (f.nameContains) {
      where.push("name LIKE @like ESCAPE '\\' COLLATE NOCASE");
      params.like = likePattern(f.nameContains);
    }
    const sql = `SELECT * FROM registries WHERE ${where.join(" AND ")} ORDER BY created_at DESC, id LIMIT @limit OFFSET @offset`;
    return (this.db.prepare(sql).all(params) as Row[]).map((r) => decode<RegistryRecord>(r, NO_JSON) as RegistryRecord);
  }
  async deleteRegistry(id: string): Promise<void> {
    this.stmts.deleteRegistry.run(id);
  }

  async insertPool(p: PoolRecord): Promise<void> {
    const row = encode(p as unknown as Row, NO_JSON);
    const cols = Object.keys(row);
    try {
      this.db.prepare(`INSERT INTO pools (${cols.join(", ")}) VALUES (${cols.map((c) => `@${c}`).join(", ")})`).run(row);
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError("pool", p.snapshot_id);
      throw e;
    }
  }
  async updatePool(id: string, patch: Partial<PoolRecord>): Promise<void> {
    this.update("pools", id, encode(patch as Row, NO_JSON), "pool", patch.snapshot_id);
  }
  async getPool(workspaceId: string, id: string): Promise<PoolRecord | undefined> {
    return this.stmts.getPool.get(workspaceId, id) as PoolRecord | undefined;
  }
  async listPools(workspaceId?: string): Promise<PoolRecord[]> {
    return (workspaceId === undefined ? this.stmts.listPools.all() : this.stmts.listPoolsWs.all(workspaceId)) as PoolRecord[];
  }
  async deletePool(id: string): Promise<void> {
    this.stmts.deletePool.run(id);
  }

  private update(table: "sandboxes" | "snapshots" | "registries" | "pools", id: string, row: Row, kind: NameTakenError["kind"], name: unknown): void {
    const cols = Object.keys(row).filter((c) => c !== "id");
    if (cols.length === 0) return;
    try {
      this.db.prepare(`UPDATE ${table} SET ${cols.map((c) => `${c} = @${c}`).join(", ")} WHERE id = @id`).run({ ...row, id });
    } catch (e) {
      if (isUniqueViolation(e)) throw new NameTakenError(kind, String(name));
      throw e;
    }
  }
}
