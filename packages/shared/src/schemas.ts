import { z } from "zod";

/** Sandbox names double as hostnames and URL labels: a DNS label. */
export const SANDBOX_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Snapshot names: letters, digits, dot, dash and underscore. */
export const SNAPSHOT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

/** A retention timer: whole minutes, 0 disables. */
export const ttlSeconds = z
  .number()
  .int()
  .min(0)
  .max(MAX_TTL_SECONDS)
  .refine((v) => v % 60 === 0, { message: "must be a multiple of 60 seconds (0 disables)" });

export const sandboxName = z
  .string()
  .regex(SANDBOX_NAME_PATTERN, "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit");

export const snapshotName = z
  .string()
  .regex(SNAPSHOT_NAME_PATTERN, "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit");

/** Longest docker image reference accepted. */
const imageReference = z.string().min(1).max(512);

const MIB = 1024 * 1024;
const fsCapacity = z.number().int().min(64 * MIB).max(16 * 1024 * 1024 * MIB);
const memBytes = z.number().int().min(32 * MIB).max(1024 * 1024 * MIB);
const vcpus = z.number().min(0.1).max(64);

/** An IPv4 address or CIDR block, e.g. `10.1.2.3` or `10.1.0.0/16`. */
const IPV4 = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}`;
export const CIDR_PATTERN = new RegExp(`^${IPV4}(?:/(?:3[0-2]|[12]?\\d))?$`);
/** A domain name, or `*.` followed by one (any subdomain, not the apex). */
export const DOMAIN_PATTERN = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?$/i;

/** Egress modes: nothing, everything public, or only the listed CIDRs and domain names. */
export const EGRESS_MODES = ["deny_all", "allow_all", "allow_list"] as const;
export type EgressMode = (typeof EGRESS_MODES)[number];

/**
 * Where a sandbox may open connections. The host, the server's ports and other sandboxes are
 * closed in every mode; loopback, link-local (cloud metadata), multicast and reserved ranges are
 * closed unless an `allow_cidrs` entry names them.
 */
export const networkPolicy = z
  .object({
    egress: z.enum(EGRESS_MODES),
    allow_cidrs: z.array(z.string().regex(CIDR_PATTERN, "must be an IPv4 address or CIDR such as 10.0.0.0/8")).max(256).default([]),
    allow_domains: z
      .array(z.string().max(253).regex(DOMAIN_PATTERN, "must be a domain name such as example.com or *.example.com").transform((d) => d.toLowerCase().replace(/\.$/, "")))
      .max(256)
      .default([]),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.egress === "deny_all" && (v.allow_cidrs.length > 0 || v.allow_domains.length > 0)) {
      ctx.addIssue({ code: "custom", path: ["egress"], message: "deny_all takes no allow lists; use allow_list to admit some destinations" });
    }
    if (v.egress === "allow_all" && v.allow_domains.length > 0) {
      ctx.addIssue({ code: "custom", path: ["allow_domains"], message: "allow_all admits every domain; allow_domains applies to allow_list only" });
    }
  });
export type NetworkPolicy = z.infer<typeof networkPolicy>;

/** POST /boxes */
export const createSandboxRequest = z
  .object({
    snapshot_id: z.string().min(1).max(128).optional(),
    snapshot_name: z.string().min(1).max(128).optional(),
    name: sandboxName.optional(),
    wait_for_ready: z.boolean().default(true),
    timeout: z.number().min(0).max(3600).default(30),
    idle_ttl_seconds: ttlSeconds.optional(),
    delete_after_stop_seconds: ttlSeconds.optional(),
    vcpus: vcpus.optional(),
    mem_bytes: memBytes.optional(),
    fs_capacity_bytes: fsCapacity.optional(),
    labels: z.record(z.string().max(63), z.string().max(256)).optional(),
    network_policy: networkPolicy.optional(),
    /** From a memory snapshot: resume its processes (default) or boot from its files only. */
    restore_memory: z.boolean().optional(),
    /** Stop (also by the idle timer) saves memory and processes; start resumes them. */
    preserve_memory_on_stop: z.boolean().optional(),
  })
  .superRefine((v, ctx) => {
    if (v.snapshot_id !== undefined && v.snapshot_name !== undefined) {
      ctx.addIssue({ code: "custom", path: ["snapshot_id"], message: "pass exactly one of snapshot_id or snapshot_name, not both" });
    }
    if (v.snapshot_id === undefined && v.snapshot_name === undefined) {
      ctx.addIssue({ code: "custom", path: ["snapshot_id"], message: "one of snapshot_id or snapshot_name is required" });
    }
  });
export type CreateSandboxRequest = z.infer<typeof createSandboxRequest>;

/** PATCH /boxes/{name} */
export const updateSandboxRequest = z.object({
  name: sandboxName.optional(),
  idle_ttl_seconds: ttlSeconds.optional(),
  delete_after_stop_seconds: ttlSeconds.optional(),
  /** Replaces the egress policy; a running sandbox gets it at once. */
  network_policy: networkPolicy.optional(),
  preserve_memory_on_stop: z.boolean().optional(),
});
export type UpdateSandboxRequest = z.infer<typeof updateSandboxRequest>;

/** GET /boxes query */
export const listSandboxesQuery = z.object({
  name_contains: z.string().max(128).optional(),
  status: z.enum(["provisioning", "ready", "failed", "stopped", "deleting"]).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
  sort_by: z.enum(["created_at", "updated_at", "name"]).default("created_at"),
  sort_direction: z.enum(["asc", "desc"]).default("desc"),
});
export type ListSandboxesQuery = z.infer<typeof listSandboxesQuery>;

/** Registry addresses: `https://host[:port]`, `host[:port]` (a path after the host is ignored). */
const registryUrl = z
  .string()
  .min(1)
  .max(512)
  .regex(/^(?:https?:\/\/)?[A-Za-z0-9.-]+(?::\d{1,5})?(?:\/[^\s]*)?$/, "must be a registry address such as https://registry.example.com or registry.example.com:5000");

