import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QuotaExceededError, SandboxClient } from "@sandbar/sdk";
import { SqliteStore } from "@sandbar/server";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

const MIB = 1024 * 1024;

interface QuotaJson {
  limits: { sandboxes: number | null; vcpus: number | null; mem_bytes: number | null; storage_bytes: number | null };
  usage: { sandboxes: number; vcpus: number; mem_bytes: number; storage_bytes: number };
}

/**
 * Workspace quotas: server-wide defaults, per-workspace overrides, 429 QUOTA_EXCEEDED on create
 * and start, concurrency, and warm-pool sandboxes that count only once claimed.
 */
describe("workspace quotas", () => {
  let w: World;
  let snap: string;
  /** A second workspace, with its own key and an override of the memory quota. */
  let other: { key: string; call: (method: string, path: string, body?: unknown) => Promise<Response> };

  const create = (body: Record<string, unknown>, call = w.t.call): Promise<Response> => call("POST", "/boxes", { snapshot_id: snap, ...body });
  const refused = async (res: Response, quota: string): Promise<void> => {
    const text = await res.text();
    expect(res.status, text).toBe(429);
    const body = JSON.parse(text) as { code: string; message: string; detail: { error: string } };
    expect(body.code).toBe("QUOTA_EXCEEDED");
    expect(body.detail.error).toBe("QuotaExceeded");
    expect(body.message).toContain(`${quota} quota`);
  };
  const quota = async (call = w.t.call): Promise<QuotaJson> => (await (await call("GET", "/quotas")).json()) as QuotaJson;
  const ok = async (res: Response): Promise<SandboxJson> => {
    const text = await res.text();
    expect(res.status, text).toBe(201);
    return JSON.parse(text) as SandboxJson;
  };

  beforeAll(async () => {
    w = await startWorld(["busybox"], { config: { quotas: { sandboxes: 2, vcpus: 3, mem_bytes: 1024 * MIB, storage_bytes: null } } });
    snap = w.snapshots.busybox as string;
    const { key } = await w.t.server.keys.createKey("quota-other", "test");
    // The override lives in the store; the running server reads it at each create.
    const store = new SqliteStore(join(w.t.dataDir, "sandbar.db"));
    const ws = await store.getWorkspaceByName("quota-other");
    await store.setWorkspaceQuotas(ws?.id ?? "", { sandboxes: null, mem_bytes: 768 * MIB });
    store.close();
    other = {
      key,
      call: (method, path, body) =>
        fetch(`${w.t.api}${path}`, { method, headers: { "x-api-key": key, ...(body === undefined ? {} : { "content-type": "application/json" }) }, body: body === undefined ? undefined : JSON.stringify(body) }),
    };
    // The other workspace needs its own snapshot of the image.
    const res = await other.call("POST", "/snapshots", { name: "bb", docker_image: `${w.registry.host}/busybox:latest` });
    expect(res.status).toBe(201);
  }, 300_000);
  afterAll(async () => {
    if (other) {
      const boxes = (await (await other.call("GET", "/boxes")).json()) as { sandboxes: { id: string }[] };
      for (const b of boxes.sandboxes) await other.call("DELETE", `/boxes/${b.id}`);
      await other.call("DELETE", "/snapshots/bb");
    }
    for (const p of ((await (await w.t.call("GET", "/pools")).json()) as { pools: { id: string }[] }).pools) await w.t.call("DELETE", `/pools/${p.id}`);
    await w?.stop();
  }, 120_000);

  it("reports limits and usage, and refuses the sandbox past the count limit", async () => {
    expect(await quota()).toEqual({ limits: { sandboxes: 2, vcpus: 3, mem_bytes: 1024 * MIB, storage_bytes: null }, usage: { sandboxes: 0, vcpus: 0, mem_bytes: 0, storage_bytes: 0 } });
    await ok(await create({ name: "q-a", mem_bytes: 512 * MIB }));
    const b = await ok(await create({ name: "q-b", mem_bytes: 256 * MIB, vcpus: 2 }));
    expect((await quota()).usage).toEqual({ sandboxes: 2, vcpus: 3, mem_bytes: 768 * MIB, storage_bytes: 2 * 1024 * MIB });
    await refused(await create({ name: "q-c" }), "sandboxes");
    // A stopped sandbox still counts (its disk stays) but frees its vcpus and memory.
    expect((await w.t.call("POST", `/boxes/${b.name}/stop`)).status).toBe(200);
    expect((await quota()).usage).toMatchObject({ sandboxes: 2, vcpus: 1, mem_bytes: 512 * MIB });
    await refused(await create({ name: "q-c" }), "sandboxes");
    expect((await w.t.call("DELETE", `/boxes/${b.name}`)).status).toBe(204);
    // Memory: 512 in use + 768 > 1024.
    await refused(await create({ name: "q-c", mem_bytes: 768 * MIB }), "mem_bytes");
    // vcpus: 1 in use + 3 > 3.
    await refused(await create({ name: "q-c", vcpus: 3 }), "vcpus");
    await ok(await create({ name: "q-c", mem_bytes: 512 * MIB }));
    // The SDK raises its class for it.
    const sdk = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    await expect(sdk.createSandbox(snap)).rejects.toBeInstanceOf(QuotaExceededError);
    expect((await sdk.getQuota()).usage.sandboxes).toBe(2);
  });

  it("concurrent creates never pass the limit together", async () => {
    expect((await w.t.call("DELETE", "/boxes/q-c")).status).toBe(204);
    const results = await Promise.all([1, 2, 3, 4].map((i) => create({ name: `q-race-${i}`, mem_bytes: 256 * MIB })));
    expect(results.map((r) => r.status).sort()).toEqual([201, 429, 429, 429]);
    expect((await quota()).usage.sandboxes).toBe(2);
    for (const r of results) if (r.status === 201) expect((await w.t.call("DELETE", `/boxes/${((await r.json()) as SandboxJson).id}`)).status).toBe(204);
  });

  it("a per-workspace override applies to that workspace only; start is refused past the memory limit", async () => {
    expect((await quota(other.call)).limits).toEqual({ sandboxes: null, vcpus: 3, mem_bytes: 768 * MIB, storage_bytes: null });
    const x = await ok(await create({ name: "x", snapshot_id: undefined, snapshot_name: "bb", mem_bytes: 512 * MIB }, other.call));
    expect((await other.call("POST", `/boxes/${x.name}/stop`)).status).toBe(200);
    await ok(await create({ name: "y", snapshot_id: undefined, snapshot_name: "bb", mem_bytes: 512 * MIB }, other.call));
    // Starting x would take 512 more: 1024 > 768.
    await refused(await other.call("POST", `/boxes/${x.name}/start`, {}), "mem_bytes");
    expect(((await (await other.call("GET", `/boxes/${x.name}`)).json()) as SandboxJson).status).toBe("stopped");
    expect((await other.call("DELETE", "/boxes/y")).status).toBe(204);
    expect((await other.call("POST", `/boxes/${x.name}/start`, {})).status).toBe(200);
  });

  it("sandboxes waiting in a warm pool count against no quota until claimed", async () => {
    // q-a holds 1 of 2 sandboxes; a pool of 3 fills anyway.
    const res = await w.t.call("POST", "/pools", { snapshot_id: snap, size: 3 });
    expect(res.status).toBe(201);
    const pool = (await res.json()) as { id: string };
    const deadline = Date.now() + 60_000;
    while (((await (await w.t.call("GET", `/pools/${pool.id}`)).json()) as { ready: number }).ready < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((await quota()).usage).toMatchObject({ sandboxes: 1, vcpus: 1, mem_bytes: 512 * MIB });
    // One claim fits and counts; the next is refused although the pool has sandboxes ready.
    const claimed = await create({ name: "from-pool" });
    expect(claimed.headers.get("sandbar-pool")).toBe("claimed");
    await ok(claimed);
    expect((await quota()).usage.sandboxes).toBe(2);
    await refused(await create({ name: "from-pool-2" }), "sandboxes");
  });
});
