/**
 * The raw-runsc baseline of a create: `runsc run --detach` of a server sandbox's own bundle
 * (same rootfs, mounts, agent as init, resources), each run in a network namespace and cgroup
 * of its own and under a state root of its own, so the server never sees these containers.
 * The namespace and the bundle dir are made untimed; the figure is `runsc run --detach` alone,
 * in the same `unshare` wrapper the server uses (runsc refuses a netns it takes for the
 * host's). It returns once the sandbox is started, before anything inside listens.
 *
 * The sandbox whose bundle is used must stay up while raw runs use its rootfs.
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Cleanup } from "./harness.js";

const run = promisify(execFile);
const RUNSC = ["runsc", "--platform=ptrace", "--overlay2=none"];
const UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none /proc/sys/net && exec "$@"', "sh"];

interface Spec {
  linux: { namespaces: { type: string; path?: string }[]; cgroupsPath?: string };
}

/** A prepared raw container: its id and the undo step that removes it (idempotent). */
export interface RawContainer {
  id: string;
  /** The container's cgroup, relative to each hierarchy's root. */
  cgroupsPath: string;
  remove(): Promise<void>;
}

export class RawRunsc {
  private n = 0;

  private constructor(
    private readonly cleanup: Cleanup,
    private readonly root: string,
    private readonly spec: Spec,
  ) {}

  /** Raw runs of the bundle of `sandboxId` on the server with data dir `dataDir`. */
  static async fromSandbox(cleanup: Cleanup, dataDir: string, sandboxId: string): Promise<RawRunsc> {
    const spec = JSON.parse(await readFile(join(dataDir, "sandboxes", sandboxId, "bundle", "config.json"), "utf8")) as Spec;
    const root = await mkdtemp(join(tmpdir(), "sandbar-bench-runsc-"));
    cleanup.add(`runsc root ${root}`, () => rm(root, { recursive: true, force: true }));
    return new RawRunsc(cleanup, root, spec);
  }

  /** Untimed: a network namespace, a cgroup path and a bundle dir for one raw run. */
  async prepare(): Promise<RawContainer & { start(): Promise<void> }> {
    const id = `sbraw-${process.pid}-${++this.n}`;
    const ns = id;
    const bundle = join(this.root, `bundle-${this.n}`);
    await mkdir(bundle, { recursive: true });
    await run("ip", ["netns", "add", ns]);
    const cgroupsPath = `/sandbar-bench/${id}`;
    const spec: Spec = {
      ...this.spec,
      linux: {
        ...this.spec.linux,
        cgroupsPath,
        namespaces: this.spec.linux.namespaces.map((x) => (x.type === "network" ? { type: "network", path: `/run/netns/${ns}` } : x)),
      },
    };
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec));
    const remove = this.cleanup.add(`raw container ${id}`, async () => {
      await runscDelete(this.root, id);
      await run("ip", ["netns", "del", ns]).catch((e: { stderr?: string; message: string }) => {
        if (!/No such file|not found|does not exist/i.test(`${e.stderr ?? ""}${e.message}`)) throw e;
      });
      await rm(bundle, { recursive: true, force: true });
    });
    return {
      id,
      cgroupsPath,
      remove,
      start: () => runDetached([...UNSHARE, ...RUNSC, "--root", this.root, "run", "--detach", "--bundle", bundle, id], join(bundle, "runsc.log")),
    };
  }

  /** One timed `runsc run --detach` (preparation untimed); ms and the container. */
  async timedRun(): Promise<{ ms: number; container: RawContainer }> {
    const c = await this.prepare();
    const t0 = performance.now();
    await c.start();
    return { ms: performance.now() - t0, container: c };
  }

  /** `runsc state` status of a raw container ("running", "stopped", ...). */
  async status(id: string): Promise<string> {
    const { stdout } = await run(RUNSC[0] as string, [...RUNSC.slice(1), "--root", this.root, "state", id]);
    return (JSON.parse(stdout) as { status: string }).status;
  }
}

/**
 * Run a command whose children outlive it (runsc --detach): wait for its exit, not for stdio to
 * close. Output goes to `logFile` (the sandbox inherits it, as the server's log file).
 */
async function runDetached(argv: string[], logFile: string): Promise<void> {
  const log = await open(logFile, "a");
  try {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", log.fd, log.fd], detached: true });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`runsc run exited ${code}: ${(await readFile(logFile, "utf8")).slice(-2000).trim()}`);
  } finally {
    await log.close();
  }
}

/** `runsc delete --force`, quiet when the container is already gone (never started). */
async function runscDelete(root: string, id: string): Promise<void> {
  const gone = (e: unknown): boolean => /does not exist|not found|no such/i.test(`${(e as { stderr?: string }).stderr ?? ""}${(e as Error).message}`);
  const runsc = (...args: string[]): Promise<unknown> => run(RUNSC[0] as string, [...RUNSC.slice(1), "--root", root, ...args], { timeout: 120_000 });
  try {
    await runsc("delete", "--force", id);
  } catch (e) {
    if (gone(e)) return;
    await runsc("kill", id, "KILL").catch(() => undefined);
    await runsc("delete", "--force", id).catch((e2: unknown) => {
      if (!gone(e2)) throw e2;
    });
  }
}
