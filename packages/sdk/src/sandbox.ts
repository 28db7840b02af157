import type { ExecuteResponse } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";
import type { CaptureSnapshotOptions, ExecutionResult, RunOptions, SandboxInfo, Snapshot } from "./types.js";
import { CommandHandle, type Reattach } from "./command-handle.js";
import { defaultWebSocket, MessageStream, type WebSocketConstructor } from "./ws-stream.js";
import { SandboxConnectionError } from "./errors.js";
import type { SandboxClient } from "./client.js";
import type { ServiceUrl, ServiceUrlOptions } from "./service-url.js";
import type { Tunnel, TunnelOptions } from "./tunnel.js";
import { fileSearch, readFileRange, statFile, type FileChunk, type FileStat, type GlobOptions, type GlobResult, type GrepOptions, type GrepResult, type ReadRangeOptions } from "./search.js";

/**
 * A handle to one sandbox: run commands, move files, stop, start, delete.
 *
 * @example
 * ```ts
 * const sb = await client.createSandbox(snapshotId);
 * const r = await sb.run("python3 -c 'print(2 + 2)'");
 * console.log(r.stdout); // "4\n"
 * await sb.delete();
 * ```
 */
export class Sandbox implements AsyncDisposable {
  /** The sandbox's fields as last seen. */
  info: SandboxInfo;

  /** @internal */
  constructor(
    info: SandboxInfo,
    private readonly client: SandboxClient,
    private readonly http: HttpSettings,
  ) {
    this.info = info;
  }

  /** Sandbox name. @example `console.log(sb.name)` */
  get name(): string {
    return this.info.name;
  }
  /** Sandbox id. @example `console.log(sb.id)` */
  get id(): string {
    return this.info.id;
  }
  /** Base URL of the sandbox's data plane. @example `console.log(sb.dataplaneUrl)` */
  get dataplaneUrl(): string {
    return this.info.dataplane_url;
  }

  /**
   * Run a command. By default waits and returns its result (over HTTP, or streamed over
   * WebSocket when `onStdout`/`onStderr` are given); with `wait: false` returns a
   * {@link CommandHandle} at once.
   *
   * @example
   * ```ts
   * const r = await sb.run("echo $X", { env: { X: "1" }, cwd: "/tmp", timeout: 30 });
   * await sb.run("make build", { timeout: 600, onStdout: (d) => process.stdout.write(d) });
   * const handle = await sb.run("python3 -i", { wait: false });
   * handle.sendInput("print(2 + 2)\n");
   * ```
   */
  run(command: string, opts: RunOptions & { wait: false }): Promise<CommandHandle>;
  run(command: string, opts?: RunOptions & { wait?: true }): Promise<ExecutionResult>;
  run(command: string, opts?: RunOptions): Promise<ExecutionResult | CommandHandle>;
  async run(command: string, opts: RunOptions = {}): Promise<ExecutionResult | CommandHandle> {
    const wait = opts.wait ?? true;
    const streaming = !wait || opts.onStdout !== undefined || opts.onStderr !== undefined;
    if (streaming) {
      const ctor = this.http.webSocket ?? (await defaultWebSocket());
      if (ctor) {
        const handle = await this.startStream(ctor, command, opts, wait);
        return wait ? handle.result : handle;
      }
      if (!wait) throw new SandboxConnectionError("wait: false needs a WebSocket implementation (install the 'ws' package or pass webSocket)", undefined, undefined);
    }
    const r = await this.runHttp(command, opts);
    if (opts.onStdout && r.stdout) opts.onStdout(r.stdout);
    if (opts.onStderr && r.stderr) opts.onStderr(r.stderr);
    return r;
  }

