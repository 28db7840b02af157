/** Schema migrations; index i upgrades user_version i to i+1. Never edit a shipped entry. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
  );
  CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
  );
  CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    docker_image TEXT,
    image_digest TEXT,
    source_sandbox_id TEXT,
    fs_capacity_bytes INTEGER NOT NULL,
    fs_used_bytes INTEGER,
    registry_id TEXT,
    layers TEXT NOT NULL,
    image_config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (workspace_id, name)
  );
  CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    snapshot_id TEXT NOT NULL,
    idle_ttl_seconds INTEGER NOT NULL,
    delete_after_stop_seconds INTEGER NOT NULL,
    stopped_at TEXT,
    vcpus REAL NOT NULL,
    mem_bytes INTEGER NOT NULL,
    fs_capacity_bytes INTEGER NOT NULL,
    labels TEXT NOT NULL,
    runtime TEXT NOT NULL,
    net_index INTEGER,
    agent_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_active_at TEXT NOT NULL,
    UNIQUE (workspace_id, name)
  );
  CREATE INDEX sandboxes_snapshot ON sandboxes(snapshot_id);
  `,
  `
  ALTER TABLE snapshots ADD COLUMN parent_snapshot_id TEXT;
  `,
  // Sandboxes made before egress policies had no egress at all.
  `
  ALTER TABLE sandboxes ADD COLUMN network_policy TEXT NOT NULL DEFAULT '{"egress":"deny_all","allow_cidrs":[],"allow_domains":[]}';
  `,
  `
  ALTER TABLE snapshots ADD COLUMN memory_snapshot_size_bytes INTEGER;
  ALTER TABLE snapshots ADD COLUMN agent_token TEXT;
  ALTER TABLE sandboxes ADD COLUMN preserve_memory_on_stop INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE sandboxes ADD COLUMN memory_preserved INTEGER NOT NULL DEFAULT 0;
  `,
  `
  CREATE TABLE registries (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    username TEXT,
    password_enc TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (workspace_id, name)
  );
  `,
  // Dockerfile build steps by cache key; layer is null for steps that only change the config.
  `
  CREATE TABLE build_cache (
    key TEXT PRIMARY KEY,
    layer TEXT,
    created_at TEXT NOT NULL
  );
  `,
  // Warm pools; a sandbox with a pool_id is pooled (booted, unclaimed, invisible to the API).
  `
  CREATE TABLE pools (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    vcpus REAL NOT NULL,
    mem_bytes INTEGER NOT NULL,
    fs_capacity_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (snapshot_id, vcpus, mem_bytes, fs_capacity_bytes)
  );
  ALTER TABLE sandboxes ADD COLUMN pool_id TEXT;
  CREATE INDEX sandboxes_pool ON sandboxes(pool_id);
  `,
  // Per-workspace quota overrides (JSON of QuotaNumbers fields; null: the server's defaults).
  `
  ALTER TABLE workspaces ADD COLUMN quotas TEXT;
  `,
];
