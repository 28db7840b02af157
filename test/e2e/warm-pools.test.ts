import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { controlPlane, freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";
import { hostResources } from "../support/host-resources.js";

interface PoolJson {
  id: string;
  snapshot_id: string;
  size: number;
  ready: number;
  booting: number;
  source: string;
  mem_bytes: number;
}
interface BoxJson {
  id: string;
  name: string;
  status: string;
  dataplane_url: string;
  labels: Record<string, string>;
  network_policy: { egress: string };
  created_at: string;
}

const MIB = 1024 * 1024;
/** A second pool, from the server's configuration, of a size no API pool has. */
const CONFIG_POOL = JSON.stringify([{ snapshot: "bb", size: 1, mem_bytes: 256 * MIB }]);

/**
 * Warm pools against a server process (so it can be killed -9 and restarted on its data dir):
 * claims, refills, resizing, invisibility of pooled sandboxes, config pools, restarts that
 * neither leak nor hand out a sandbox twice, and the drain when the snapshot goes.
 */
describe("warm pools", () => {
  let registry: TestRegistry;
  let dataDir: string;
  let server: ServerProcess | undefined;
  let port: number;
  let snapId = "";
  let pool: PoolJson;
  const claimedIds = new Set<string>();
  const apiKey = `sb_${randomBytes(12).toString("hex")}`;
  const plane = controlPlane(() => port, apiKey);
  const call = plane.call;
  const json = async <T>(r: Response | Promise<Response>): Promise<T> => (await (await r).json()) as T;
  const exec = (sb: BoxJson, command: string): Promise<{ stdout: string; exit_code: number }> => plane.exec(sb.dataplane_url, command);
  const getPool = (id: string): Promise<PoolJson> => json<PoolJson>(call("GET", `/pools/${id}`));
  /** Poll until the pool holds `ready` sandboxes and boots none. */
  const settled = async (id: string, ready: number, timeoutMs = 90_000): Promise<PoolJson> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = await getPool(id);
      if (p.ready === ready && p.booting === 0) return p;
      if (Date.now() > deadline) throw new Error(`pool ${id} did not settle at ${ready}: ${JSON.stringify(p)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const containers = async (): Promise<number> => (await hostResources(dataDir)).containers.length;
  /** Containers of this server once deletions in flight (runsc delete takes a second) are done. */
  const containersSettleAt = async (n: number, timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while ((await containers()) !== n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await containers()).toBe(n);
  };
  /** The pool SANDBAR_POOLS configures: it appears once its snapshot exists (checked every 5 s). */
  const configPool = async (): Promise<PoolJson> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const found = (await json<{ pools: PoolJson[] }>(call("GET", "/pools"))).pools.filter((p) => p.source === "config");
      if (found.length > 0 || Date.now() > deadline) {
        expect(found.length).toBe(1);
        return found[0] as PoolJson;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const userBoxes = async (): Promise<BoxJson[]> => (await json<{ sandboxes: BoxJson[] }>(call("GET", "/boxes?limit=500"))).sandboxes;
  const claim = async (body: Record<string, unknown>): Promise<{ box: BoxJson; pool: string | null }> => {
    const r = await call("POST", "/boxes", { snapshot_id: snapId, ...body });
    expect(r.status, await r.clone().text()).toBe(201);
    return { box: (await r.json()) as BoxJson, pool: r.headers.get("sandbar-pool") };
  };
  const start = async (): Promise<void> => {
    server = await startServerProcess(dataDir, apiKey, port, { SANDBAR_POOLS: CONFIG_POOL });
  };

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-pools-"));
    port = await freePort();
    await start();
    const snap = await json<{ id: string; status: string }>(call("POST", "/snapshots", { name: "bb", docker_image: `${registry.host}/busybox:latest` }));
    expect(snap.status).toBe("ready");
    snapId = snap.id;
  }, 120_000);
  afterAll(async () => {
    if (server) {
      for (const b of await userBoxes()) await call("DELETE", `/boxes/${b.id}`);
      for (const p of (await json<{ pools: PoolJson[] }>(call("GET", "/pools"))).pools) await call("DELETE", `/pools/${p.id}`);
      await call("DELETE", `/snapshots/${snapId}`);
      await server.kill("SIGTERM");
    }
    await registry?.stop();
    expect(await hostResources(dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it("refuses bad pool requests with clear errors", async () => {
    const bad = async (method: string, path: string, body: unknown, status: number, code: string): Promise<void> => {
      const r = await call(method, path, body);
      const text = await r.text();
      expect(r.status, text).toBe(status);
      expect(text).toContain(code);
    };
    await bad("POST", "/pools", { snapshot_id: "nope", size: 1 }, 404, "SNAPSHOT_NOT_FOUND");
    await bad("POST", "/pools", { snapshot_id: snapId, size: -1 }, 422, "VALIDATION_ERROR");
    await bad("POST", "/pools", { snapshot_id: snapId, size: 1000 }, 422, "VALIDATION_ERROR");
    await bad("POST", "/pools", { snapshot_id: snapId, snapshot_name: "bb", size: 1 }, 422, "VALIDATION_ERROR");
    await bad("POST", "/pools", { snapshot_id: snapId, size: 1, colour: "red" }, 422, "VALIDATION_ERROR");
    await bad("GET", "/pools/nope", undefined, 404, "POOL_NOT_FOUND");
    await bad("PATCH", "/pools/nope", { size: 1 }, 404, "POOL_NOT_FOUND");
    await bad("DELETE", "/pools/nope", undefined, 404, "POOL_NOT_FOUND");
  });

  it("fills a pool whose sandboxes no listing or lookup shows, and a second pool of the same size conflicts", async () => {
    const r = await call("POST", "/pools", { snapshot_name: "bb", size: 3 });
    expect(r.status).toBe(201);
    pool = (await r.json()) as PoolJson;
    expect(pool).toMatchObject({ snapshot_id: snapId, size: 3, source: "api" });
    const dup = await call("POST", "/pools", { snapshot_id: snapId, size: 1 });
    expect(dup.status).toBe(409);
    expect(await dup.text()).toContain("POOL_EXISTS");
    await settled(pool.id, 3);
    // The configured pool (256 MiB) fills too: 3 + 1 containers, none of them the user's.
    const cfg = await configPool();
    expect(cfg).toMatchObject({ snapshot_id: snapId, size: 1, mem_bytes: 256 * MIB });
    await settled(cfg.id, 1);
    expect(await userBoxes()).toEqual([]);
    await containersSettleAt(4);
  });

  it("a pool of N hands out N distinct ready sandboxes at once, each set up as asked, then refills", async () => {
    const before = await containers();
    const claims = await Promise.all([
      claim({ name: "pooled-a", labels: { team: "a" } }),
      claim({ name: "pooled-b", network_policy: { egress: "deny_all" } }),
      claim({ name: "pooled-c", idle_ttl_seconds: 0 }),
    ]);
    expect(claims.map((c) => c.pool)).toEqual(["claimed", "claimed", "claimed"]);
    const ids = claims.map((c) => c.box.id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) claimedIds.add(id);
    const [a, b] = claims.map((c) => c.box);
    expect(a).toMatchObject({ name: "pooled-a", status: "ready", labels: { team: "a" } });
    expect(b?.network_policy.egress).toBe("deny_all");
    // Claimed sandboxes run commands and carry their own name in /etc/hostname and /etc/hosts.
    expect((await exec(a as BoxJson, "cat /etc/hostname; grep -c pooled-a /etc/hosts")).stdout).toBe("pooled-a\n1\n");
    // The pool boots replacements: N more containers, then N ready again.
    await settled(pool.id, 3);
    await containersSettleAt(before + 3);
    expect((await userBoxes()).map((x) => x.name).sort()).toEqual(["pooled-a", "pooled-b", "pooled-c"]);
    // A size the pool does not have boots a new sandbox.
    const other = await claim({ name: "unpooled", mem_bytes: 128 * MIB });
    expect(other.pool).toBe("miss");
    // The configured pool serves its size.
    const cfg = await claim({ name: "from-config", mem_bytes: 256 * MIB });
    expect(cfg.pool).toBe("claimed");
    claimedIds.add(cfg.box.id);
    // A taken name claims nothing: the pool keeps its sandboxes.
    const taken = await call("POST", "/boxes", { snapshot_id: snapId, name: "pooled-a" });
    expect(taken.status).toBe(409);
    expect((await getPool(pool.id)).ready).toBe(3);
  });

  it("a kill -9 of the server neither leaks pooled sandboxes nor hands one out twice", async () => {
    // Kill it while the pool refills after claims: some pooled sandboxes are half booted.
    await Promise.all([claim({ name: "pre-crash-1" }), claim({ name: "pre-crash-2" })]).then((cs) => cs.forEach((c) => claimedIds.add(c.box.id)));
    await server?.kill("SIGKILL");
    server = undefined;
    await start();
    const users = await userBoxes();
    await settled(pool.id, 3);
    await settled((await configPool()).id, 1);
    // Exactly the users' sandboxes plus the two pools' 3 + 1.
    await containersSettleAt(users.length + 4);
    // Every user sandbox is still there and still the user's.
    for (const id of claimedIds) expect(users.some((u) => u.id === id), id).toBe(true);
    // New claims get sandboxes nobody had.
    const again = await Promise.all([claim({ name: "post-crash-1" }), claim({ name: "post-crash-2" }), claim({ name: "post-crash-3" })]);
    expect(again.map((c) => c.pool)).toEqual(["claimed", "claimed", "claimed"]);
    for (const c of again) {
      expect(claimedIds.has(c.box.id)).toBe(false);
      claimedIds.add(c.box.id);
      expect((await exec(c.box, "echo ok")).stdout).toBe("ok\n");
    }
    await settled(pool.id, 3);
    await containersSettleAt((await userBoxes()).length + 4);
  }, 240_000);

  it("resizes: shrinking deletes the surplus, growing boots the missing", async () => {
    const total = await containers();
    const small = await json<PoolJson>(call("PATCH", `/pools/${pool.id}`, { size: 1 }));
    expect(small.size).toBe(1);
    await settled(pool.id, 1);
    await containersSettleAt(total - 2);
    await json<PoolJson>(call("PATCH", `/pools/${pool.id}`, { size: 2 }));
    await settled(pool.id, 2);
    await containersSettleAt(total - 1);
  });

  it("deleting the snapshot drains its pools; it is refused while claimed sandboxes use it", async () => {
    const inUse = await call("DELETE", `/snapshots/${snapId}`);
    expect(inUse.status).toBe(409);
    // A refused delete leaves the pools alone.
    expect((await getPool(pool.id)).ready).toBe(2);
    for (const b of await userBoxes()) expect((await call("DELETE", `/boxes/${b.id}`)).status).toBe(204);
    await containersSettleAt(3); // 2 + the configured 1
    expect((await call("DELETE", `/snapshots/${snapId}`)).status).toBe(204);
    expect((await call("GET", `/pools/${pool.id}`)).status).toBe(404);
    expect((await json<{ pools: PoolJson[] }>(call("GET", "/pools"))).pools).toEqual([]);
    expect(await hostResources(dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
  });
});
