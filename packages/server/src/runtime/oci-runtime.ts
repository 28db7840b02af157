import { run } from "../util/proc.js";
import type { ContainerState, SandboxRuntime, StartOptions } from "./runtime.js";

/**
 * runsc and runc share the OCI runtime CLI; they differ in global flags and in how
 * `run` must be wrapped. One class, two configurations.
 */
export class OciRuntime implements SandboxRuntime {
  private constructor(
    readonly name: "runsc" | "runc",
    private readonly globalArgs: string[],
    private readonly runWrapper: (argv: string[]) => string[],
  ) {}

  /**
   * gVisor. runsc refuses a network namespace it believes is the host's, judged by
   * /proc/sys/net existing (true in every namespace on kernel 6.x), so `run` goes
   * through a private mount namespace with a tmpfs over /proc/sys/net.
   */
  static runsc(root: string | undefined): OciRuntime {
    // --oci-seccomp: the spec's seccomp filter (oci-spec.ts) is enforced by the Sentry.
    const global = [...(root ? ["--root", root] : []), "--platform=ptrace", "--overlay2=none", "--oci-seccomp"];
    return new OciRuntime("runsc", global, (argv) => [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount -t tmpfs none /proc/sys/net && exec "$@"',
      "sh",
      ...argv,
    ]);
  }

  static runc(root: string | undefined): OciRuntime {
    return new OciRuntime("runc", root ? ["--root", root] : [], (argv) => argv);
  }

  private argv(...args: string[]): string[] {
    return [this.name, ...this.globalArgs, ...args];
  }

  get canCheckpoint(): boolean {
    return this.name === "runsc";
  }

  async start(opts: StartOptions): Promise<void> {
    await this.launch("run", ["run", "--detach", "--bundle", opts.bundleDir, opts.containerId], opts.logFile);
  }

  async restore(opts: StartOptions & { imageDir: string }): Promise<void> {
    if (!this.canCheckpoint) throw new Error(`${this.name} cannot restore memory snapshots`);
    await this.launch("restore", ["restore", "--detach", `--image-path=${opts.imageDir}`, "--bundle", opts.bundleDir, opts.containerId], opts.logFile);
  }

  async checkpoint(containerId: string, imageDir: string): Promise<void> {
    if (!this.canCheckpoint) throw new Error(`${this.name} cannot checkpoint memory`);
    // Uncompressed: flate on already-dense memory costs more pause time than it saves disk.
    await run(this.argv("checkpoint", "--leave-running", "--compression=none", `--image-path=${imageDir}`, containerId), { timeoutMs: 600_000 });
  }

  private async launch(what: string, args: string[], logFile: string): Promise<void> {
    try {
      // detached: the container must not share our session or die with us.
      await run(this.runWrapper(this.argv(...args)), { logFile, detached: true, timeoutMs: 120_000 });
    } catch (e) {
      const tail = await readTail(logFile);
      throw new Error(`${this.name} ${what} failed: ${(e as Error).message}${tail ? `; log: ${tail}` : ""}`);
    }
  }

  async state(containerId: string): Promise<ContainerState> {
    const r = await run(this.argv("state", containerId), { check: false });
    if (r.code !== 0) return "missing";
    try {
      const s = (JSON.parse(r.stdout) as { status?: string }).status;
      if (s === "running" || s === "paused" || s === "stopped" || s === "created") return s;
      return "stopped";
    } catch {
      return "missing";
    }
  }

  async pause(containerId: string): Promise<void> {
    await run(this.argv("pause", containerId), { timeoutMs: 30_000 });
  }

  async resume(containerId: string): Promise<void> {
    await run(this.argv("resume", containerId), { timeoutMs: 30_000 });
  }

  async remove(containerId: string): Promise<void> {
    const r = await run(this.argv("delete", "--force", containerId), { check: false, timeoutMs: 30_000 });
    if (r.code !== 0 && !/does not exist|not found|no such/i.test(r.stderr)) {
      // A half-created container can refuse delete until killed.
      await run(this.argv("kill", containerId, "KILL"), { check: false });
      const again = await run(this.argv("delete", "--force", containerId), { check: false });
      if (again.code !== 0 && !/does not exist|not found|no such/i.test(again.stderr)) {
        throw new Error(`${this.name} delete ${containerId}: ${again.stderr.trim()}`);
      }
    }
  }

  async list(): Promise<string[]> {
    // A runtime that is not installed has no containers.
    const r = await run(this.argv("list", "--quiet"), { check: false }).catch(() => ({ code: 127, stdout: "", stderr: "" }));
    if (r.code !== 0) return [];
    return r.stdout.split("\n").map((s) => s.trim()).filter(Boolean);
  }

  async states(): Promise<Map<string, ContainerState>> {
    const out = new Map<string, ContainerState>();
    // A failed listing must not read as "every container is gone".
    const r = await run(this.argv("list", "--format", "json"));
    const parsed = JSON.parse(r.stdout || "null") as { id?: string; status?: string }[] | null;
    for (const c of parsed ?? []) {
      if (!c.id) continue;
      const s = c.status;
      out.set(c.id, s === "running" || s === "paused" || s === "created" ? s : "stopped");
    }
    return out;
  }

  async exec(containerId: string, argv: string[]): Promise<{ code: number; stdout: string }> {
    const r = await run(this.argv("exec", containerId, ...argv), { check: false });
    return { code: r.code, stdout: r.stdout };
  }
}

async function readTail(path: string): Promise<string> {
  try {
    const { readFile } = await import("node:fs/promises");
    return (await readFile(path, "utf8")).trim().split("\n").slice(-5).join(" | ").slice(0, 1000);
  } catch {
    return "";
  }
}
