import type { ExecuteResponse } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";
import type { ExecutionResult, RunOptions, SandboxInfo } from "./types.js";
import type { SandboxClient } from "./client.js";

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
   * Run a command and wait for it.
   *
   * @example
   * ```ts
   * const r = await sb.run("echo $X", { env: { X: "1" }, cwd: "/tmp", timeout: 30 });
   * if (!r.success) console.error(r.stderr);
   * ```
   */
  async run(command: string, opts: RunOptions = {}): Promise<ExecutionResult> {
    const timeout = opts.timeout ?? 60;
    const body = { command, timeout, shell: opts.shell ?? "/bin/bash", env: opts.env, cwd: opts.cwd };
    const r = await callJson<ExecuteResponse>(this.http, `${this.dataplaneUrl}/execute`, "POST", body, {
      signal: timeout > 0 ? AbortSignal.timeout((timeout + 30) * 1000) : undefined,
    });
    return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code, success: r.exit_code === 0 };
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

  /** Stop the sandbox; files are kept. @example `await sb.stop()` */
  async stop(): Promise<void> {
    this.info = (await this.client.stopSandbox(this.name)).info;
  }

  /** Start a stopped sandbox and wait until ready. @example `await sb.start()` */
  async start(opts: { timeout?: number } = {}): Promise<void> {
    this.info = (await this.client.startSandbox(this.name, opts)).info;
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
}
