/**
 * Runs a host command for test support code and fails with the command line, exit status and
 * the tail of stderr, so a broken image build or registry push says what went wrong.
 */
import { execFile } from "node:child_process";

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the command after this long; 0 (the default) means no limit. */
  timeoutMs?: number;
  /**
   * SIGKILL the command when the calling thread dies (setpriv --pdeathsig), so a killed test run
   * leaves no orphaned build still writing into a directory the next run will clean up.
   */
  killWithParent?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** How much of stderr an error message keeps: enough for the real cause, not pages of logs. */
const STDERR_TAIL_CHARS = 4000;

/** mmdebstrap and umoci can be chatty; the default 1 MiB would kill them mid-build. */
const MAX_BUFFER_BYTES = 64 * 1024 * 1024;

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | string | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    const status = signal !== null ? `signal ${signal}` : `exit ${String(exitCode)}`;
    const tail = stderr.length > STDERR_TAIL_CHARS ? `…${stderr.slice(-STDERR_TAIL_CHARS)}` : stderr;
    super(`${command} ${args.join(" ")} failed (${status})${tail.trim() ? `:\n${tail.trimEnd()}` : ""}`);
    this.name = "CommandError";
  }
}

export function runCommand(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const [file, argv] = options.killWithParent === true
    ? ["setpriv", ["--pdeathsig", "KILL", "--", command, ...args]]
    : [command, args];
  return new Promise((resolve, reject) => {
    execFile(
      file,
      argv,
      {
        cwd: options.cwd,
        env: options.env,
        timeout: options.timeoutMs ?? 0,
        maxBuffer: MAX_BUFFER_BYTES,
        encoding: "utf8",
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr });
          return;
        }
        // error.code is the exit status, or a string such as "ENOENT" when the binary is missing.
        const exitCode = error.code ?? null;
        const signal = error.signal ?? null;
        reject(new CommandError(command, args, exitCode, signal, stdout, stderr || error.message));
      },
    );
  });
}
