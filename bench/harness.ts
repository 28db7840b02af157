/**
 * What the benchmarks that drive a separate server process share: undo steps that run even
 * when the run is interrupted, a raw control-plane client, and the server with its data dir.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startServerProcess, type ServerProcess } from "../test/support/server-process.js";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";

/**
 * Undo steps, run last-in first-out at the end, or one early through the function add()
 * returns. A step that fails stays for the final run, so each step must be idempotent.
 */
export class Cleanup {
  private steps: { what: string; fn: () => Promise<unknown> }[] = [];
  private running: Promise<void> | undefined;

  /** `name` prefixes failure messages, e.g. "memory-bench". */
  constructor(private readonly name: string) {}

  add(what: string, fn: () => Promise<unknown>): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    if (this.running) {
      // Interrupted: whatever made this is still taken down, and the run stops here.
      void this.running.then(() => this.run());
      throw new Error("interrupted");
    }
    return async () => {
      if (!this.steps.includes(step)) return;
      await fn();
      this.steps = this.steps.filter((s) => s !== step);
    };
  }

  run(): Promise<void> {
    const all = async (): Promise<void> => {
      for (let step = this.steps.pop(); step; step = this.steps.pop()) {
        try {
          await step.fn();
        } catch (e) {
          console.error(`[${this.name}] cleanup of ${step.what} failed: ${(e as Error).message}`);
        }
      }
    };
    this.running = (this.running ?? Promise.resolve()).then(all);
    return this.running;
  }
}

/** SIGINT/SIGTERM run the clean-up and exit 130; returns the function that detaches them. */
export function cleanUpOnSignals(name: string, cleanup: Cleanup): () => void {
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.error(`[${name}] ${sig}: cleaning up`);
    void cleanup.run().finally(() => process.exit(130));
  };
  // .on, not .once: Ctrl-C reaches us twice (from the terminal and relayed by tsx).
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/** The fields of a snapshot the benches read. */
export interface SnapshotJson {
  id: string;
  status: string;
  status_message: string | null;
  fs_used_bytes: number | null;
  memory_snapshot_size_bytes: number | null;
}

/** The control plane over raw HTTP with the key (absolute URLs reach the data plane). */
export function apiClient(url: string, apiKey: string) {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(path.startsWith("http") ? path : `${url}/v2/sandboxes${path}`, {
      method,
      headers: { "x-api-key": apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 1000)}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  return {
    call,
    /** Blocking execute; its stdout, or an error on a non-zero exit. */
    async exec(sb: { dataplane_url: string }, command: string): Promise<string> {
      const r = await call<{ stdout: string; stderr: string; exit_code: number }>("POST", `${sb.dataplane_url}/execute`, { command, timeout: 120 });
      if (r.exit_code !== 0) throw new Error(`'${command.slice(0, 80)}' exited ${r.exit_code}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    /** Polls every 20 ms until the snapshot leaves `building`; throws unless it is ready. */
    async waitSnapshot(id: string, timeoutMs = 900_000): Promise<SnapshotJson> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await call<SnapshotJson>("GET", `/snapshots/${id}`);
        if (s.status === "ready") return s;
        if (s.status !== "building") throw new Error(`snapshot ${id} ${s.status}: ${s.status_message ?? ""}`);
        if (Date.now() > deadline) throw new Error(`snapshot ${id} still building`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}
export type ApiClient = ReturnType<typeof apiClient>;

/** A server process on a fresh data dir; `server` and `api` change if clean-up restarts it. */
export interface BenchServer {
  dataDir: string;
  apiKey: string;
  server: ServerProcess;
  api: ApiClient;
  alive(): boolean;
}

/**
 * Start `sandbar serve` on a fresh data dir and register its clean-up: every sandbox and
 * snapshot deleted through the API (a server that went down is started again on its data dir
 * first, which adopts or removes what it left), the server stopped, the data dir removed.
 */
export async function startBenchServer(cleanup: Cleanup, env: Record<string, string> = {}): Promise<BenchServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "sandbar-bench-"));
  cleanup.add(`data dir ${dataDir}`, async () => {
    const mounts = await readFile("/proc/self/mounts", "utf8");
    if (mounts.split("\n").some((l) => l.split(" ")[1]?.startsWith(`${dataDir}/`))) throw new Error(`${dataDir} still has mounts; left in place`);
    await rm(dataDir, { recursive: true, force: true });
  });
  const apiKey = `sb_bench_${randomBytes(8).toString("hex")}`;
  const server = await startServerProcess(dataDir, apiKey, await freePort(), env);
  const b: BenchServer = {
    dataDir,
    apiKey,
    server,
    api: apiClient(server.url, apiKey),
    alive: () => b.server.child.exitCode === null && b.server.child.signalCode === null,
  };
  cleanup.add("server, its sandboxes and snapshots", async () => {
    const clear = async (): Promise<void> => {
      // Several at a time: a delete is mostly waiting for `runsc delete` (density leaves hundreds).
      for (let round = 0; round < 10; round++) {
        const boxes = await b.api.call<{ sandboxes: { id: string }[] }>("GET", "/boxes?limit=500");
        if (boxes.sandboxes.length === 0) break;
        const failed = (await mapLimit(boxes.sandboxes, 8, (x) => b.api.call("DELETE", `/boxes/${x.id}`))).find((r) => r.status === "rejected");
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
      // A snapshot still building is deleted once its build ends (the server waits for it).
      const snaps = await b.api.call<{ snapshots: { id: string }[] }>("GET", "/snapshots?limit=500");
      for (const s of snaps.snapshots) await b.api.call("DELETE", `/snapshots/${s.id}`);
    };
    try {
      if (!b.alive()) throw new Error("the server is down");
      await clear();
    } catch {
      // A server that went down (Ctrl-C reaches it too) is started again on its data dir.
      await b.server.kill("SIGTERM");
      b.server = await startServerProcess(dataDir, apiKey, await freePort());
      b.api = apiClient(b.server.url, apiKey);
      await clear();
    } finally {
      await b.server.kill("SIGTERM");
    }
  });
  return b;
}

/** `fn` over `items`, at most `limit` running at a time; every outcome, in the items' order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        out[i] = { status: "fulfilled", value: await fn(items[i] as T, i) };
      } catch (reason) {
        out[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Host MemAvailable (/proc/meminfo), bytes: free memory plus what the kernel can reclaim. */
export async function memAvailable(): Promise<number> {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(await readFile("/proc/meminfo", "utf8"));
  if (!m) throw new Error("no MemAvailable in /proc/meminfo");
  return Number(m[1]) * 1024;
}

/** One control-plane request with its status and headers (for answers a bench must inspect). */
export async function rawCall(
  url: string,
  apiKey: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; headers: Headers; json: unknown; text: string }> {
  const res = await fetch(`${url}/v2/sandboxes${path}`, {
    method,
    headers: { "x-api-key": apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, json, text };
}

/**
 * What most benches start from: the busybox test image in a throwaway registry (stopped by
 * `cleanup`), a server process, and a ready snapshot of the image named `name`.
 */
export async function busyboxBench(cleanup: Cleanup, name = "bench"): Promise<{ bench: BenchServer; snap: SnapshotJson }> {
  const registry = await startRegistry();
  cleanup.add("registry", () => registry.stop());
  const img = await testImage("busybox");
  await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
  const bench = await startBenchServer(cleanup);
  const created = await bench.api.call<SnapshotJson>("POST", "/snapshots", { name, docker_image: `${registry.host}/busybox:latest` });
  return { bench, snap: await bench.api.waitSnapshot(created.id) };
}
