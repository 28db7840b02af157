/** Lifecycle state of a container as the runtime reports it. */
export type ContainerState = "running" | "paused" | "stopped" | "created" | "missing";

export interface StartOptions {
  containerId: string;
  bundleDir: string;
  /** File receiving the container's stdout and stderr (the agent's log). */
  logFile: string;
}

/**
 * An OCI runtime. Containers it starts are daemons of their own: they outlive the
 * server process, and a restarted server finds them again by id.
 */
export interface SandboxRuntime {
  readonly name: "runsc" | "runc";
  start(opts: StartOptions): Promise<void>;
  state(containerId: string): Promise<ContainerState>;
  /** Freeze every process of the container (consistent captures). */
  pause(containerId: string): Promise<void>;
  resume(containerId: string): Promise<void>;
  /** Whether this runtime can checkpoint and restore memory (runsc: yes; runc: no CRIU here). */
  readonly canCheckpoint: boolean;
  /**
   * Save the memory and process state of a paused container to `imageDir`; the container
   * stays paused (resume it afterwards).
   */
  checkpoint(containerId: string, imageDir: string): Promise<void>;
  /** Start a new container from a checkpoint image, with the bundle's rootfs and network. */
  restore(opts: StartOptions & { imageDir: string }): Promise<void>;
  /** Kill and delete; idempotent. */
  remove(containerId: string): Promise<void>;
  /** Ids of every container under this runtime's root. */
  list(): Promise<string[]>;
  /** State of every container under this runtime's root, in one call. */
  states(): Promise<Map<string, ContainerState>>;
  /** Run a command in the container directly (benchmark baseline). */
  exec(containerId: string, argv: string[]): Promise<{ code: number; stdout: string }>;
}