  private async runHttp(command: string, opts: RunOptions): Promise<ExecutionResult> {
    const timeout = opts.timeout ?? 60;
    const body = { command, timeout, shell: opts.shell ?? "/bin/bash", env: opts.env, cwd: opts.cwd };
    const r = await callJson<ExecuteResponse>(this.http, `${this.dataplaneUrl}/execute`, "POST", body, {
      signal: timeout > 0 ? AbortSignal.timeout((timeout + 30) * 1000) : undefined,
    });
    return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code, success: r.exit_code === 0 };
  }

  private reattach(ctor: WebSocketConstructor): Reattach {
    return { ctor, url: `${this.dataplaneUrl.replace(/^http/, "ws")}/execute/ws`, headers: this.http.apiKey ? { "X-Api-Key": this.http.apiKey } : {} };
  }

  private async startStream(ctor: WebSocketConstructor, command: string, opts: RunOptions, wait: boolean): Promise<CommandHandle> {
    const commandId = opts.commandId ?? crypto.randomUUID();
    const pty = opts.pty ?? false;
    const first = {
      type: "execute",
      command_id: commandId,
      command,
      timeout_seconds: opts.timeout ?? 60,
      shell: opts.shell ?? "/bin/bash",
      env: opts.env,
      cwd: opts.cwd,
      idle_timeout_seconds: opts.idleTimeout ?? 300,
      kill_on_disconnect: opts.killOnDisconnect ?? false,
      ttl_seconds: opts.ttlSeconds ?? 600,
      pty,
      cols: opts.cols,
      rows: opts.rows,
      close_stdin: !pty && (opts.closeInput ?? wait),
    };
    const target = this.reattach(ctor);
    let stream: MessageStream;
    try {
      stream = await MessageStream.open(ctor, target.url, target.headers, first);
    } catch (e) {
      throw new SandboxConnectionError(`cannot open the command stream: ${(e as Error).message}`, undefined, undefined);
    }
    return new CommandHandle(stream, target, commandId, { onStdout: opts.onStdout, onStderr: opts.onStderr });
  }

  /**
   * Attach to a command by id, from any client or process, resuming at the given offsets
   * (0 replays what the sandbox still holds).
   *
   * @example
   * ```ts
   * const again = await sb.reconnect(commandId, { stdoutOffset: 1024 });
   * for await (const chunk of again) process.stdout.write(chunk.data);
   * ```
   */
  async reconnect(commandId: string, opts: { stdoutOffset?: number; stderrOffset?: number } = {}): Promise<CommandHandle> {
    const ctor = this.http.webSocket ?? (await defaultWebSocket());
    if (!ctor) throw new SandboxConnectionError("reconnect needs a WebSocket implementation (install the 'ws' package or pass webSocket)", undefined, undefined);
    const target = this.reattach(ctor);
    const stream = await MessageStream.open(ctor, target.url, target.headers, {
      type: "reconnect",
      command_id: commandId,
      stdout_offset: opts.stdoutOffset ?? 0,
      stderr_offset: opts.stderrOffset ?? 0,
    }).catch((e: unknown) => {
      throw new SandboxConnectionError(`cannot open the command stream: ${(e as Error).message}`, undefined, undefined);
    });
    return new CommandHandle(stream, target, commandId, { stdoutOffset: opts.stdoutOffset, stderrOffset: opts.stderrOffset });
  }

  /**
   * Write a file (parents are created).
   *
   * @example
   * ```ts
   * await sb.write("/app/script.py", "print('hi')");
   * await sb.write("/app/data.bin", new Uint8Array([0, 1, 2]));
   * ```
   */
  async write(path: string, content: string | Uint8Array, timeout = 60): Promise<void> {
    const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
    const res = await call(this.http, `${this.dataplaneUrl}/upload?path=${encodeURIComponent(path)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: bytes,
      idempotent: true,
      signal: AbortSignal.timeout(timeout * 1000),
    });
    await res.body?.cancel();
  }

  /**
   * Read a whole file.
   *
   * @example
   * ```ts
   * const bytes = await sb.read("/app/script.py");
   * console.log(new TextDecoder().decode(bytes));
   * ```
   */
  async read(path: string, timeout = 60): Promise<Uint8Array> {
    const res = await call(this.http, `${this.dataplaneUrl}/download?path=${encodeURIComponent(path)}`, { signal: AbortSignal.timeout(timeout * 1000) });
    return new Uint8Array(await res.arrayBuffer());
  }

  /** Refresh {@link info} from the server. @example `await sb.refresh(); console.log(sb.info.status)` */
  async refresh(): Promise<SandboxInfo> {
    this.info = (await this.client.getSandbox(this.info.id)).info;
    return this.info;
  }

  /**
   * Stop the sandbox; files are kept. With `preserve_memory_on_stop` its memory and processes
   * are saved too (`info.memory_preserved`) and {@link start} resumes them.
   *
   * @example `await sb.stop(); console.log(sb.info.memory_preserved)`
   */
  async stop(): Promise<void> {
    this.info = (await this.client.stopSandbox(this.info.id)).info;
  }

  /**
   * Start a stopped sandbox and wait until ready; a sandbox stopped with its memory saved
   * resumes its processes.
   *
   * @example `await sb.start({ timeout: 120 })`
   */
  async start(opts: { timeout?: number } = {}): Promise<void> {
    this.info = (await this.client.startSandbox(this.info.id, opts)).info;
  }

  /**
   * A link to one of this sandbox's files that needs no API key.
   *
   * @example `const { download_url } = await sb.generateDownloadURL("/app/out.csv", { expiresInSeconds: 600 })`
   */
  generateDownloadURL(path: string, opts: { expiresInSeconds?: number; contentType?: string; contentDisposition?: "attachment" | "inline" } = {}): Promise<{ download_url: string; token: string; expires_at: string | null }> {
    return this.client.generateDownloadURL(this.info.id, path, opts);
  }

  /**
   * A token URL for an HTTP service listening on `port` in this sandbox: `browserUrl` for
   * people, `fetch(path)` (token header included, refreshed near expiry) for code.
   *
   * @example
   * ```ts
   * await sb.run("python3 -m http.server 8000 >/dev/null 2>&1 &");
   * const svc = await sb.service(8000, { expiresInSeconds: 3600 });
   * console.log(svc.browserUrl);
   * console.log((await svc.fetch("/")).status);
   * ```
   */
  service(port: number, opts: ServiceUrlOptions = {}): Promise<ServiceUrl> {
    return this.client.serviceUrl(this.info.id, port, opts);
  }

  /**
   * Forward a local TCP port to `remotePort` inside this sandbox (Node only). Resolves once the
   * local port is listening and the tunnel's WebSocket is open; rejects when the local port is
   * taken or the sandbox cannot be reached. Every local connection is one multiplexed stream.
   *
   * @example
   * ```ts
   * await using tunnel = await sb.tunnel(5432, { localPort: 15432 });
   * // psql -h 127.0.0.1 -p 15432 ... reaches port 5432 in the sandbox
   * const random = await sb.tunnel(8000); // a free local port: random.localPort
   * await random.close();
   * ```
   */
  async tunnel(remotePort: number, opts: TunnelOptions = {}): Promise<Tunnel> {
    const ctor = this.http.webSocket ?? (await defaultWebSocket());
    if (!ctor) throw new SandboxConnectionError("tunnel needs a WebSocket implementation (install the 'ws' package or pass webSocket)", undefined, undefined);
    const { openTunnel } = await import("./node/tunnel.js");
    const headers: Record<string, string> = this.http.apiKey ? { "X-Api-Key": this.http.apiKey } : {};
    return openTunnel({ ctor, url: `${this.dataplaneUrl.replace(/^http/, "ws")}/tunnel`, headers, remotePort, localPort: opts.localPort, host: opts.host });
  }

  /**
   * Capture this sandbox's filesystem, and with `includeMemory` its memory and processes too,
   * as a new snapshot and wait until it is ready (see {@link SandboxClient.captureSnapshot}).
   *
   * @example
   * ```ts
   * const snap = await sb.captureSnapshot("ml-ready", { timeout: 600 });
   * const warm = await sb.captureSnapshot("ml-warm", { includeMemory: true }); // runsc, ready sandbox
   * console.log(warm.memory_snapshot_size_bytes);
   * ```
   */
  captureSnapshot(name: string, opts: CaptureSnapshotOptions = {}): Promise<Snapshot> {
    return this.client.captureSnapshot(this.info.id, name, opts);
  }

  /** Delete the sandbox and its files. @example `await sb.delete()` */
  async delete(): Promise<void> {
    await this.client.deleteSandbox(this.info.id);
  }

  /** `await using sb = await client.createSandbox(...)` deletes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.delete();
    } catch (e) {
      if (!(e instanceof Error && e.name === "ResourceNotFoundError")) throw e;
    }
  }

  /**
   * Find files and directories whose path relative to `path` matches `pattern`: `**` is any
   * number of directories, `*`, `?` and `[...]` match within one segment (a bare `*.py` matches
   * only `path`'s own entries). Symlinked directories are not walked into. Paths come back
   * absolute; check `truncated` before treating the answer as complete.
   *
   * @example
   * ```ts
   * const { matches, truncated } = await sb.glob("src/**", "/app", { limit: 100 });
   * console.log(matches.map((m) => m.path), truncated);
   * ```
   */
  async glob(pattern: string, path: string, opts: GlobOptions = {}): Promise<GlobResult> {
    const body: Record<string, unknown> = { pattern, path };
    if (opts.limit !== undefined) body.limit = opts.limit;
    return fileSearch<GlobResult>(this.http, this.dataplaneUrl, "glob", body, opts.timeout);
  }

  /**
   * List a directory's immediate entries (a {@link glob} with the pattern `*`).
   *
   * @example
   * ```ts
   * for (const e of (await sb.ls("/app")).matches) console.log(e.is_dir ? "d" : "-", e.path, e.size_bytes);
   * ```
   */
  async ls(path: string, opts: GlobOptions = {}): Promise<GlobResult> {
    return this.glob("*", path, opts);
  }

  /**
   * Find the lines containing `pattern` (a literal string, not a regular expression) in the
   * files under `path`. `glob` restricts the files searched: a bare `*.py` matches base names at
   * any depth, a pattern with `/` or `**` the path relative to `path`. Binary files and files
   * over 10 MiB are skipped.
   *
   * @example
   * ```ts
   * const { matches } = await sb.grep("TODO(", "/app", { glob: "*.ts", limit: 50 });
   * for (const m of matches) console.log(`${m.path}:${m.line}: ${m.text}`);
   * ```
   */
  async grep(pattern: string, path: string, opts: GrepOptions = {}): Promise<GrepResult> {
    const body: Record<string, unknown> = { pattern, path };
    if (opts.glob !== undefined) body.glob = opts.glob;
    if (opts.limit !== undefined) body.limit = opts.limit;
    return fileSearch<GrepResult>(this.http, this.dataplaneUrl, "grep", body, opts.timeout);
  }

  /**
   * A file's size and validators (`HEAD`), without transferring it.
   *
   * @example
   * ```ts
   * const { size_bytes, etag } = await sb.stat("/data/big.bin");
   * ```
   */
  async stat(path: string, timeout = 60): Promise<FileStat> {
    return statFile(this.http, this.dataplaneUrl, path, timeout);
  }

  /**
   * Read part of a file: `start` (with optional inclusive `end`) or the last `suffixBytes`.
   * `ifRange` makes a resumed read safe (a changed file comes back whole, `partial: false`);
   * `ifNoneMatch` polls for a change (`unchanged: true` and no bytes while it matches).
   *
   * @example
   * ```ts
   * const head = await sb.readRange("/big.bin", { start: 0, end: 1023 });
   * const next = await sb.readRange("/big.bin", { start: head.start + head.content.length, ifRange: head.etag });
   * const tail = await sb.readRange("/app.log", { suffixBytes: 4096 });
   * ```
   */
  async readRange(path: string, opts: ReadRangeOptions): Promise<FileChunk> {
    return readFileRange(this.http, this.dataplaneUrl, path, opts);
  }
}
