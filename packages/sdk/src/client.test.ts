/**
 * SandboxClient and Sandbox against a recording fetch: the URLs and bodies each method sends
 * (registries included), the configuration sources, and the scoped forms' cleanup.
 */
import { afterEach, describe, expect, it } from "vitest";
import { errorBody } from "@sandbar/shared";
import { SandboxClient } from "./client.js";
import { CommandTimeoutError, ResourceCreationError, ResourceNameConflictError, ResourceNotFoundError, SandboxClientError, ValidationError } from "./errors.js";

interface Call {
  method: string;
  url: string;
  body: unknown;
}

const SANDBOX = { id: "sb-1", name: "box", status: "ready", dataplane_url: "http://h/dataplane/sb-1", idle_ttl_seconds: 600 };
const SNAPSHOT = { id: "sn-1", name: "python", status: "ready", status_message: null };

/** A fetch that records calls and answers by "METHOD path" (path without the query). */
function server(routes: Record<string, (c: Call) => Response>): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const f = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = String(input);
    const raw = init.body;
    const body = typeof raw === "string" ? (JSON.parse(raw) as unknown) : raw instanceof Uint8Array ? [...raw] : raw;
    const c = { method: init.method ?? "GET", url, body };
    calls.push(c);
    const key = `${c.method} ${new URL(url).pathname}`;
    const route = routes[key];
    if (!route) return json(404, errorBody("ROUTE_NOT_FOUND", `no route ${key}`));
    return route(c);
  };
  return { fetch: f as typeof fetch, calls };
}

