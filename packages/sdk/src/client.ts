import type { NetworkPolicy, SandboxView, ServiceUrlView, SnapshotView } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";
import { ResourceCreationError, ResourceTimeoutError } from "./errors.js";
import { Sandbox } from "./sandbox.js";
import { ServiceUrl, type ServiceUrlOptions } from "./service-url.js";
import { Registries } from "./registries.js";
import { Pools } from "./pools.js";
import { buildForm, followBuild } from "./dockerfile-build.js";
import type { CaptureSnapshotOptions, CreateSandboxOptions, CreateSnapshotOptions, DockerfileBuildOptions, NetworkPolicyOptions, Quota, SandboxInfo, Snapshot, UpdateSandboxOptions } from "./types.js";
import type { WebSocketConstructor } from "./ws-stream.js";

/** Options of {@link SandboxClient}. @example `new SandboxClient({ endpoint: "http://127.0.0.1:8080", apiKey: "sb_...", maxRetries: 5 })` */
export interface SandboxClientOptions {
  /** Server URL (default: SANDBAR_ENDPOINT, else http://127.0.0.1:8080). */
  endpoint?: string;
  /** API key (default: SANDBAR_API_KEY). */
  apiKey?: string;
  /** Retries for connection failures and 429/502/503/504 (default 3). */
  maxRetries?: number;
  fetch?: typeof fetch;
  /**
   * WebSocket implementation used for streaming commands (default: the `ws` package when
   * installed, else `globalThis.WebSocket`). It must accept `(url, { headers })`.
   */
  webSocket?: WebSocketConstructor;
}

