import type { QuotaView, SandboxView, SnapshotView } from "@sandbar/shared";

/**
 * A workspace's quotas as the server reports them: `limits` (null: no limit) of sandboxes,
 * vcpus and mem_bytes of running ones, and storage_bytes (fs_capacity_bytes of all, stopped
 * ones included), and `usage` of each now.
 *
 * @example
 * ```ts
 * const q: Quota = await client.getQuota();
 * if (q.limits.vcpus !== null && q.usage.vcpus + 2 > q.limits.vcpus) console.log("no room for 2 more vcpus");
 * ```
 */
export type Quota = QuotaView;

/**
 * A snapshot as the server describes it (snake_case, as on the wire).
 * `memory_snapshot_size_bytes` is the size of its saved memory and processes, or null for a
 * filesystem-only snapshot (see {@link CaptureSnapshotOptions.includeMemory}).
 *
 * @example
 * ```ts
 * const s: Snapshot = await client.getSnapshot("python");
 * console.log(s.status, s.memory_snapshot_size_bytes ?? "files only");
 * ```
 */
export type Snapshot = SnapshotView;
/**
 * A sandbox's fields as the server describes them (snake_case, as on the wire), including its
 * egress policy as `network_policy: { egress, allow_cidrs, allow_domains }`,
 * `preserve_memory_on_stop` (a stop saves memory and processes, the next start resumes them)
 * and `memory_preserved` (a stopped sandbox whose memory was saved).
 *
 * @example
 * ```ts
 * const info: SandboxInfo = sb.info;
 * info.dataplane_url; info.network_policy.egress;
 * if (info.status === "stopped" && info.memory_preserved) console.log("start resumes its processes");
 * ```
 */
export type SandboxInfo = SandboxView;

/**
 * Options of {@link SandboxClient.createSnapshot}. A private image is pulled either with a
 * registered registry (`registryId`, see `client.registries`) or with inline credentials
 * (`registryUrl`, `registryUsername`, `registryPassword`), never both (`ValidationError`). The
 * registry's `host[:port]` must be the image's registry, else `ValidationError`. Inline
 * credentials are used for this pull only: the server does not store them. Credentials the
 * registry refuses fail the build: `ResourceCreationError` with `registry HOST refused
 * authentication for IMAGE`.
 *
 * @example
 * ```ts
 * await client.createSnapshot("app", "ghcr.io/acme/app:1", undefined, { registryId: "ghcr", timeout: 600 });
 * const inline: CreateSnapshotOptions = { registryUrl: "ghcr.io", registryUsername: "me", registryPassword: token };
 * await client.createSnapshot("app-2", "ghcr.io/acme/app:2", 2 * 1024 ** 3, inline);
 * ```
 */
export interface CreateSnapshotOptions {
  /** A registry registered with `client.registries.create`, by id or name (sent as `registry_id`). */
  registryId?: string;
  /** Registry address of inline credentials, `https://host[:port]` or `host[:port]` (sent as `registry_url`). */
  registryUrl?: string;
  /** Inline username; goes with `registryPassword` (sent as `registry_username`). */
  registryUsername?: string;
  /** Inline password or token, for this pull only (sent as `registry_password`). */
  registryPassword?: string;
  /** Seconds to wait until the snapshot is ready (default 60). */
  timeout?: number;
  /** Called with build progress lines (`resolving ...`, `copying blob N`, `unpacking layer i/n`). */
  onProgress?: (message: string) => void;
}

/**
 * Options of {@link SandboxClient.createSnapshotFromDockerfile}. Sent as the multipart fields
 * `build_args` (a JSON object), `target`, `fs_capacity_bytes` and the file part `context` (a
 * ustar archive); options left out are not sent.
 *
 * @example
 * ```ts
 * const opts: DockerfileBuildOptions = {
 *   context: "./app",                        // a directory (Node), honouring its .dockerignore
 *   buildArgs: { PY_VERSION: "3.12" },
 *   target: "runtime",
 *   onBuildLog: (line) => console.log(line),
 *   timeout: 900,
 * };
 * await client.createSnapshotFromDockerfile("app", dockerfileText, opts);
 * await client.createSnapshotFromDockerfile("tiny", "FROM alpine:3.20\nCOPY hello.sh /\n", { context: { "hello.sh": "echo hi\n" } });
 * ```
 */
