/**
 * The server as its own process (`sandbar serve`), so tests can kill -9 it and start it
 * again on the same data dir, as an operator's crash would.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  /** Output so far (for failure messages). */
  output(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Start `sandbar serve` and wait until /healthz answers 200. */
export async function startServerProcess(dataDir: string, apiKey: string, port: number, extraEnv: Record<string, string> = {}): Promise<ServerProcess> {
  const child = spawn(process.execPath, [MAIN, "serve", "--port", String(port), "--data-dir", dataDir], {
    env: { ...process.env, SANDBAR_API_KEY: apiKey, SANDBAR_LOG_LEVEL: "warn", ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${out}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server not healthy within 60s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    child,
    output: () => out,
    kill: (signal) =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill(signal);
      }),
  };
}

/**
 * Requests against a server on 127.0.0.1 with `apiKey`: `call` on the control plane
 * (`/v2/sandboxes` + path, JSON body), `exec` a blocking command on a sandbox's data plane.
 * `port` is read at each call, so a test can pick it in beforeAll.
 */
export function controlPlane(port: () => number, apiKey: string): {
  call(method: string, path: string, body?: unknown): Promise<Response>;
  exec(dataplaneUrl: string, command: string): Promise<{ stdout: string; exit_code: number }>;
} {
  return {
    call: (method, path, body) =>
      fetch(`http://127.0.0.1:${port()}/v2/sandboxes${path}`, {
        method,
        headers: { "x-api-key": apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    exec: async (dataplaneUrl, command) => {
      const r = await fetch(`${dataplaneUrl}/execute`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/json" }, body: JSON.stringify({ command }) });
      return (await r.json()) as { stdout: string; exit_code: number };
    },
  };
}