function env(name: string): string | undefined {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return p?.env?.[name];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The wire form of a network policy (lists the caller left out are not sent; the server defaults them to []). */
export function networkPolicyToWire(p: NetworkPolicyOptions): Partial<NetworkPolicy> & Pick<NetworkPolicy, "egress"> {
  const wire: Partial<NetworkPolicy> & Pick<NetworkPolicy, "egress"> = { egress: p.egress };
  if (p.allowCidrs !== undefined) wire.allow_cidrs = p.allowCidrs;
  if (p.allowDomains !== undefined) wire.allow_domains = p.allowDomains;
  return wire;
}

/**
 * Client of a sandbar server: snapshots, sandboxes, private registries (`registries`) and
 * warm pools (`pools`).
 *
 * @example
 * ```ts
 * import { SandboxClient } from "@sandbar/sdk";
 * const client = new SandboxClient(); // SANDBAR_ENDPOINT, SANDBAR_API_KEY
 * const snap = await client.createSnapshot("python", "python:3.12-slim", 1 << 30);
 * await client.withSandbox({ snapshotId: snap.id }, async (sb) => {
 *   console.log((await sb.run("python3 -c 'print(2 + 2)'")).stdout);
 * });
 * ```
 */
export class SandboxClient {
  private readonly http: HttpSettings;
  /**
   * Private registry credentials of the workspace: `create`, `list`, `get`, `update`, `delete`.
   *
   * @example
   * ```ts
   * await client.registries.create({ name: "ghcr", url: "https://ghcr.io", username: "me", password: token });
   * await client.createSnapshot("app", "ghcr.io/acme/app:1", undefined, { registryId: "ghcr" });
   * ```
   */
  readonly registries: Registries;
  /**
   * Warm pools of the workspace: `create`, `list`, `get`, `resize`, `delete`.
   *
   * @example
   * ```ts
   * await client.pools.create({ snapshotName: "python", size: 4 });
   * const sb = await client.createSandbox("python"); // ready at once while the pool has one
   * ```
   */
  readonly pools: Pools;

  constructor(opts: SandboxClientOptions = {}) {
    const endpoint = (opts.endpoint ?? env("SANDBAR_ENDPOINT") ?? "http://127.0.0.1:8080").replace(/\/$/, "");
    const base = /\/v2\/sandboxes$/.test(endpoint) ? endpoint : `${endpoint}/v2/sandboxes`;
    this.http = { baseUrl: base, apiKey: opts.apiKey ?? env("SANDBAR_API_KEY"), maxRetries: opts.maxRetries ?? 3, fetch: opts.fetch ?? globalThis.fetch.bind(globalThis), webSocket: opts.webSocket };
    this.registries = new Registries(this.http);
    this.pools = new Pools(this.http);
  }

  private url(path: string): string {
    return `${this.http.baseUrl}${path}`;
  }

  /**
   * Build a snapshot from an image and wait until it is ready (default 60 s). A private image
   * takes a registered registry (`registryId`, see {@link registries}) or inline credentials
   * (`registryUrl`, `registryUsername`, `registryPassword`); see {@link CreateSnapshotOptions}.
   *
   * @example
   * ```ts
   * const snap = await client.createSnapshot("python", "python:3.12-slim", 1024 ** 3, { timeout: 600 });
   * const app = await client.createSnapshot("app", "ghcr.io/acme/app:1", undefined, { registryId: "ghcr", timeout: 600 });
   * ```
   */
  async createSnapshot(name: string, dockerImage: string, fsCapacityBytes?: number, opts: CreateSnapshotOptions = {}): Promise<Snapshot> {
    const snap = await callJson<SnapshotView>(this.http, this.url("/snapshots"), "POST", {
      name,
      docker_image: dockerImage,
      fs_capacity_bytes: fsCapacityBytes,
      registry_id: opts.registryId,
      registry_url: opts.registryUrl,
      registry_username: opts.registryUsername,
      registry_password: opts.registryPassword,
    });
    return this.waitForSnapshot(snap.id, { timeout: opts.timeout ?? 60, onProgress: opts.onProgress });
  }

  /**
   * Build a snapshot from a Dockerfile on the server and wait until it is ready (default
   * timeout 1800 s for upload, build and wait together). The build context (`opts.context`) is
   * a directory (Node only; its `.dockerignore` applies) or a map of relative path -> content,
   * sent as a tar archive. The build log is followed as it is written and handed line by line
   * to `opts.onBuildLog`.
   *
   * Errors: `ValidationError` for a Dockerfile the server refuses (the message names the
   * line), a bad option or an unreadable context directory; `ResourceNameConflictError` for a
   * taken name; `ValidationError` (`PAYLOAD_TOO_LARGE`) for a context over the server's limit;
   * `ResourceCreationError` when the build fails (its `status_message` and the log's last
   * lines, also in `buildLogTail`); `ResourceTimeoutError` past `timeout` (the build goes on
   * on the server).
   *
   * @example
   * ```ts
   * const snap = await client.createSnapshotFromDockerfile("app", await readFile("./app/Dockerfile", "utf8"), {
   *   context: "./app",
   *   buildArgs: { PY_VERSION: "3.12" },
   *   onBuildLog: (line) => console.log(line),
   * });
   * const tiny = await client.createSnapshotFromDockerfile("tiny", "FROM python:3.12-slim\nCOPY main.py /app/\n", {
   *   context: { "main.py": "print('hi')\n" },
   * });
   * ```
   */
  async createSnapshotFromDockerfile(name: string, dockerfile: string, opts: DockerfileBuildOptions = {}): Promise<Snapshot> {
    const timeout = opts.timeout ?? 1800;
    const deadline = Date.now() + timeout * 1000;
    const timeoutError = (status: string): ResourceTimeoutError => {
      const err = new ResourceTimeoutError(`snapshot ${name} not built within ${timeout}s (last status ${status})`, undefined, undefined);
      err.resourceType = "snapshot";
      return err;
    };
    const form = await buildForm(name, dockerfile, opts);
    const signal = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
    let snap: SnapshotView;
    try {
      const res = await call(this.http, this.url("/snapshots/build"), { method: "POST", body: form, signal });
      snap = (await res.json()) as SnapshotView;
    } catch (e) {
      if (signal.aborted) throw timeoutError("uploading");
      throw e;
    }
    return followBuild(this.http, this, snap, opts.onBuildLog, deadline, timeoutError);
  }

  /**
   * The build log of a snapshot built from a Dockerfile, as written so far (the whole log once
   * the build ended).
   *
   * @example
   * ```ts
   * const log = await client.buildLog(snap.id);
   * console.log(log.split("\n").filter((l) => l.startsWith("Step ")).join("\n"));
   * ```
   */
  async buildLog(snapshotId: string): Promise<string> {
    const res = await call(this.http, this.url(`/snapshots/${encodeURIComponent(snapshotId)}/build-log`));
    return res.text();
  }

  /**
   * Capture a sandbox as a new snapshot and wait until it is ready. By default only its
   * filesystem (running or stopped sandbox): files under /tmp (a tmpfs) and running processes
   * are not kept. With `includeMemory` (a ready sandbox on runsc) its memory and processes are
   * saved too, and sandboxes created from the snapshot resume where it was; the snapshot's
   * `memory_snapshot_size_bytes` is the memory image's size. The sandbox is paused during the
   * capture and then runs on.
   *
   * @example
   * ```ts
   * const snap = await client.captureSnapshot("setup-box", "ml-ready", { timeout: 600 });
   * console.log(snap.id, snap.source_sandbox_id);
   * const warm = await client.captureSnapshot("setup-box", "ml-warm", { includeMemory: true, timeout: 600 });
   * const branch = await client.createSandbox({ snapshotId: warm.id }); // its processes resume
   * ```
   */
  async captureSnapshot(sandboxNameOrId: string, name: string, opts: CaptureSnapshotOptions = {}): Promise<Snapshot> {
    const snap = await callJson<SnapshotView>(this.http, this.url(`/boxes/${encodeURIComponent(sandboxNameOrId)}/snapshot`), "POST", {
      name,
      fs_capacity_bytes: opts.fsCapacityBytes,
      include_memory: opts.includeMemory,
    });
    return this.waitForSnapshot(snap.id, { timeout: opts.timeout ?? 60 });
  }

  /**
   * A link to one file of a sandbox that works without an API key (GET, HEAD, Range),
   * until it expires (never, when `expiresInSeconds` is omitted).
   *
   * @example
   * ```ts
   * const { download_url } = await client.generateDownloadURL("box-1", "/app/report.pdf", { expiresInSeconds: 3600 });
   * ```
   */
  generateDownloadURL(
    sandboxNameOrId: string,
    path: string,
    opts: { expiresInSeconds?: number; contentType?: string; contentDisposition?: "attachment" | "inline" } = {},
  ): Promise<{ download_url: string; token: string; expires_at: string | null }> {
    return callJson(this.http, this.url(`/boxes/${encodeURIComponent(sandboxNameOrId)}/download-url`), "POST", {
      path,
      expires_in_seconds: opts.expiresInSeconds,
      content_type: opts.contentType,
      content_disposition: opts.contentDisposition,
    });
  }

  /**
   * A token URL for an HTTP service listening on `port` inside a sandbox. The returned
   * {@link ServiceUrl} refreshes its token (asking this endpoint again, with the same
   * `expiresInSeconds`) when it nears expiry.
   *
   * @example
   * ```ts
   * const svc = await client.serviceUrl("box-1", 8000, { expiresInSeconds: 600 });
   * console.log(svc.browserUrl);
   * const res = await svc.fetch("/healthz");
   * ```
   */
  async serviceUrl(sandboxNameOrId: string, port: number, opts: ServiceUrlOptions = {}): Promise<ServiceUrl> {
    const mint = (): Promise<ServiceUrlView> =>
      callJson<ServiceUrlView>(this.http, this.url(`/boxes/${encodeURIComponent(sandboxNameOrId)}/service-url`), "POST", { port, expires_in_seconds: opts.expiresInSeconds }, { idempotent: true });
    return new ServiceUrl(await mint(), port, mint, this.http.fetch);
  }

  /** Get a snapshot by id or name. @example `const s = await client.getSnapshot("python")` */
  getSnapshot(idOrName: string): Promise<Snapshot> {
    return callJson<SnapshotView>(this.http, this.url(`/snapshots/${encodeURIComponent(idOrName)}`), "GET");
  }

  /** List snapshots (paged). @example `await client.listSnapshots({ nameContains: "py", limit: 100 })` */
  async listSnapshots(opts: { nameContains?: string; limit?: number; offset?: number } = {}): Promise<Snapshot[]> {
    const q = new URLSearchParams();
    if (opts.nameContains !== undefined) q.set("name_contains", opts.nameContains);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.offset !== undefined) q.set("offset", String(opts.offset));
    const r = await callJson<{ snapshots: Snapshot[] }>(this.http, this.url(`/snapshots${q.toString() ? `?${q.toString()}` : ""}`), "GET");
    return r.snapshots;
  }

  /** Delete a snapshot (refused while a sandbox uses it). @example `await client.deleteSnapshot(snap.id)` */
  async deleteSnapshot(idOrName: string): Promise<void> {
    await call(this.http, this.url(`/snapshots/${encodeURIComponent(idOrName)}`), { method: "DELETE" });
  }

  /** Poll until a snapshot is ready; throws on failure or timeout. @example `await client.waitForSnapshot(id, { timeout: 300 })` */
  async waitForSnapshot(id: string, opts: { timeout?: number; pollInterval?: number; onProgress?: (message: string) => void } = {}): Promise<Snapshot> {
    const deadline = Date.now() + (opts.timeout ?? 300) * 1000;
    let last = "building";
    for (;;) {
      const s = await this.getSnapshot(id);
      last = s.status;
      if (s.status === "ready") return s;
      if (s.status === "failed") throw new ResourceCreationError(s.status_message ?? `snapshot ${id} failed`, undefined, undefined);
      if (s.status_message) opts.onProgress?.(s.status_message);
      if (Date.now() >= deadline) {
        const err = new ResourceTimeoutError(`snapshot ${id} not ready within ${opts.timeout ?? 300}s (last status ${last})`, undefined, undefined);
        err.resourceType = "snapshot";
        throw err;
      }
      await sleep(Math.min((opts.pollInterval ?? 0.5) * 1000, Math.max(0, deadline - Date.now())));
    }
  }

  /**
   * Create a sandbox from a snapshot id, or from options naming a snapshot. From a snapshot
   * captured with memory the sandbox resumes its processes unless `restoreMemory: false`.
   *
   * @example
   * ```ts
   * const sb = await client.createSandbox(snapshotId);
   * const named = await client.createSandbox({ snapshotName: "python", name: "box-1", idleTtlSeconds: 300 });
   * const cold = await client.createSandbox({ snapshotName: "ml-warm", restoreMemory: false, preserveMemoryOnStop: true });
   * ```
   */
  async createSandbox(snapshotIdOrOptions: string | CreateSandboxOptions, options: CreateSandboxOptions = {}): Promise<Sandbox> {
    const o = typeof snapshotIdOrOptions === "string" ? { ...options, snapshotId: snapshotIdOrOptions } : snapshotIdOrOptions;
    const waitForReady = o.waitForReady ?? true;
    const timeout = o.timeout ?? 30;
    const body = {
      snapshot_id: o.snapshotId,
      snapshot_name: o.snapshotName,
      name: o.name,
      wait_for_ready: waitForReady,
      timeout,
      idle_ttl_seconds: o.idleTtlSeconds,
      delete_after_stop_seconds: o.deleteAfterStopSeconds,
      vcpus: o.vcpus,
      mem_bytes: o.memBytes,
      fs_capacity_bytes: o.fsCapacityBytes,
      labels: o.labels,
      network_policy: o.networkPolicy && networkPolicyToWire(o.networkPolicy),
      restore_memory: o.restoreMemory,
      preserve_memory_on_stop: o.preserveMemoryOnStop,
    };
    const info = await callJson<SandboxView>(this.http, this.url("/boxes"), "POST", body, { signal: AbortSignal.timeout((timeout + 30) * 1000) });
    return new Sandbox(info, this, this.http);
  }

  /**
   * Create a sandbox, run `fn` with it, and delete it afterwards, even on error.
   *
   * @example
   * ```ts
   * const out = await client.withSandbox({ snapshotId }, (sb) => sb.run("echo hi"));
   * ```
   */
  async withSandbox<T>(options: CreateSandboxOptions, fn: (sb: Sandbox) => Promise<T>): Promise<T> {
    const sb = await this.createSandbox(options);
    try {
      return await fn(sb);
    } finally {
      await sb[Symbol.asyncDispose]();
    }
  }

  /** Get a sandbox by name or id. @example `const sb = await client.getSandbox("box-1")` */
  async getSandbox(nameOrId: string): Promise<Sandbox> {
    return new Sandbox(await callJson<SandboxInfo>(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}`), "GET"), this, this.http);
  }

  /** List sandboxes. @example `for (const sb of await client.listSandboxes()) console.log(sb.name)` */
  async listSandboxes(opts: { nameContains?: string; status?: string; limit?: number; offset?: number } = {}): Promise<Sandbox[]> {
    const q = new URLSearchParams();
    if (opts.nameContains !== undefined) q.set("name_contains", opts.nameContains);
    if (opts.status !== undefined) q.set("status", opts.status);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.offset !== undefined) q.set("offset", String(opts.offset));
    const r = await callJson<{ sandboxes: SandboxInfo[] }>(this.http, this.url(`/boxes${q.toString() ? `?${q.toString()}` : ""}`), "GET");
    return r.sandboxes.map((s) => new Sandbox(s, this, this.http));
  }

  /**
   * Rename a sandbox, change its retention timers, replace its egress policy (a running
   * sandbox gets the new policy at once), or turn `preserveMemoryOnStop` on or off.
   *
   * @example
   * ```ts
   * await client.updateSandbox("box-1", { idleTtlSeconds: 1800, deleteAfterStopSeconds: 2592000 });
   * await client.updateSandbox("box-1", { preserveMemoryOnStop: true });
   * await client.updateSandbox("box-1", { networkPolicy: { egress: "allow_list", allowDomains: ["pypi.org"] } });
   * await client.updateSandbox("box-1", "box-2"); // rename
   * ```
   */
  async updateSandbox(nameOrId: string, update: string | UpdateSandboxOptions): Promise<Sandbox> {
    const u: UpdateSandboxOptions = typeof update === "string" ? { newName: update } : update;
    const body = {
      name: u.newName,
      idle_ttl_seconds: u.idleTtlSeconds,
      delete_after_stop_seconds: u.deleteAfterStopSeconds,
      network_policy: u.networkPolicy && networkPolicyToWire(u.networkPolicy),
      preserve_memory_on_stop: u.preserveMemoryOnStop,
    };
    return new Sandbox(await callJson<SandboxInfo>(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}`), "PATCH", body, { idempotent: u.newName === undefined }), this, this.http);
  }

  /**
   * Poll until a sandbox is ready; throws ResourceCreationError if it failed, ResourceTimeoutError on timeout.
   *
   * @example
   * ```ts
   * const sb = await client.createSandbox({ snapshotId, waitForReady: false });
   * await client.waitForSandbox(sb.name, { timeout: 60 });
   * ```
   */
  async waitForSandbox(nameOrId: string, opts: { timeout?: number; pollInterval?: number } = {}): Promise<Sandbox> {
    const timeout = opts.timeout ?? 120;
    const deadline = Date.now() + timeout * 1000;
    for (;;) {
      const { status, status_message } = await this.getSandboxStatus(nameOrId);
      if (status === "ready") return this.getSandbox(nameOrId);
      if (status === "failed") throw new ResourceCreationError(status_message ?? `sandbox ${nameOrId} failed`, undefined, undefined);
      if (Date.now() >= deadline) throw new ResourceTimeoutError(`sandbox ${nameOrId} not ready within ${timeout}s (last status ${status})`, undefined, undefined);
      await sleep(Math.min((opts.pollInterval ?? 0.25) * 1000, Math.max(0, deadline - Date.now())));
    }
  }

  /** Delete a sandbox by name or id. @example `await client.deleteSandbox("box-1")` */
  async deleteSandbox(nameOrId: string): Promise<void> {
    await call(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}`), { method: "DELETE" });
  }

  /**
   * The workspace's quotas (`limits`, null = no limit) and its usage now. A create or start
   * that would pass a limit fails with `QuotaExceededError`; sandboxes waiting in warm pools
   * do not count.
   *
   * @example `const { limits, usage } = await client.getQuota(); console.log(usage.sandboxes, "/", limits.sandboxes ?? "unlimited")`
   */
  getQuota(): Promise<Quota> {
    return callJson<Quota>(this.http, this.url("/quotas"), "GET");
  }

  /** Status of a sandbox. @example `const { status } = await client.getSandboxStatus("box-1")` */
  getSandboxStatus(nameOrId: string): Promise<{ status: string; status_message: string | null }> {
    return callJson(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}/status`), "GET");
  }

  /**
   * Stop a sandbox; files are kept. With `preserve_memory_on_stop` its memory and processes
   * are saved first (`info.memory_preserved`), and the next start resumes them.
   *
   * @example `const sb = await client.stopSandbox("box-1"); console.log(sb.info.memory_preserved)`
   */
  async stopSandbox(nameOrId: string): Promise<Sandbox> {
    return new Sandbox(await callJson<SandboxInfo>(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}/stop`), "POST", {}), this, this.http);
  }

  /**
   * Start a stopped sandbox and wait until ready. A sandbox stopped with its memory saved
   * resumes its processes; if that fails it boots from its files and `status_message` says so.
   *
   * @example `await client.startSandbox("box-1", { timeout: 120 })`
   */
  async startSandbox(nameOrId: string, opts: { timeout?: number } = {}): Promise<Sandbox> {
    const timeout = opts.timeout ?? 120;
    return new Sandbox(await callJson<SandboxInfo>(this.http, this.url(`/boxes/${encodeURIComponent(nameOrId)}/start`), "POST", { timeout }, { signal: AbortSignal.timeout((timeout + 30) * 1000) }), this, this.http);
  }
}