export interface DockerfileBuildOptions {
  /**
   * The build context, what `COPY` and `ADD` read: a directory path (Node only; its
   * `.dockerignore` applies, symlinks are sent as links), or a map of relative path -> content
   * (works in any runtime; sent as given, mode 0644, a key ending in `/` is an empty
   * directory). Omitted: no context (a Dockerfile without `COPY`/`ADD` of local files).
   */
  context?: string | Record<string, string | Uint8Array>;
  /** `ARG` values (sent as `build_args`, a JSON object of strings). */
  buildArgs?: Record<string, string>;
  /** Build up to this stage of a multi-stage Dockerfile (default: the last). */
  target?: string;
  /** Default disk size of sandboxes made from the snapshot (sent as `fs_capacity_bytes`). */
  fsCapacityBytes?: number;
  /** Called with each line of the build log as it comes (`Step 2/7 : RUN ...`, command output). */
  onBuildLog?: (line: string) => void;
  /** Seconds for the whole call: upload, build and wait (default 1800). */
  timeout?: number;
}

/**
 * Options of {@link SandboxClient.captureSnapshot} and {@link Sandbox.captureSnapshot}.
 *
 * @example
 * ```ts
 * const opts: CaptureSnapshotOptions = { includeMemory: true, timeout: 600 };
 * const snap = await sb.captureSnapshot("warmed-up", opts);
 * console.log(snap.memory_snapshot_size_bytes);
 * ```
 */
export interface CaptureSnapshotOptions {
  /**
   * Also save the sandbox's memory and processes (sent as `include_memory`): sandboxes created
   * from the snapshot resume where this one was, running processes, `/tmp`, command sessions
   * and listening servers included. Needs a `ready` sandbox on the `runsc` runtime
   * (`SandboxNotReadyError` for a stopped one, `ValidationError` on `runc`). Default false:
   * files only, and the sandbox may also be stopped.
   */
  includeMemory?: boolean;
  /** Seconds to wait until the snapshot is ready (default 60). */
  timeout?: number;
  /** Default disk size of sandboxes made from the snapshot (default: the sandbox's). */
  fsCapacityBytes?: number;
}

/**
 * Egress modes: `"deny_all"` (no outbound connections), `"allow_all"` (any public
 * destination) or `"allow_list"` (only `allowCidrs` and `allowDomains`).
 *
 * @example `const mode: EgressMode = "allow_list"`
 */
export type EgressMode = "deny_all" | "allow_all" | "allow_list";

/**
 * Where a sandbox may open connections, in the SDK's camelCase (sent as the wire's
 * `network_policy: { egress, allow_cidrs, allow_domains }`). The host, the server and other
 * sandboxes are unreachable in every mode; loopback, link-local (cloud metadata), multicast
 * and reserved ranges only when an `allowCidrs` entry names them. The server validates it:
 * `deny_all` takes no lists, `allow_all` no `allowDomains`.
 *
 * @example
 * ```ts
 * const policy: NetworkPolicyOptions = { egress: "allow_list", allowCidrs: ["10.0.0.0/8"], allowDomains: ["pypi.org", "*.pythonhosted.org"] };
 * await client.createSandbox({ snapshotName: "python", networkPolicy: policy });
 * ```
 */
export interface NetworkPolicyOptions {
  egress: EgressMode;
  /** IPv4 addresses or CIDR blocks, e.g. `"10.1.2.3"` or `"10.0.0.0/8"` (allow_list and allow_all). */
  allowCidrs?: string[];
  /** Domain names, or `*.` plus a name for any of its subdomains (allow_list only). */
  allowDomains?: string[];
}

/** Result of a finished command. @example `const { stdout, exit_code, success }: ExecutionResult = await sb.run("ls")` */
export interface ExecutionResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  /** True when exit_code is 0. */
  success: boolean;
}