/** POST /snapshots */
export const createSnapshotRequest = z
  .object({
    name: snapshotName,
    docker_image: imageReference,
    fs_capacity_bytes: fsCapacity.optional(),
    /** A registered registry (id or name) whose credentials pull the image. */
    registry_id: z.string().min(1).max(128).optional(),
    /** Inline credentials, used for this pull only and never stored. */
    registry_url: registryUrl.optional(),
    registry_username: z.string().min(1).max(256).optional(),
    registry_password: z.string().min(1).max(4096).optional(),
  })
  .superRefine((v, ctx) => {
    const inline = v.registry_url !== undefined || v.registry_username !== undefined || v.registry_password !== undefined;
    if (inline && v.registry_id !== undefined) ctx.addIssue({ code: "custom", path: ["registry_id"], message: "pass either registry_id or inline registry credentials, not both" });
    if (inline && (v.registry_username === undefined) !== (v.registry_password === undefined)) {
      ctx.addIssue({ code: "custom", path: ["registry_password"], message: "registry_username and registry_password go together" });
    }
  });
export type CreateSnapshotRequest = z.infer<typeof createSnapshotRequest>;

/** POST /boxes/{name}/snapshot: capture the sandbox's filesystem as a new snapshot. */
export const captureSnapshotRequest = z.object({
  name: snapshotName,
  docker_image: imageReference.optional(),
  fs_capacity_bytes: fsCapacity.optional(),
  /** Also save memory and processes: sandboxes created from it resume where this one was. */
  include_memory: z.boolean().optional(),
  /**
   * In the LangSmith protocol, the name of an existing checkpoint to promote. This server keeps
   * no separate checkpoints, so it is refused rather than silently ignored.
   */
  checkpoint: z
    .string()
    .max(256)
    .optional()
    .refine((v) => v === undefined, { message: "promoting an existing checkpoint is not supported; capture the running sandbox with include_memory: true" }),
});
export type CaptureSnapshotRequest = z.infer<typeof captureSnapshotRequest>;

/** GET /snapshots query */
export const listSnapshotsQuery = z.object({
  name_contains: z.string().max(128).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});
export type ListSnapshotsQuery = z.infer<typeof listSnapshotsQuery>;

const envMap = z.record(z.string().min(1).max(1024), z.string().max(128 * 1024));

/** POST {dataplane}/execute */
export const executeRequest = z.object({
  command: z.string().min(1).max(1024 * 1024),
  timeout: z.number().min(0).max(7 * 24 * 3600).default(60),
  shell: z.string().min(1).max(256).default("/bin/bash"),
  env: envMap.optional(),
  cwd: z.string().min(1).max(4096).optional(),
});
export type ExecuteRequest = z.infer<typeof executeRequest>;

