/**
 * A real sandbar server for e2e tests: in-process, on 127.0.0.1 with a free port, its own
 * data dir under /tmp, the real runtime and the real agent. stop() deletes every sandbox
 * and snapshot it made through the API, closes the server and removes the data dir.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { loadConfig, startServer, type RuntimeName, type SandbarServer, type ServerConfig } from "@sandbar/server";

export interface TestServer {
  server: SandbarServer;
  url: string;
  /** Control-plane base, `${url}/v2/sandboxes`. */
  api: string;
  apiKey: string;
  dataDir: string;
  /** fetch against the control plane with the key. */
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  stop(): Promise<void>;
}

export interface TestServerOptions {
  /** Any other server setting (timeScale, retentionIntervalMs, ...). */
  config?: Partial<ServerConfig>;
  runtime?: RuntimeName;
  dataDir?: string;
  apiKey?: string;
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "sandbar-test-")));
  const apiKey = opts.apiKey ?? `sb_test_${randomBytes(12).toString("hex")}`;
  const config = loadConfig({
    host: "127.0.0.1",
    port: 0,
    dataDir,
    bootstrapApiKey: apiKey,
    logLevel: process.env.SANDBAR_TEST_LOG ?? "warn",
    ...(opts.runtime ? { runtime: opts.runtime } : {}),
    ...opts.config,
  });
  const server = await startServer(config, pino({ level: config.logLevel }));
  const api = `${server.url}/v2/sandboxes`;
  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${api}${path}`, {
      method,
      headers: { "x-api-key": apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  let stopped = false;
  return {
    server,
    url: server.url,
    api,
    apiKey,
    dataDir,
    call,
    async stop() {
      if (stopped) return;
      stopped = true;
      await cleanupAll(call);
      await server.close();
      if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Delete every sandbox, then every snapshot, of the test key's workspace. */
export async function cleanupAll(call: TestServer["call"]): Promise<void> {
  const boxes = (await (await call("GET", "/boxes?limit=500")).json()) as { sandboxes: { id: string }[] };
  await Promise.all(boxes.sandboxes.map((b) => call("DELETE", `/boxes/${b.id}`)));
  const snaps = (await (await call("GET", "/snapshots?limit=500")).json()) as { snapshots: { id: string }[] };
  for (const s of snaps.snapshots) await call("DELETE", `/snapshots/${s.id}`);
}

/** Poll a snapshot until it leaves `building`. */
export async function waitSnapshot(t: TestServer, id: string, timeoutMs = 120_000): Promise<{ status: string; status_message: string | null; id: string; image_digest: string | null }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = (await (await t.call("GET", `/snapshots/${id}`)).json()) as { status: string; status_message: string | null; id: string; image_digest: string | null };
    if (s.status !== "building") return s;
    if (Date.now() > deadline) throw new Error(`snapshot ${id} still building`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
