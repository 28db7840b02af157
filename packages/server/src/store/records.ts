import type { NetworkPolicy, QuotaNumbers, SandboxStatus, SnapshotStatus } from "@sandbar/shared";

export interface WorkspaceRecord {
  id: string;
  name: string;
  created_at: string;
  /** Limits set for this workspace (a field absent: the server's default; null: no limit). */
  quotas?: Partial<QuotaNumbers> | null;
}

export interface ApiKeyRecord {
  id: string;
  workspace_id: string;
  name: string;
  key_hash: string;
  /** First characters of the key, shown in listings. */
  prefix: string;
  created_at: string;
  revoked_at: string | null;
}

/** The parts of an OCI image config a sandbox needs to run. */
export interface ImageRunConfig {
  env: string[];
  workingDir: string;
  user: string;
  entrypoint: string[];
  cmd: string[];
}

export interface SnapshotRecord {
  id: string;
  workspace_id: string;
  name: string;
  status: SnapshotStatus;
  status_message: string | null;
  docker_image: string | null;
  image_digest: string | null;
  source_sandbox_id: string | null;
  fs_capacity_bytes: number;
  fs_used_bytes: number | null;
  registry_id: string | null;
  /** The snapshot a captured snapshot was layered on (null for image snapshots). */
  parent_snapshot_id: string | null;
  /** Layer digests, lowest first. */
  layers: string[];
  image_config: ImageRunConfig;
  /** Bytes of the memory image in `<data dir>/memory/<id>`; null without one. */
  memory_snapshot_size_bytes: number | null;
  /** The agent token baked into the memory image: sandboxes restored from it answer to it. */
  agent_token: string | null;
  created_at: string;
  updated_at: string;
}

export interface SandboxRecord {
  id: string;
  workspace_id: string;
  name: string;
  status: SandboxStatus;
  status_message: string | null;
  snapshot_id: string;
  idle_ttl_seconds: number;
  delete_after_stop_seconds: number;
  stopped_at: string | null;
  vcpus: number;
  mem_bytes: number;
  fs_capacity_bytes: number;
  labels: Record<string, string>;
  network_policy: NetworkPolicy;
  preserve_memory_on_stop: boolean;
  /** Stopped with its memory saved in `<sandbox dir>/memory`; the next start restores it. */
  memory_preserved: boolean;
  runtime: string;
  /** Index of the sandbox's /30 in the server's subnet; null while it has none. */
  net_index: number | null;
  agent_token: string;
  /** Set while the sandbox waits in a warm pool (unclaimed); null once a create claimed it. */
  pool_id: string | null;
  created_at: string;
  updated_at: string;
  last_active_at: string;
}

/** A warm pool: `size` pre-booted sandboxes of one snapshot and size, refilled after claims. */
export interface PoolRecord {
  id: string;
  workspace_id: string;
  snapshot_id: string;
  size: number;
  vcpus: number;
  mem_bytes: number;
  fs_capacity_bytes: number;
  source: "api" | "config";
  created_at: string;
  updated_at: string;
}

export interface Page {
  limit: number;
  offset: number;
}

/** Credentials for a private registry; the password only ever encrypted. */
export interface RegistryRecord {
  id: string;
  workspace_id: string;
  name: string;
  /** As given (`https://registry.example.com` or `registry.example.com:5000`). */
  url: string;
  /** host[:port] the url names; images from it use these credentials. */
  host: string;
  username: string | null;
  /** AES-256-GCM ciphertext (`v1.<iv>.<tag>.<data>`, base64url) of the password; null without one. */
  password_enc: string | null;
  created_at: string;
  updated_at: string;
}