/** Query of upload/download: an absolute path inside the sandbox. */
export const filePathQuery = z.object({
  path: z.string().min(1).max(4096).refine((p) => p.startsWith("/"), { message: "must be an absolute path" }).refine((p) => !p.includes("\0"), { message: "must not contain NUL" }),
});

/** Sandbox status values. */
export type SandboxStatus = "provisioning" | "ready" | "failed" | "stopped" | "deleting";
/** Snapshot status values. */
export type SnapshotStatus = "building" | "ready" | "failed" | "deleting";

/** A sandbox as the API returns it. */
export interface SandboxView {
  id: string;
  name: string;
  status: SandboxStatus;
  status_message: string | null;
  dataplane_url: string;
  snapshot_id: string;
  idle_ttl_seconds: number;
  delete_after_stop_seconds: number;
  stopped_at: string | null;
  vcpus: number;
  mem_bytes: number;
  fs_capacity_bytes: number;
  labels: Record<string, string>;
  network_policy: NetworkPolicy;
  /** Stop keeps memory and processes, and start resumes them. */
  preserve_memory_on_stop: boolean;
  /** A stopped sandbox whose memory was saved: the next start resumes it. */
  memory_preserved: boolean;
  runtime: string;
  created_at: string;
  updated_at: string;
}

/** A snapshot as the API returns it. */
export interface SnapshotView {
  id: string;
  name: string;
  status: SnapshotStatus;
  status_message: string | null;
  docker_image: string | null;
  image_digest: string | null;
  source_sandbox_id: string | null;
  fs_capacity_bytes: number;
  fs_used_bytes: number | null;
  registry_id: string | null;
  /** Size of the saved memory and process state; null for a filesystem-only snapshot. */
  memory_snapshot_size_bytes: number | null;
  created_at: string;
  updated_at: string;
}

/** Result of a blocking command. */
export interface ExecuteResponse {
  stdout: string;
  stderr: string;
  exit_code: number;
}

/** POST /boxes/{name}/download-url: a link to one file that needs no API key. */
export const downloadUrlRequest = z.object({
  path: z.string().min(1).max(4096).refine((p) => p.startsWith("/"), { message: "must be an absolute path" }),
  expires_in_seconds: z.number().int().min(1).max(10 * 365 * 24 * 3600).optional(),
  content_type: z.string().min(1).max(255).regex(/^[\x20-\x7e]+$/, "printable ASCII only").optional(),
  content_disposition: z.enum(["attachment", "inline"]).optional(),
});
export type DownloadUrlRequest = z.infer<typeof downloadUrlRequest>;

/** Longest lifetime of a service-URL token: 7 days. */
export const MAX_SERVICE_URL_SECONDS = 7 * 24 * 3600;

/** POST /boxes/{name}/service-url: a token URL for an HTTP service on one port. */
export const serviceUrlRequest = z
  .object({
    port: z.number().int().min(1).max(65535),
    expires_in_seconds: z.number().int().min(1).max(MAX_SERVICE_URL_SECONDS).optional(),
    access: z.string().max(32).optional(),
    embed_origins: z.array(z.string().max(256)).max(5).optional(),
  })
  .superRefine((v, ctx) => {
    if (v.embed_origins && v.embed_origins.length > 0) {
      ctx.addIssue({ code: "custom", path: ["embed_origins"], message: "embedding service URLs in other sites' iframes is not supported" });
    }
  });
export type ServiceUrlRequest = z.infer<typeof serviceUrlRequest>;

/** A service URL: browser_url sets a cookie and redirects; service_url takes the token header. */
export interface ServiceUrlView {
  browser_url: string;
  service_url: string;
  token: string;
  expires_at: string;
}

/** Workspace quotas; null is no limit. Sandboxes in warm pools do not count until claimed. */
export interface QuotaNumbers {
  /** Sandboxes of the workspace in any status but deleting. */
  sandboxes: number | null;
  /** vcpus of running (ready or starting) sandboxes. */
  vcpus: number | null;
  /** mem_bytes of running (ready or starting) sandboxes. */
  mem_bytes: number | null;
  /** fs_capacity_bytes of all its sandboxes, stopped ones included (their disks stay). */
  storage_bytes: number | null;
}

/** GET /quotas: the workspace's limits and what it uses now. */
export interface QuotaView {
  limits: QuotaNumbers;
  usage: { sandboxes: number; vcpus: number; mem_bytes: number; storage_bytes: number };
}

