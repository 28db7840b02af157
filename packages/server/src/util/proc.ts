import { spawn, type SpawnOptions } from "node:child_process";

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
  /** File descriptors for the child's stdout/stderr instead of pipes. */
  stdio?: SpawnOptions["stdio"];
}

/** Run a host program without a shell and collect its output. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<ProcResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error("empty argv"));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: opts.stdio ?? ["pipe", "pipe", "pipe"],
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
}
