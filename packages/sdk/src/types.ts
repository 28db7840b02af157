import type { SandboxView, SnapshotView } from "@sandbar/shared";

/** A snapshot as the server describes it. */
export type Snapshot = SnapshotView;
/** A sandbox's fields as the server describes them. */
export type SandboxInfo = SandboxView;

/** Result of a finished command. */
export interface ExecutionResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  /** True when exit_code is 0. */
  success: boolean;
}

/** Options of {@link SandboxClient.createSandbox}. */
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

/** Options of {@link Sandbox.run}. */
export interface RunOptions {
  /** Seconds before the command is killed (default 60, 0 = none). */
  timeout?: number;
  env?: Record<string, string>;
  cwd?: string;
  /** Shell that runs the command (default /bin/bash, falling back to /bin/sh). */
  shell?: string;
}
