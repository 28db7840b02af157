import { resolve } from "node:path";
import { z } from "zod";
import { EGRESS_MODES, MAX_POOL_SIZE, type EgressMode, type QuotaNumbers } from "@sandbar/shared";

/** Which OCI runtime runs sandboxes. */
export type RuntimeName = "runsc" | "runc";

const poolConfig = z
  .object({
    snapshot: z.string().min(1).max(128),
    size: z.number().int().min(0).max(MAX_POOL_SIZE),
    workspace: z.string().min(1).max(128).optional(),
    vcpus: z.number().min(0.1).max(64).optional(),
    mem_bytes: z.number().int().positive().optional(),
    fs_capacity_bytes: z.number().int().positive().optional(),
  })
  .strict();

/** A warm pool from SANDBAR_POOLS: a snapshot (name or id) of a workspace, a size, resources. */
export type PoolConfig = z.infer<typeof poolConfig>;

/**
 * SANDBAR_POOLS: `python:4,busybox:2` (snapshot name or id, size; default workspace and
 * sizes), or a JSON array of {snapshot, size, workspace?, vcpus?, mem_bytes?, fs_capacity_bytes?}.
 */
export function parsePools(value: string | undefined): PoolConfig[] {
  const v = (value ?? "").trim();
  if (v === "") return [];
  let raw: unknown;
  if (v.startsWith("[")) {
    try {
      raw = JSON.parse(v);
    } catch (e) {
      throw new Error(`SANDBAR_POOLS is not valid JSON: ${(e as Error).message}`);
    }
  } else {
    raw = v.split(",").map((item) => {
      const m = /^\s*([^:\s]+)\s*:\s*(\d+)\s*$/.exec(item);
      if (!m) throw new Error(`SANDBAR_POOLS entry '${item}' is not snapshot:size`);
      return { snapshot: m[1], size: Number(m[2]) };
    });
  }
  const parsed = z.array(poolConfig).safeParse(raw);
  if (!parsed.success) throw new Error(`SANDBAR_POOLS: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  return parsed.data;
}

/** Everything the composition root needs; built from flags and environment. */
export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Base URL clients use to reach this server (dataplane_url is built on it). */
  publicUrl: string;
  runtime: RuntimeName;
  /** State directory of the OCI runtime (its --root). */
  runtimeRoot: string | undefined;
  /** /16 (or smaller) IPv4 subnet carved into one /30 per sandbox. */
  subnet: string;
  agentPort: number;
  /** Path of the static agent binary to bind-mount into sandboxes. */
  agentBinary: string;
  /** Registries reached over plain HTTP / without TLS verification (host[:port]). */
  insecureRegistries: string[];
  bootstrapApiKey: string | undefined;
  logLevel: string;
  defaults: {
    idleTtlSeconds: number;
    deleteAfterStopSeconds: number;
    vcpus: number;
    memBytes: number;
    fsCapacityBytes: number;
    /** Egress of sandboxes created without a network_policy (SANDBAR_DEFAULT_EGRESS). */
    egress: EgressMode;
  };
  /** Resolvers ("ip" or "ip:port") the sandboxes' DNS proxy forwards to; empty = /etc/resolv.conf. */
  dnsUpstreams: string[];
  /**
   * Wildcard domain whose `{port}--{sandbox id}` subdomains reach this server. With it,
   * service_url uses subdomains; without it, service_url uses the path form and browser_url
   * uses `*.localhost` (browsers resolve it to loopback by themselves).
   */
  serviceDomain: string | undefined;
  /** Largest upload body accepted, in bytes. */
  maxUploadBytes: number;
  /**
   * Speed-up of retention time (idle stop, delete after stop): 60 makes a 60 s TTL fire
   * after 1 s. For tests and demos; 1 in production.
   */
  timeScale: number;
  /** How often the retention sweep runs, in real milliseconds. */
  retentionIntervalMs: number;
  /** How often running sandboxes are checked for unexpected death, in milliseconds. */
  monitorIntervalMs: number;
  /** Warm pools kept by this server (SANDBAR_POOLS); more can be made through /pools. */
  pools: PoolConfig[];
  /** Quotas of workspaces that have none of their own (SANDBAR_QUOTA_*; unset or 0: no limit). */
  quotas: QuotaNumbers;
}

function limit(value: string | undefined, name: string): number | null {
  const n = intFrom(value, 0);
  if (n < 0) throw new Error(`${name} must be >= 0 (0: no limit)`);
  return n === 0 ? null : n;
}

const GIB = 1024 * 1024 * 1024;

function intFrom(value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`not a number: ${value}`);
  return n;
}

function positive(n: number, name: string): number {
  if (!(n > 0)) throw new Error(`${name} must be > 0`);
  return n;
}

/** Defaults, overridden by SANDBAR_* environment variables, overridden by `overrides`. */
export function loadConfig(overrides: Partial<ServerConfig> = {}, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const host = overrides.host ?? env.SANDBAR_HOST ?? "127.0.0.1";
  const port = overrides.port ?? intFrom(env.SANDBAR_PORT, 8080);
  const dataDir = resolve(overrides.dataDir ?? env.SANDBAR_DATA_DIR ?? "/var/lib/sandbar");
  const runtime = (overrides.runtime ?? env.SANDBAR_RUNTIME ?? "runsc") as RuntimeName;
  if (runtime !== "runsc" && runtime !== "runc") throw new Error(`unknown runtime ${runtime} (runsc or runc)`);
  const publicHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return {
    host,
    port,
    dataDir,
    publicUrl: (overrides.publicUrl ?? env.SANDBAR_PUBLIC_URL ?? `http://${publicHost}:${port}`).replace(/\/$/, ""),
    runtime,
    runtimeRoot: overrides.runtimeRoot ?? env.SANDBAR_RUNTIME_ROOT ?? undefined,
    subnet: overrides.subnet ?? env.SANDBAR_SUBNET ?? "10.213.0.0/16",
    agentPort: overrides.agentPort ?? intFrom(env.SANDBAR_AGENT_PORT, 2024),
    agentBinary: overrides.agentBinary ?? env.SANDBAR_AGENT_BINARY ?? defaultAgentBinary(),
    insecureRegistries: overrides.insecureRegistries ?? (env.SANDBAR_INSECURE_REGISTRIES ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    bootstrapApiKey: overrides.bootstrapApiKey ?? (env.SANDBAR_API_KEY || undefined),
    logLevel: overrides.logLevel ?? env.SANDBAR_LOG_LEVEL ?? "info",
    defaults: {
      idleTtlSeconds: 600,
      deleteAfterStopSeconds: 14 * 24 * 3600,
      vcpus: 1,
      memBytes: 512 * 1024 * 1024,
      fsCapacityBytes: 1 * GIB,
      egress: egressMode(env.SANDBAR_DEFAULT_EGRESS ?? "allow_all"),
      ...overrides.defaults,
    },
    dnsUpstreams: overrides.dnsUpstreams ?? (env.SANDBAR_DNS_UPSTREAMS ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    serviceDomain: overrides.serviceDomain ?? (env.SANDBAR_SERVICE_DOMAIN || undefined),
    maxUploadBytes: overrides.maxUploadBytes ?? intFrom(env.SANDBAR_MAX_UPLOAD_BYTES, 16 * GIB),
    timeScale: positive(overrides.timeScale ?? intFrom(env.SANDBAR_TIME_SCALE, 1), "SANDBAR_TIME_SCALE"),
    monitorIntervalMs: positive(overrides.monitorIntervalMs ?? intFrom(env.SANDBAR_MONITOR_INTERVAL_MS, 2000), "SANDBAR_MONITOR_INTERVAL_MS"),
    pools: overrides.pools ?? parsePools(env.SANDBAR_POOLS),
    quotas: overrides.quotas ?? {
      sandboxes: limit(env.SANDBAR_QUOTA_SANDBOXES, "SANDBAR_QUOTA_SANDBOXES"),
      vcpus: limit(env.SANDBAR_QUOTA_VCPUS, "SANDBAR_QUOTA_VCPUS"),
      mem_bytes: limit(env.SANDBAR_QUOTA_MEM_BYTES, "SANDBAR_QUOTA_MEM_BYTES"),
      storage_bytes: limit(env.SANDBAR_QUOTA_STORAGE_BYTES, "SANDBAR_QUOTA_STORAGE_BYTES"),
    },
    retentionIntervalMs: positive(overrides.retentionIntervalMs ?? intFrom(env.SANDBAR_RETENTION_INTERVAL_MS, 10_000), "SANDBAR_RETENTION_INTERVAL_MS"),
  };
}

function egressMode(v: string): EgressMode {
  if (!(EGRESS_MODES as readonly string[]).includes(v)) throw new Error(`SANDBAR_DEFAULT_EGRESS must be one of ${EGRESS_MODES.join(", ")} (got ${v})`);
  return v as EgressMode;
}

/** The agent binary built by `agent/build.sh`, relative to this package. */
function defaultAgentBinary(): string {
  return resolve(new URL("../../../agent/bin/sandbar-agent", import.meta.url).pathname);
}