function json(status: number, body: unknown): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const envSaved = { SANDBAR_ENDPOINT: process.env.SANDBAR_ENDPOINT, SANDBAR_API_KEY: process.env.SANDBAR_API_KEY };
afterEach(() => {
  for (const [k, v] of Object.entries(envSaved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe("configuration", () => {
  it.each([
    ["http://h:1", "http://h:1/v2/sandboxes/snapshots"],
    ["http://h:1/", "http://h:1/v2/sandboxes/snapshots"],
    ["http://h:1/v2/sandboxes", "http://h:1/v2/sandboxes/snapshots"],
    ["http://h:1/v2/sandboxes/", "http://h:1/v2/sandboxes/snapshots"],
  ])("endpoint %s -> %s", async (endpoint, url) => {
    const s = server({ "GET /v2/sandboxes/snapshots": () => json(200, { snapshots: [] }) });
    await new SandboxClient({ endpoint, fetch: s.fetch }).listSnapshots();
    expect(s.calls[0]?.url).toBe(url);
  });

  it("reads SANDBAR_ENDPOINT and SANDBAR_API_KEY; options win over them", async () => {
    process.env.SANDBAR_ENDPOINT = "http://from-env:9";
    process.env.SANDBAR_API_KEY = "env-key";
    const seen: string[] = [];
    const f = (async (input: string | URL | Request, init: RequestInit = {}) => {
      seen.push(`${String(input)} ${new Headers(init.headers).get("x-api-key")}`);
      return json(200, { snapshots: [] });
    }) as typeof fetch;
    await new SandboxClient({ fetch: f }).listSnapshots();
    await new SandboxClient({ endpoint: "http://opt:1", apiKey: "opt-key", fetch: f }).listSnapshots();
    expect(seen).toEqual(["http://from-env:9/v2/sandboxes/snapshots env-key", "http://opt:1/v2/sandboxes/snapshots opt-key"]);
  });

  it("defaults to http://127.0.0.1:8080", async () => {
    delete process.env.SANDBAR_ENDPOINT;
    const s = server({ "GET /v2/sandboxes/boxes": () => json(200, { sandboxes: [] }) });
    await new SandboxClient({ fetch: s.fetch }).listSandboxes();
    expect(s.calls[0]?.url).toBe("http://127.0.0.1:8080/v2/sandboxes/boxes");
  });
});

describe("requests", () => {
  it("createSandbox maps camelCase options to the snake_case body, by id or by options", async () => {
    const s = server({ "POST /v2/sandboxes/boxes": () => json(201, SANDBOX) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const sb = await c.createSandbox("sn-1", { idleTtlSeconds: 300, deleteAfterStopSeconds: 3600 });
    expect(sb.name).toBe("box");
    expect(sb.id).toBe("sb-1");
    expect(sb.dataplaneUrl).toBe("http://h/dataplane/sb-1");
    expect(s.calls[0]?.body).toEqual({ snapshot_id: "sn-1", wait_for_ready: true, timeout: 30, idle_ttl_seconds: 300, delete_after_stop_seconds: 3600 });
    await c.createSandbox({
      snapshotName: "python",
      name: "b",
      vcpus: 2,
      memBytes: 1 << 30,
      fsCapacityBytes: 1 << 30,
      labels: { a: "b" },
      waitForReady: false,
      timeout: 5,
    });
    expect(s.calls[1]?.body).toEqual({
      snapshot_name: "python",
      name: "b",
      vcpus: 2,
      mem_bytes: 1 << 30,
      fs_capacity_bytes: 1 << 30,
      labels: { a: "b" },
      wait_for_ready: false,
      timeout: 5,
    });
  });

  it("updateSandbox: a string renames, an object sets the timers", async () => {
    const s = server({ "PATCH /v2/sandboxes/boxes/box": () => json(200, SANDBOX) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    await c.updateSandbox("box", "box-2");
    await c.updateSandbox("box", { idleTtlSeconds: 1800, deleteAfterStopSeconds: 2592000 });
    expect(s.calls.map((x) => x.body)).toEqual([{ name: "box-2" }, { idle_ttl_seconds: 1800, delete_after_stop_seconds: 2592000 }]);
  });

  it("listSnapshots and listSandboxes pass their filters as the query", async () => {
    const s = server({
      "GET /v2/sandboxes/snapshots": () => json(200, { snapshots: [SNAPSHOT] }),
      "GET /v2/sandboxes/boxes": () => json(200, { sandboxes: [SANDBOX] }),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    expect(await c.listSnapshots({ nameContains: "py", limit: 2, offset: 4 })).toEqual([SNAPSHOT]);
    const boxes = await c.listSandboxes({ nameContains: "b", status: "ready", limit: 1, offset: 0 });
    expect(boxes.map((b) => b.name)).toEqual(["box"]);
    expect(s.calls.map((x) => x.url)).toEqual([
      "http://h/v2/sandboxes/snapshots?name_contains=py&limit=2&offset=4",
      "http://h/v2/sandboxes/boxes?name_contains=b&status=ready&limit=1&offset=0",
    ]);
  });

  it("run, write and read go to the sandbox's data plane", async () => {
    const s = server({
      "POST /v2/sandboxes/boxes": () => json(201, SANDBOX),
      "POST /dataplane/sb-1/execute": () => json(200, { stdout: "hi\n", stderr: "", exit_code: 0 }),
      "POST /dataplane/sb-1/upload": () => json(200, {}),
      "GET /dataplane/sb-1/download": () => new Response(new Uint8Array([0, 1, 2])),
    });
    const sb = await new SandboxClient({ endpoint: "http://h", fetch: s.fetch }).createSandbox("sn-1");
    expect(await sb.run("echo hi", { env: { A: "1" }, cwd: "/tmp" })).toEqual({ stdout: "hi\n", stderr: "", exit_code: 0, success: true });
    await sb.write("/app/a b.txt", "hé");
    expect([...(await sb.read("/app/x"))]).toEqual([0, 1, 2]);
    expect(s.calls[1]?.body).toEqual({ command: "echo hi", timeout: 60, shell: "/bin/bash", env: { A: "1" }, cwd: "/tmp" });
    expect(s.calls[2]?.url).toBe("http://h/dataplane/sb-1/upload?path=%2Fapp%2Fa%20b.txt");
    expect(s.calls[2]?.body).toEqual([...new TextEncoder().encode("hé")]);
    expect(s.calls[3]?.url).toBe("http://h/dataplane/sb-1/download?path=%2Fapp%2Fx");
  });
});

describe("network policy", () => {
  it("createSandbox sends networkPolicy as the wire's network_policy, lists only when given", async () => {
    const s = server({ "POST /v2/sandboxes/boxes": () => json(201, { ...SANDBOX, network_policy: { egress: "deny_all", allow_cidrs: [], allow_domains: [] } }) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const sb = await c.createSandbox({ snapshotName: "python", networkPolicy: { egress: "deny_all" } });
    expect(sb.info.network_policy).toEqual({ egress: "deny_all", allow_cidrs: [], allow_domains: [] });
    await c.createSandbox("sn-1", { networkPolicy: { egress: "allow_list", allowCidrs: ["10.0.0.0/8", "1.1.1.1"], allowDomains: ["pypi.org", "*.example.com"] } });
    await c.createSandbox("sn-1", { networkPolicy: { egress: "allow_all", allowCidrs: ["169.254.169.254"] } });
    await c.createSandbox("sn-1");
    const bodies = s.calls.map((x) => x.body as Record<string, unknown>);
    expect(bodies[0]?.network_policy).toEqual({ egress: "deny_all" });
    expect(bodies[1]?.network_policy).toEqual({ egress: "allow_list", allow_cidrs: ["10.0.0.0/8", "1.1.1.1"], allow_domains: ["pypi.org", "*.example.com"] });
    expect(bodies[2]?.network_policy).toEqual({ egress: "allow_all", allow_cidrs: ["169.254.169.254"] });
    expect(bodies[3]).not.toHaveProperty("network_policy");
  });

  it("updateSandbox replaces the policy, alone or with other changes", async () => {
    const s = server({ "PATCH /v2/sandboxes/boxes/box": () => json(200, SANDBOX) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    await c.updateSandbox("box", { networkPolicy: { egress: "allow_list", allowDomains: ["github.com"] } });
    await c.updateSandbox("box", { idleTtlSeconds: 600, networkPolicy: { egress: "allow_all" } });
    expect(s.calls.map((x) => x.body)).toEqual([
      { network_policy: { egress: "allow_list", allow_domains: ["github.com"] } },
      { idle_ttl_seconds: 600, network_policy: { egress: "allow_all" } },
    ]);
  });
});

describe("memory snapshots", () => {
  it("captureSnapshot sends include_memory only when given, from the client and from a sandbox", async () => {
    const view = { ...SNAPSHOT, id: "sn-2", name: "warm", source_sandbox_id: "sb-1", memory_snapshot_size_bytes: 52428800 };
    const s = server({
      "POST /v2/sandboxes/boxes/box/snapshot": () => json(201, view),
      "POST /v2/sandboxes/boxes/sb-1/snapshot": () => json(201, view),
      "GET /v2/sandboxes/snapshots/sn-2": () => json(200, view),
      "GET /v2/sandboxes/boxes/box": () => json(200, SANDBOX),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const snap = await c.captureSnapshot("box", "warm", { includeMemory: true, timeout: 5 });
    expect(snap.memory_snapshot_size_bytes).toBe(52428800);
    await c.captureSnapshot("box", "files", { fsCapacityBytes: 1 << 30 });
    const sb = await c.getSandbox("box");
    await sb.captureSnapshot("warm-2", { includeMemory: true });
    await sb.captureSnapshot("files-2", { includeMemory: false });
    expect(s.calls.filter((x) => x.method === "POST").map((x) => [x.url, x.body])).toEqual([
      ["http://h/v2/sandboxes/boxes/box/snapshot", { name: "warm", include_memory: true }],
      ["http://h/v2/sandboxes/boxes/box/snapshot", { name: "files", fs_capacity_bytes: 1 << 30 }],
      ["http://h/v2/sandboxes/boxes/sb-1/snapshot", { name: "warm-2", include_memory: true }],
      ["http://h/v2/sandboxes/boxes/sb-1/snapshot", { name: "files-2", include_memory: false }],
    ]);
  });

  it("createSandbox maps restoreMemory and preserveMemoryOnStop, and leaves them out when omitted", async () => {
    const s = server({ "POST /v2/sandboxes/boxes": () => json(201, { ...SANDBOX, preserve_memory_on_stop: true, memory_preserved: false }) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const sb = await c.createSandbox({ snapshotName: "warm", restoreMemory: false, preserveMemoryOnStop: true });
    expect([sb.info.preserve_memory_on_stop, sb.info.memory_preserved]).toEqual([true, false]);
    await c.createSandbox("sn-2", { restoreMemory: true });
    await c.createSandbox("sn-2");
    const bodies = s.calls.map((x) => x.body as Record<string, unknown>);
    expect(bodies[0]).toEqual({ snapshot_name: "warm", wait_for_ready: true, timeout: 30, restore_memory: false, preserve_memory_on_stop: true });
    expect(bodies[1]).toEqual({ snapshot_id: "sn-2", wait_for_ready: true, timeout: 30, restore_memory: true });
    expect(bodies[2]).not.toHaveProperty("restore_memory");
    expect(bodies[2]).not.toHaveProperty("preserve_memory_on_stop");
  });

  it("updateSandbox sends preserve_memory_on_stop, true and false; stop returns memory_preserved", async () => {
    const s = server({
      "PATCH /v2/sandboxes/boxes/box": () => json(200, SANDBOX),
      "POST /v2/sandboxes/boxes/box/stop": () => json(200, { ...SANDBOX, status: "stopped", preserve_memory_on_stop: true, memory_preserved: true }),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    await c.updateSandbox("box", { preserveMemoryOnStop: true });
    await c.updateSandbox("box", { preserveMemoryOnStop: false, idleTtlSeconds: 600 });
    expect(s.calls.map((x) => x.body)).toEqual([{ preserve_memory_on_stop: true }, { idle_ttl_seconds: 600, preserve_memory_on_stop: false }]);
    expect((await c.stopSandbox("box")).info.memory_preserved).toBe(true);
  });
});

describe("pools", () => {
  const POOL = { id: "p-1", snapshot_id: "s-1", size: 2, vcpus: 1, mem_bytes: 1, fs_capacity_bytes: 1, ready: 2, booting: 0, source: "api", created_at: "t", updated_at: "t" };

  it("create, list, get, resize and delete go to /pools[/{id}] with the wire's fields", async () => {
    const s = server({
      "POST /v2/sandboxes/pools": () => json(201, POOL),
      "GET /v2/sandboxes/pools": () => json(200, { pools: [POOL] }),
      "GET /v2/sandboxes/pools/p-1": () => json(200, POOL),
      "PATCH /v2/sandboxes/pools/p-1": () => json(200, { ...POOL, size: 5 }),
      "DELETE /v2/sandboxes/pools/p-1": () => json(204, null),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    expect(await c.pools.create({ snapshotName: "py", size: 2, memBytes: 1024 })).toEqual(POOL);
    expect(await c.pools.list()).toEqual([POOL]);
    expect((await c.pools.get("p-1")).ready).toBe(2);
    expect((await c.pools.resize("p-1", 5)).size).toBe(5);
    await expect(c.pools.delete("p-1")).resolves.toBeUndefined();
    expect(s.calls.map((x) => [x.method, x.url, x.body])).toEqual([
      ["POST", "http://h/v2/sandboxes/pools", { snapshot_name: "py", size: 2, mem_bytes: 1024 }],
      ["GET", "http://h/v2/sandboxes/pools", undefined],
      ["GET", "http://h/v2/sandboxes/pools/p-1", undefined],
      ["PATCH", "http://h/v2/sandboxes/pools/p-1", { size: 5 }],
      ["DELETE", "http://h/v2/sandboxes/pools/p-1", undefined],
    ]);
  });

  it("maps POOL_NOT_FOUND and POOL_EXISTS to their classes", async () => {
    const s = server({
      "GET /v2/sandboxes/pools/none": () => json(404, errorBody("POOL_NOT_FOUND", "pool 'none' not found")),
      "POST /v2/sandboxes/pools": () => json(409, errorBody("POOL_EXISTS", "a pool of snapshot 'py' exists already")),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch, maxRetries: 0 });
    await expect(c.pools.get("none")).rejects.toBeInstanceOf(ResourceNotFoundError);
    await expect(c.pools.create({ snapshotId: "s", size: 1 })).rejects.toBeInstanceOf(ResourceNameConflictError);
  });
});

describe("registries", () => {
  const REGISTRY = { id: "rg-1", name: "ghcr", url: "https://ghcr.io", auth_type: "DOCKER_CONFIG", provider: "DOCKER_REGISTRY", username: "me", has_password: true, created_at: "t", updated_at: "t" };

  it("create, get, update and delete go to /registries[/{name}] with the wire's fields", async () => {
    const s = server({
      "POST /v2/sandboxes/registries": () => json(201, REGISTRY),
      "GET /v2/sandboxes/registries/ghcr": () => json(200, REGISTRY),
      "PATCH /v2/sandboxes/registries/ghcr": () => json(200, { ...REGISTRY, name: "gh" }),
      "PATCH /v2/sandboxes/registries/a%2Fb": () => json(200, REGISTRY),
      "DELETE /v2/sandboxes/registries/rg-1": () => json(204, null),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    expect(await c.registries.create({ name: "ghcr", url: "https://ghcr.io", username: "me", password: "pw" })).toEqual(REGISTRY);
    await c.registries.create({ name: "anon", url: "registry.lan:5000" });
    expect((await c.registries.get("ghcr")).has_password).toBe(true);
    expect((await c.registries.update("ghcr", { name: "gh" })).name).toBe("gh");
    await c.registries.update("a/b", { url: "ghcr.io", username: "bot", password: "pw2" });
    await expect(c.registries.delete("rg-1")).resolves.toBeUndefined();
    expect(s.calls.map((x) => [x.method, x.url, x.body])).toEqual([
      ["POST", "http://h/v2/sandboxes/registries", { name: "ghcr", url: "https://ghcr.io", username: "me", password: "pw" }],
      ["POST", "http://h/v2/sandboxes/registries", { name: "anon", url: "registry.lan:5000" }],
      ["GET", "http://h/v2/sandboxes/registries/ghcr", undefined],
      ["PATCH", "http://h/v2/sandboxes/registries/ghcr", { name: "gh" }],
      ["PATCH", "http://h/v2/sandboxes/registries/a%2Fb", { url: "ghcr.io", username: "bot", password: "pw2" }],
      ["DELETE", "http://h/v2/sandboxes/registries/rg-1", undefined],
    ]);
  });

  it("list passes its filters as the query and returns the items", async () => {
    const s = server({ "GET /v2/sandboxes/registries": () => json(200, { items: [REGISTRY], registries: [REGISTRY], offset: 1, next_cursor: null }) });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    expect(await c.registries.list({ nameContains: "gh", limit: 10, offset: 20 })).toEqual([REGISTRY]);
    expect(await c.registries.list()).toEqual([REGISTRY]);
    expect(s.calls.map((x) => x.url)).toEqual(["http://h/v2/sandboxes/registries?name_contains=gh&limit=10&offset=20", "http://h/v2/sandboxes/registries"]);
  });

  it("errors map to classes: REGISTRY_NOT_FOUND, NAME_CONFLICT, VALIDATION_ERROR", async () => {
    const s = server({
      "GET /v2/sandboxes/registries/none": () => json(404, errorBody("REGISTRY_NOT_FOUND", "registry 'none' not found")),
      "POST /v2/sandboxes/registries": (call) =>
        (call.body as { name: string }).name === "taken"
          ? json(409, errorBody("NAME_CONFLICT", "registry name 'taken' is already in use"))
          : json(422, errorBody("VALIDATION_ERROR", "password: username and password go together")),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const missing = await c.registries.get("none").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ResourceNotFoundError);
    expect(missing).toMatchObject({ code: "REGISTRY_NOT_FOUND", resourceType: "registry" });
    await expect(c.registries.create({ name: "taken", url: "ghcr.io" })).rejects.toBeInstanceOf(ResourceNameConflictError);
    await expect(c.registries.create({ name: "half", url: "ghcr.io", username: "u" })).rejects.toBeInstanceOf(ValidationError);
  });

  it("a rename is not retried, other updates are", async () => {
    let n = 0;
    const s = server({ "PATCH /v2/sandboxes/registries/ghcr": () => (++n % 2 === 1 ? json(502, errorBody("INTERNAL_ERROR", "bad gateway")) : json(200, REGISTRY)) });
    const c = new SandboxClient({ endpoint: "http://h", maxRetries: 1, fetch: s.fetch });
    await expect(c.registries.update("ghcr", { password: "pw" })).resolves.toEqual(REGISTRY);
    expect(s.calls).toHaveLength(2);
    n = 0;
    await expect(c.registries.update("ghcr", { name: "gh" })).rejects.toBeInstanceOf(SandboxClientError);
    expect(s.calls).toHaveLength(3);
  });

  it("createSnapshot sends registry_id, or the inline registry fields, only when given", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots": () => json(201, { ...SNAPSHOT, registry_id: "rg-1" }),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...SNAPSHOT, registry_id: "rg-1" }),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    expect((await c.createSnapshot("app", "ghcr.io/acme/app:1", undefined, { registryId: "ghcr" })).registry_id).toBe("rg-1");
    await c.createSnapshot("app-2", "ghcr.io/acme/app:2", 1 << 30, { registryUrl: "https://ghcr.io", registryUsername: "me", registryPassword: "pw" });
    await c.createSnapshot("plain", "python:3.12-slim");
    expect(s.calls.filter((x) => x.method === "POST").map((x) => x.body)).toEqual([
      { name: "app", docker_image: "ghcr.io/acme/app:1", registry_id: "ghcr" },
      { name: "app-2", docker_image: "ghcr.io/acme/app:2", fs_capacity_bytes: 1 << 30, registry_url: "https://ghcr.io", registry_username: "me", registry_password: "pw" },
      { name: "plain", docker_image: "python:3.12-slim" },
    ]);
  });

  it("a build the registry refused rejects with the server's message", async () => {
    const failed = { ...SNAPSHOT, status: "failed", status_message: "registry ghcr.io refused authentication for ghcr.io/acme/app:1" };
    const s = server({
      "POST /v2/sandboxes/snapshots": () => json(201, failed),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, failed),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const err = await c.createSnapshot("app", "ghcr.io/acme/app:1", undefined, { registryUrl: "ghcr.io", registryUsername: "me", registryPassword: "wrong" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceCreationError);
    expect((err as Error).message).toBe("registry ghcr.io refused authentication for ghcr.io/acme/app:1");
  });
});

describe("service URLs", () => {
  it("client.serviceUrl and sandbox.service POST the port and lifetime to /boxes/{name}/service-url", async () => {
    const view = { browser_url: "http://b/__sandbar/auth?token=t1", service_url: "http://h/svc/sb-1/8000", token: "t1", expires_at: new Date(Date.now() + 3600_000).toISOString() };
    const s = server({
      "POST /v2/sandboxes/boxes/box/service-url": () => json(200, view),
      "POST /v2/sandboxes/boxes/sb-1/service-url": () => json(200, view),
      "GET /v2/sandboxes/boxes/box": () => json(200, SANDBOX),
    });
    const c = new SandboxClient({ endpoint: "http://h", fetch: s.fetch });
    const svc = await c.serviceUrl("box", 8000, { expiresInSeconds: 600 });
    expect([svc.port, svc.browserUrl, svc.serviceUrl, svc.token, svc.expiresAt]).toEqual([8000, view.browser_url, view.service_url, "t1", view.expires_at]);
    await (await c.getSandbox("box")).service(3000);
    expect(s.calls.filter((x) => x.method === "POST").map((x) => [x.url, x.body])).toEqual([
      ["http://h/v2/sandboxes/boxes/box/service-url", { port: 8000, expires_in_seconds: 600 }],
      ["http://h/v2/sandboxes/boxes/sb-1/service-url", { port: 3000 }],
    ]);
  });
});

describe("scoped forms", () => {
  function world(): { c: SandboxClient; calls: Call[] } {
    const s = server({
      "POST /v2/sandboxes/boxes": () => json(201, SANDBOX),
      "POST /dataplane/sb-1/execute": () => json(408, errorBody("COMMAND_TIMEOUT", "timed out")),
      "DELETE /v2/sandboxes/boxes/sb-1": () => json(204, null),
    });
    return { c: new SandboxClient({ endpoint: "http://h", fetch: s.fetch }), calls: s.calls };
  }

  it("withSandbox deletes the sandbox after fn returns and after fn throws", async () => {
    const ok = world();
    expect(await ok.c.withSandbox({ snapshotId: "sn-1" }, async (sb) => sb.name)).toBe("box");
    expect(ok.calls.at(-1)).toMatchObject({ method: "DELETE", url: "http://h/v2/sandboxes/boxes/sb-1" });
    const bad = world();
    await expect(bad.c.withSandbox({ snapshotId: "sn-1" }, (sb) => sb.run("sleep 999", { timeout: 1 }))).rejects.toBeInstanceOf(CommandTimeoutError);
    expect(bad.calls.map((x) => x.method)).toEqual(["POST", "POST", "DELETE"]);
  });

  it("await using deletes at the end of the block", async () => {
    const w = world();
    {
      await using sb = await w.c.createSandbox("sn-1");
      expect(sb.name).toBe("box");
    }
    expect(w.calls.map((x) => x.method)).toEqual(["POST", "DELETE"]);
  });

  it("disposal ignores an already deleted sandbox, not other errors", async () => {
    const gone = server({
      "POST /v2/sandboxes/boxes": () => json(201, SANDBOX),
      "DELETE /v2/sandboxes/boxes/sb-1": () => json(404, errorBody("SANDBOX_NOT_FOUND", "no sandbox")),
    });
    const sb = await new SandboxClient({ endpoint: "http://h", fetch: gone.fetch }).createSandbox("sn-1");
    await expect(sb.delete()).rejects.toBeInstanceOf(ResourceNotFoundError);
    await expect(sb[Symbol.asyncDispose]()).resolves.toBeUndefined();
    const broken = server({
      "POST /v2/sandboxes/boxes": () => json(201, SANDBOX),
      "DELETE /v2/sandboxes/boxes/sb-1": () => json(500, errorBody("INTERNAL_ERROR", "bug")),
    });
    const sb2 = await new SandboxClient({ endpoint: "http://h", maxRetries: 0, fetch: broken.fetch }).createSandbox("sn-1");
    await expect(sb2[Symbol.asyncDispose]()).rejects.toBeInstanceOf(SandboxClientError);
  });
});
