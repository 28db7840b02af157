import { describe, expect, it } from "vitest";
import { NameTakenError, type Store } from "./store.js";
import type { SandboxRecord, SnapshotRecord } from "./records.js";

const now = "2026-01-01T00:00:00.000Z";

function snapshot(id: string, ws: string, name: string, layers: string[] = []): SnapshotRecord {
  return {
    id,
    workspace_id: ws,
    name,
    status: "ready",
    status_message: null,
    docker_image: "img",
    image_digest: null,
    source_sandbox_id: null,
    fs_capacity_bytes: 1,
    fs_used_bytes: null,
    registry_id: null,
    parent_snapshot_id: null,
    layers,
    image_config: { env: ["A=1"], workingDir: "/", user: "", entrypoint: [], cmd: [] },
    memory_snapshot_size_bytes: null,
    agent_token: null,
    created_at: now,
    updated_at: now,
  };
}

function sandbox(id: string, ws: string, name: string, snap: string): SandboxRecord {
  return {
    id,
    workspace_id: ws,
    name,
    status: "ready",
    status_message: null,
    snapshot_id: snap,
    idle_ttl_seconds: 600,
    delete_after_stop_seconds: 0,
    stopped_at: null,
    vcpus: 1,
    mem_bytes: 1,
    fs_capacity_bytes: 1,
    labels: { a: "b" },
    network_policy: { egress: "allow_list", allow_cidrs: ["10.9.0.0/16"], allow_domains: ["example.com"] },
    preserve_memory_on_stop: true,
    memory_preserved: false,
    runtime: "runsc",
    net_index: 3,
    agent_token: "t",
    pool_id: null,
    created_at: now,
    updated_at: now,
    last_active_at: now,
  };
}