/** Largest warm pool: pre-booted sandboxes of one snapshot and size. */
export const MAX_POOL_SIZE = 256;

/**
 * POST /pools: keep `size` sandboxes of a snapshot booted and ready to claim. A create with
 * the same snapshot and resources (vcpus, mem_bytes, fs_capacity_bytes, defaults applied)
 * takes one instead of booting.
 */
export const createPoolRequest = z
  .object({
    snapshot_id: z.string().min(1).max(128).optional(),
    snapshot_name: z.string().min(1).max(128).optional(),
    size: z.number().int().min(0).max(MAX_POOL_SIZE),
    vcpus: vcpus.optional(),
    mem_bytes: memBytes.optional(),
    fs_capacity_bytes: fsCapacity.optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.snapshot_id === undefined) === (v.snapshot_name === undefined)) {
      ctx.addIssue({ code: "custom", path: ["snapshot_id"], message: "pass exactly one of snapshot_id or snapshot_name" });
    }
  });
export type CreatePoolRequest = z.infer<typeof createPoolRequest>;

/** PATCH /pools/{id}: a new size; 0 keeps the pool but drains it. */
export const updatePoolRequest = z.object({ size: z.number().int().min(0).max(MAX_POOL_SIZE) }).strict();
export type UpdatePoolRequest = z.infer<typeof updatePoolRequest>;

/** A warm pool as the API returns it. */
export interface PoolView {
  id: string;
  snapshot_id: string;
  /** How many sandboxes the pool keeps ready. */
  size: number;
  vcpus: number;
  mem_bytes: number;
  fs_capacity_bytes: number;
  /** Pooled sandboxes ready to be claimed now. */
  ready: number;
  /** Pooled sandboxes booting (refills). */
  booting: number;
  /** "config" for pools from SANDBAR_POOLS (set again at every start), "api" otherwise. */
  source: "api" | "config";
  created_at: string;
  updated_at: string;
}

/** Registry names: like snapshot names. */
export const registryName = snapshotName;

const registryFields = {
  name: registryName,
  url: registryUrl,
  username: z.string().min(1).max(256).optional(),
  password: z.string().min(1).max(4096).optional(),
  /** Only DOCKER_CONFIG (username and password) exists here. */
  auth_type: z.enum(["DOCKER_CONFIG", "AWS_ROLE"]).optional(),
  aws_role_arn: z.string().max(2048).optional(),
};

function noAwsRole(v: { auth_type?: string; aws_role_arn?: string }, ctx: z.RefinementCtx): void {
  if (v.auth_type === "AWS_ROLE" || v.aws_role_arn !== undefined) {
    ctx.addIssue({ code: "custom", path: ["auth_type"], message: "AWS_ROLE registries are not supported by this server; use DOCKER_CONFIG with username and password" });
  }
}

/** POST /registries */
export const createRegistryRequest = z
  .object(registryFields)
  .superRefine((v, ctx) => {
    noAwsRole(v, ctx);
    if ((v.username === undefined) !== (v.password === undefined)) ctx.addIssue({ code: "custom", path: ["password"], message: "username and password go together" });
  });
export type CreateRegistryRequest = z.infer<typeof createRegistryRequest>;

/** PATCH /registries/{name} */
export const updateRegistryRequest = z
  .object({ ...registryFields, name: registryName.optional(), url: registryUrl.optional() })
  .superRefine(noAwsRole);
export type UpdateRegistryRequest = z.infer<typeof updateRegistryRequest>;

/** GET /registries query: limit/offset, or page_size/cursor. */
export const listRegistriesQuery = z.object({
  name_contains: z.string().max(128).optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
  offset: z.coerce.number().int().min(0).optional(),
  page_size: z.coerce.number().int().min(1).max(100).optional(),
  cursor: z.string().max(64).regex(/^\d+$/, "must be a cursor from next_cursor").optional(),
});
export type ListRegistriesQuery = z.infer<typeof listRegistriesQuery>;

/** A registry as the API returns it: never its password. */
export interface RegistryView {
  id: string;
  name: string;
  url: string;
  auth_type: "DOCKER_CONFIG";
  provider: "DOCKER_REGISTRY";
  username: string | null;
  /** Whether a password is stored (it is never returned). */
  has_password: boolean;
  created_at: string;
  updated_at: string;
}
