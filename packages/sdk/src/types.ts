import type { SandboxView, SnapshotView } from "@sandbar/shared";

/** A snapshot as the server describes it. @example `const s: Snapshot = await client.getSnapshot("python"); s.status` */
export type Snapshot = SnapshotView;
/** A sandbox's fields as the server describes them. @example `const info: SandboxInfo = sb.info; info.dataplane_url` */
export type SandboxInfo = SandboxView;

/** Result of a finished command. @example `const { stdout, exit_code, success }: ExecutionResult = await sb.run("ls")` */
export interface ExecutionResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  /** True when exit_code is 0. */
  success: boolean;
}

/** Options of {@link SandboxClient.createSandbox}. @example `await client.createSandbox({ snapshotName: "python", name: "box", memBytes: 1 << 30 })` */
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
  /** Wait until the sandbox is ready (default true). */
  waitForReady?: boolean;
  /** Seconds to wait for ready (default 30). */
  timeout?: number;
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
