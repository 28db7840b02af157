/**
 * The usual e2e world: a registry on 127.0.0.1 holding the test images, a sandbar server,
 * and snapshots built from those images through the HTTP API.
 */
import { testImage, type TestImageName } from "./images.js";
import { pushImage, startRegistry, type TestRegistry } from "./registry.js";
import { startTestServer, waitSnapshot, type TestServer, type TestServerOptions } from "./sandbar-server.js";

export interface World {
  registry: TestRegistry;
  t: TestServer;
  /** Snapshot id per image name. */
  snapshots: Partial<Record<TestImageName, string>>;
  /** Create a ready sandbox and return its JSON. */
  createSandbox(body: Record<string, unknown>): Promise<SandboxJson>;
  /** Blocking execute through the data plane. */
  exec(sb: SandboxJson, command: string, extra?: Record<string, unknown>): Promise<{ status: number; body: ExecJson }>;
  stop(): Promise<void>;
}

export interface SandboxJson {
  id: string;
  name: string;
  status: string;
  dataplane_url: string;
  [k: string]: unknown;
}

export interface ExecJson {
  stdout: string;
  stderr: string;
  exit_code: number;
  code?: string;
  [k: string]: unknown;
}

/** Push `images` to a fresh registry and build a snapshot of each on a fresh server. */
export async function startWorld(images: TestImageName[], opts: TestServerOptions = {}): Promise<World> {
  const registry = await startRegistry();
  const t = await startTestServer(opts);
  const snapshots: World["snapshots"] = {};
  for (const name of images) {
    const img = await testImage(name);
    await pushImage(img.layoutDir, img.tag, registry.host, `${name}:latest`);
    const res = await t.call("POST", "/snapshots", { name, docker_image: `${registry.host}/${name}:latest`, fs_capacity_bytes: 1024 ** 3 });
    if (res.status !== 201) throw new Error(`snapshot create ${name}: ${res.status} ${await res.text()}`);
    const s = await waitSnapshot(t, ((await res.json()) as { id: string }).id);
    if (s.status !== "ready") throw new Error(`snapshot ${name} ${s.status}: ${s.status_message ?? ""}`);
    snapshots[name] = s.id;
  }
  const createSandbox = async (body: Record<string, unknown>): Promise<SandboxJson> => {
    const res = await t.call("POST", "/boxes", body);
    const json = (await res.json()) as SandboxJson;
    if (res.status !== 201) throw new Error(`create sandbox: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const exec = async (sb: SandboxJson, command: string, extra: Record<string, unknown> = {}): Promise<{ status: number; body: ExecJson }> => {
    const res = await fetch(`${sb.dataplane_url}/execute`, {
      method: "POST",
      headers: { "x-api-key": t.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ command, ...extra }),
    });
    return { status: res.status, body: (await res.json()) as ExecJson };
  };
  return {
    registry,
    t,
    snapshots,
    createSandbox,
    exec,
    async stop() {
      await t.stop();
      await registry.stop();
    },
  };
}