/** The behaviour every Store implementation must have; run against each one. */
export function storeContract(name: string, make: () => Promise<Store>): void {
  describe(`store contract: ${name}`, () => {
    const setup = async (): Promise<Store> => {
      const s = await make();
      await s.createWorkspace({ id: "w1", name: "one", created_at: now });
      await s.createWorkspace({ id: "w2", name: "two", created_at: now });
      return s;
    };

    it("keeps workspaces apart and names unique per workspace", async () => {
      const s = await setup();
      await s.insertSnapshot(snapshot("s1", "w1", "py", ["sha256:a", "sha256:b"]));
      await s.insertSnapshot(snapshot("s2", "w2", "py", ["sha256:a"]));
      await expect(s.insertSnapshot(snapshot("s3", "w1", "py"))).rejects.toBeInstanceOf(NameTakenError);
      expect((await s.getSnapshot("w1", "py"))?.id).toBe("s1");
      expect((await s.getSnapshot("w2", "s1"))).toBeUndefined();
      expect((await s.getSnapshot("w1", "s1"))?.layers).toEqual(["sha256:a", "sha256:b"]);
      expect(await s.layerReferenceCounts()).toEqual(new Map([["sha256:a", 2], ["sha256:b", 1]]));
      s.close();
    });

    it("stores sandboxes with JSON fields, renames with conflicts, counts users of a snapshot", async () => {
      const s = await setup();
      await s.insertSnapshot(snapshot("s1", "w1", "py"));
      await s.insertSandbox(sandbox("b1", "w1", "box", "s1"));
      await s.insertSandbox(sandbox("b2", "w1", "other", "s1"));
      expect((await s.getSandbox("w1", "box"))?.labels).toEqual({ a: "b" });
      expect((await s.getSandbox("w1", "box"))?.preserve_memory_on_stop).toBe(true);
      await s.updateSandbox((await s.getSandbox("w1", "box"))?.id ?? "", { memory_preserved: true });
      expect((await s.getSandbox("w1", "box"))?.memory_preserved).toBe(true);
      expect((await s.getSandbox("w1", "box"))?.network_policy).toEqual({ egress: "allow_list", allow_cidrs: ["10.9.0.0/16"], allow_domains: ["example.com"] });
      expect((await s.getSandbox("w1", "b2"))?.name).toBe("other");
      await expect(s.updateSandbox("b2", { name: "box" })).rejects.toBeInstanceOf(NameTakenError);
      await s.updateSandbox("b2", { status: "stopped", stopped_at: now });
      expect((await s.getSandboxById("b2"))?.status).toBe("stopped");
      expect(await s.countSandboxesUsingSnapshot("s1")).toBe(2);
      await s.deleteSandbox("b1");
      expect(await s.countSandboxesUsingSnapshot("s1")).toBe(1);
      s.close();
    });

    it("filters and pages lists; name_contains is a plain, case-insensitive substring", async () => {
      const s = await setup();
      for (const [i, n] of ["Alpha", "alpine", "beta", "a_b", "a%b"].entries()) {
        await s.insertSnapshot({ ...snapshot(`s${i}`, "w1", n), created_at: `2026-01-0${i + 1}T00:00:00.000Z` });
      }
      const names = async (q: string | undefined, limit = 50, offset = 0): Promise<string[]> =>
        (await s.listSnapshots("w1", { nameContains: q, limit, offset })).map((x) => x.name);
      expect((await names("ALP")).sort()).toEqual(["Alpha", "alpine"]);
      expect(await names("_")).toEqual(["a_b"]);
      expect(await names("%")).toEqual(["a%b"]);
      expect(await names(undefined, 2, 0)).toEqual(["a%b", "a_b"]);
      expect(await names(undefined, 2, 2)).toEqual(["beta", "alpine"]);
      expect(await names(undefined, 2, 4)).toEqual(["Alpha"]);
      expect(await s.listSnapshots("w2", { limit: 50, offset: 0 })).toEqual([]);
      s.close();
    });

    it("finds API keys by hash and revokes once", async () => {
      const s = await setup();
      await s.createApiKey({ id: "k1", workspace_id: "w1", name: "n", key_hash: "h", prefix: "sb_", created_at: now, revoked_at: null });
      expect((await s.findApiKeyByHash("h"))?.workspace_id).toBe("w1");
      expect(await s.revokeApiKey("k1", now)).toBe(true);
      expect(await s.revokeApiKey("k1", now)).toBe(false);
      expect((await s.findApiKeyByHash("h"))?.revoked_at).toBe(now);
      s.close();
    });

    it("stores registries per workspace with unique names", async () => {
      const s = await setup();
      const reg = { id: "r1", workspace_id: "w1", name: "priv", url: "https://r.example", host: "r.example", username: "u", password_enc: "v1.a.b.c", created_at: now, updated_at: now };
      await s.insertRegistry(reg);
      await s.insertRegistry({ ...reg, id: "r2", workspace_id: "w2" });
      await expect(s.insertRegistry({ ...reg, id: "r3" })).rejects.toBeInstanceOf(NameTakenError);
      expect(await s.getRegistry("w1", "priv")).toEqual(reg);
      expect((await s.getRegistry("w1", "r1"))?.id).toBe("r1");
      expect(await s.getRegistry("w1", "r2")).toBeUndefined();
      await s.insertRegistry({ ...reg, id: "r4", name: "other" });
      await expect(s.updateRegistry("r4", { name: "priv" })).rejects.toBeInstanceOf(NameTakenError);
      await s.updateRegistry("r4", { password_enc: null, username: null });
      expect((await s.getRegistry("w1", "other"))?.password_enc).toBeNull();
      expect((await s.listRegistries("w1", { limit: 50, offset: 0, nameContains: "oth" })).map((r) => r.id)).toEqual(["r4"]);
      await s.deleteRegistry("r1");
      expect(await s.getRegistry("w1", "priv")).toBeUndefined();
      s.close();
    });

    it("keeps pooled sandboxes out of sight and hands each to exactly one claim", async () => {
      const s = await setup();
      await s.insertSnapshot(snapshot("s1", "w1", "py"));
      const pool = { id: "p1", workspace_id: "w1", snapshot_id: "s1", size: 2, vcpus: 1, mem_bytes: 1, fs_capacity_bytes: 1, source: "api" as const, created_at: now, updated_at: now };
      await s.insertPool(pool);
      await expect(s.insertPool({ ...pool, id: "p2" })).rejects.toBeInstanceOf(NameTakenError);
      await s.insertPool({ ...pool, id: "p3", vcpus: 2 });
      expect((await s.listPools("w1")).map((p) => p.id)).toEqual(["p1", "p3"]);
      expect(await s.listPools("w2")).toEqual([]);
      expect(await s.getPool("w2", "p1")).toBeUndefined();
      await s.updatePool("p1", { size: 5 });
      expect((await s.getPool("w1", "p1"))?.size).toBe(5);

      await s.insertSandbox({ ...sandbox("b1", "w1", ".pool-1", "s1"), pool_id: "p1", created_at: "2026-01-01T00:00:01.000Z" });
      await s.insertSandbox({ ...sandbox("b2", "w1", ".pool-2", "s1"), pool_id: "p1", created_at: "2026-01-01T00:00:02.000Z" });
      await s.insertSandbox({ ...sandbox("b3", "w1", ".pool-3", "s1"), pool_id: "p1", status: "provisioning" });
      await s.insertSandbox(sandbox("b4", "w1", "taken", "s1"));
      expect(await s.getSandbox("w1", "b1")).toBeUndefined();
      expect(await s.getSandbox("w1", ".pool-1")).toBeUndefined();
      expect((await s.listSandboxes("w1", { limit: 50, offset: 0, sortBy: "name", sortDirection: "asc" })).map((x) => x.id)).toEqual(["b4"]);
      expect(await s.countSandboxesUsingSnapshot("s1")).toBe(1);
      expect((await s.listAllSandboxes()).length).toBe(4);

      // A taken name claims nothing.
      await expect(s.claimPooledSandbox("p1", { name: "taken" })).rejects.toBeInstanceOf(NameTakenError);
      expect((await s.getSandboxById("b1"))?.pool_id).toBe("p1");
      const first = await s.claimPooledSandbox("p1", { name: "mine", labels: { x: "y" } });
      expect(first).toMatchObject({ id: "b1", name: "mine", pool_id: null, labels: { x: "y" } });
      expect((await s.getSandbox("w1", "mine"))?.id).toBe("b1");
      expect((await s.claimPooledSandbox("p1", { name: "second" }))?.id).toBe("b2");
      // The booting one is not ready: nothing left to claim.
      expect(await s.claimPooledSandbox("p1", { name: "third" })).toBeUndefined();
      expect(await s.countSandboxesUsingSnapshot("s1")).toBe(3);
      // Retiring takes pooled sandboxes only: a claimed one is the user's.
      expect(await s.retirePooledSandbox("b1", now)).toBe(false);
      expect(await s.retirePooledSandbox("b3", now)).toBe(true);
      expect((await s.getSandboxById("b3"))?.status).toBe("deleting");
      // A boot finishing late does not revive a retired sandbox.
      expect(await s.updateSandboxIf("b3", "provisioning", { status: "ready" })).toBe(false);
      expect((await s.getSandboxById("b3"))?.status).toBe("deleting");
      await s.deletePool("p1");
      expect(await s.getPool("w1", "p1")).toBeUndefined();
      s.close();
    });
  });
}