/**
 * Options of {@link SandboxClient.createSandbox}.
 *
 * @example
 * ```ts
 * await client.createSandbox({ snapshotName: "python", name: "box", memBytes: 1 << 30 });
 * await client.createSandbox({ snapshotName: "warmed-up", name: "branch-a" }); // resumes a memory snapshot
 * await client.createSandbox({ snapshotName: "warmed-up", restoreMemory: false }); // its files only
 * await client.createSandbox({ snapshotName: "python", preserveMemoryOnStop: true }); // stop/start keep processes
 * ```
 */
export interface CreateSandboxOptions {
  snapshotId?: string;
  snapshotName?: string;
  name?: string;
  idleTtlSeconds?: number;
  deleteAfterStopSeconds?: number;
  vcpus?: number;
  memBytes?: number;
  fsCapacityBytes?: number;
  labels?: Record<string, string>;
  /** Egress policy (default: the server's default mode, `allow_all` unless its operator set SANDBAR_DEFAULT_EGRESS). */
  networkPolicy?: NetworkPolicyOptions;
  /**
   * From a snapshot captured with memory: `true` or omitted resumes its processes (runsc
   * restore), `false` boots from its files only. `true` for a snapshot without memory is a
   * `ValidationError`. Sent as `restore_memory`.
   */
  restoreMemory?: boolean;
  /**
   * Stopping the sandbox (by `stop()` or the idle timer) saves its memory and processes, and
   * the next start resumes them (default false: a stop keeps files only). Needs the `runsc`
   * runtime: on `runc`, or when the save fails, the stop is a plain one and
   * `info.memory_preserved` stays false. Sent as `preserve_memory_on_stop`.
   */
  preserveMemoryOnStop?: boolean;
  /** Wait until the sandbox is ready (default true). */
  waitForReady?: boolean;
  /** Seconds to wait for ready (default 30). */
  timeout?: number;
}

/**
 * Changes of {@link SandboxClient.updateSandbox}; omitted fields stay as they are.
 *
 * @example
 * ```ts
 * await client.updateSandbox("box-1", { idleTtlSeconds: 1800, networkPolicy: { egress: "deny_all" } });
 * await client.updateSandbox("box-1", { preserveMemoryOnStop: true }); // the next stop keeps its processes
 * ```
 */
export interface UpdateSandboxOptions {
  /** Rename the sandbox. */
  newName?: string;
  idleTtlSeconds?: number;
  deleteAfterStopSeconds?: number;
  /** Replace the egress policy; a running sandbox gets the new one at once. */
  networkPolicy?: NetworkPolicyOptions;
  /** Whether a stop (also the idle timer's) saves memory and processes for the next start. */
  preserveMemoryOnStop?: boolean;
}

/** Options of {@link Sandbox.run}. @example `await sb.run("make", { timeout: 600, cwd: "/src", onStdout: (d) => process.stdout.write(d) })` */
export interface RunOptions {
  /** false: return a CommandHandle at once instead of waiting (default true). */
  wait?: boolean;
  /** Called with each piece of stdout as it arrives (streams over WebSocket). */
  onStdout?: (data: string) => void;
  /** Called with each piece of stderr as it arrives. */
  onStderr?: (data: string) => void;
  /** Your id for the command (default: a random UUID); reusing one reattaches to it. */
  commandId?: string;
  /** Kill the command after this many seconds without any attached client (default 300, -1 never). */
  idleTimeout?: number;
  /** Kill the command as soon as the last client disconnects (default false). */
  killOnDisconnect?: boolean;
  /** Keep a finished command's output for reconnects this long (default 600, -1 forever). */
  ttlSeconds?: number;
  /** Run under a terminal (stderr merged into stdout). */
  pty?: boolean;
  /** Terminal size under pty (default 80x24). */
  cols?: number;
  rows?: number;
  /** Close stdin at start (default: true when waiting, false with wait: false; never under pty). */
  closeInput?: boolean;
  /** Seconds before the command is killed (default 60, 0 = none). */
  timeout?: number;
  env?: Record<string, string>;
  cwd?: string;
  /** Shell that runs the command (default /bin/bash, falling back to /bin/sh). */
  shell?: string;
}
