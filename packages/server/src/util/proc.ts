import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { existsSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** Result of a finished host command. */
export interface ProcResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A host command that exited non-zero. */
export class ProcError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ProcResult,
  ) {
    super(`${argv.join(" ")} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = "ProcError";
  }
}

export interface RunOptions {
  /** Reject on a non-zero exit (default true). */
  check?: boolean;
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Start in its own session so it outlives us (container runtimes). */
  detached?: boolean;
  /** Append stdout and stderr to this file instead of collecting them (stdin: /dev/null). */
  logFile?: string;
  /** File descriptors for the child's stdout/stderr instead of pipes (always a direct spawn). */
  stdio?: SpawnOptions["stdio"];
}

/**
 * Run a host program without a shell and collect its output.
 *
 * Programs are started by the host-exec helper (`sandbar-agent host-exec`, a small child that
 * starts them with vfork) when it is available: a spawn from this process is a fork of the
 * whole Node heap, which costs milliseconds per command (about 3 ms at 100 MiB of RSS, 28 ms at
 * 700 MiB on the benchmark machine) on paths like a sandbox's boot. The result is the same
 * either way.
 */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<ProcResult> {
  const [file] = argv;
  if (file === undefined) return Promise.reject(new Error("empty argv"));
  const helper = opts.stdio === undefined ? hostExec() : undefined;
  if (helper) return helper.run(argv, opts, () => spawnRun(argv, opts));
  return spawnRun(argv, opts);
}

/** Run by forking this process (the fallback, and for callers that pass `stdio`). */
async function spawnRun(argv: readonly string[], opts: RunOptions): Promise<ProcResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("empty argv");
  let stdio: SpawnOptions["stdio"] = opts.stdio ?? ["pipe", "pipe", "pipe"];
  let log: FileHandle | undefined;
  if (opts.logFile !== undefined) {
    log = await open(opts.logFile, "a");
    stdio = ["ignore", log.fd, log.fd];
  }
  try {
    return await new Promise<ProcResult>((resolve, reject) => {
      const child = spawn(file, args, {
        stdio,
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        detached: opts.detached ?? false,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on("data", (b: Buffer) => out.push(b));
      child.stderr?.on("data", (b: Buffer) => err.push(b));
      let timer: NodeJS.Timeout | undefined;
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
      }
      child.on("error", (e) => {
        if (timer) clearTimeout(timer);
        reject(e);
      });
      child.on("close", (code, signal) => {
        if (timer) clearTimeout(timer);
        const result: ProcResult = {
          code: code ?? (signal ? 128 : -1),
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8"),
        };
        if (result.code !== 0 && (opts.check ?? true)) reject(new ProcError(argv, result));
        else resolve(result);
      });
      if (child.stdin) {
        if (opts.input !== undefined) child.stdin.end(opts.input);
        else child.stdin.end();
      }
    });
  } finally {
    await log?.close();
  }
}

/** One answer of the helper (agent/internal/hostexec). */
interface HelperResponse {
  id: number;
  code: number;
  signal?: string;
  stdout?: string;
  stderr?: string;
  error?: string;
  errno?: string;
}

interface Pending {
  resolve(r: HelperResponse): void;
  /** The helper is gone; `started` tells whether it may have run the program. */
  fail(e: Error, started: boolean): void;
}

/**
 * The host-exec helper: one child process for the server's lifetime, started on first use,
 * answering newline-delimited JSON. When it cannot be started, programs are spawned directly;
 * when it dies, programs it was running fail and later ones are spawned directly.
 */
class HostExec {
  private child: ChildProcess | undefined;
  private spawned = false;
  private broken = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** The environment the helper inherited; requests send theirs only when it differs. */
  private env = "";

  constructor(private readonly path: string) {}

  get usable(): boolean {
    return !this.broken;
  }

  run(argv: readonly string[], opts: RunOptions, fallback: () => Promise<ProcResult>): Promise<ProcResult> {
    const child = this.start();
    if (!child?.stdin) return fallback();
    const env = opts.env ?? process.env;
    const envText = JSON.stringify(env);
    const req = {
      id: this.nextId++,
      argv,
      input: opts.input === undefined ? undefined : Buffer.from(opts.input).toString("base64"),
      cwd: opts.cwd,
      env: envText === this.env ? undefined : Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`])),
      timeout_ms: opts.timeoutMs,
      detached: opts.detached || undefined,
      log_file: opts.logFile,
    };
    return new Promise<ProcResult>((resolve, reject) => {
      this.pending.set(req.id, {
        resolve: (r) => {
          if (r.error !== undefined) {
            // As Node reports a failed spawn.
            const e = Object.assign(new Error(`spawn ${argv[0] ?? ""} ${r.errno || r.error}`), { code: r.errno || undefined, errno: r.errno, syscall: `spawn ${argv[0] ?? ""}`, path: argv[0], spawnargs: argv.slice(1), detail: r.error });
            reject(e);
            return;
          }
          const result: ProcResult = {
            code: r.code,
            stdout: r.stdout ? Buffer.from(r.stdout, "base64").toString("utf8") : "",
            stderr: r.stderr ? Buffer.from(r.stderr, "base64").toString("utf8") : "",
          };
          if (result.code !== 0 && (opts.check ?? true)) reject(new ProcError(argv, result));
          else resolve(result);
        },
        fail: (e, started) => {
          if (started) reject(e);
          else fallback().then(resolve, reject);
        },
      });
      this.updateRef();
      child.stdin?.write(`${JSON.stringify(req)}\n`);
    });
  }

  private start(): ChildProcess | undefined {
    if (this.broken) return undefined;
    if (this.child) return this.child;
    let child: ChildProcess;
    try {
      child = spawn(this.path, ["host-exec"], { stdio: ["pipe", "pipe", "inherit"] });
    } catch {
      this.broken = true;
      return undefined;
    }
    this.child = child;
    this.env = JSON.stringify(process.env);
    child.on("spawn", () => {
      this.spawned = true;
    });
    child.on("error", (e) => this.failAll(e));
    child.on("exit", (code, signal) => this.failAll(new Error(`the host-exec helper exited (${signal ?? code ?? "?"})`)));
    child.stdin?.on("error", () => undefined);
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream, crlfDelay: Infinity });
    lines.on("line", (line) => {
      let r: HelperResponse;
      try {
        r = JSON.parse(line) as HelperResponse;
      } catch {
        return;
      }
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      this.updateRef();
      p.resolve(r);
    });
    child.unref();
    this.updateRef();
    return child;
  }

  /** Keep the event loop alive only while programs run (as a direct spawn would). */
  private updateRef(): void {
    const out = this.child?.stdout as Socket | null | undefined;
    if (!out) return;
    if (this.pending.size > 0) out.ref();
    else out.unref();
    const inp = this.child?.stdin as Socket | null | undefined;
    inp?.unref();
  }

  private failAll(e: Error): void {
    const started = this.spawned;
    this.broken = true;
    this.child = undefined;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.fail(e, started);
  }
}

let helper: HostExec | undefined;
let helperPath: string | null | undefined;

/**
 * Use this agent binary as the host-exec helper (null: never use one, spawn directly). By
 * default the helper is the agent binary built in this checkout (`agent/bin/sandbar-agent`) or
 * `SANDBAR_AGENT_BINARY`; `SANDBAR_HOST_EXEC=0` turns it off.
 */
export function setHostExecHelper(path: string | null): void {
  helperPath = path;
  helper = undefined;
}

function hostExec(): HostExec | undefined {
  if (helper) return helper.usable ? helper : undefined;
  if (helperPath === undefined) helperPath = process.env.SANDBAR_HOST_EXEC === "0" ? null : defaultHelperPath();
  if (!helperPath) return undefined;
  helper = new HostExec(helperPath);
  return helper;
}

function defaultHelperPath(): string | null {
  const path = process.env.SANDBAR_AGENT_BINARY || fileURLToPath(new URL("../../../../agent/bin/sandbar-agent", import.meta.url));
  return existsSync(path) ? path : null;
}
