/**
 * One scenario list, run through the official LangSmith client and through @sandbar/sdk
 * against the same real server: when one client's behaviour drifts, a scenario fails for it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { thrown } from "../support/thrown.js";
import { startWorld, type World } from "../support/fixture.js";
import { langsmithAdapter, sandbarAdapter, type ClientAdapter } from "../support/client-adapters.js";

const GIB = 1024 ** 3;


interface Ctx {
  w: World;
  c: ClientAdapter;
  /** Unique per client, so both clients' scenarios can share one server. */
  tag: string;
}

const scenarios: [string, (ctx: Ctx) => Promise<void>][] = [
  [
    "create a snapshot, boot by id and by name, run, files, delete",
    async ({ w, c, tag }) => {
      const snap = await c.createSnapshot(`py-${tag}`, `${w.registry.host}/python:latest`, GIB);
      expect(snap.status).toBe("ready");
      expect((await c.getSnapshot(snap.id)).name).toBe(`py-${tag}`);
      const byId = await c.createSandbox({ snapshotId: snap.id, name: `byid-${tag}` });
      const byName = await c.createSandbox({ snapshotName: `py-${tag}` });
      const r = await byId.run("python3 -c 'print(2 + 2)'");
      expect(r).toMatchObject({ stdout: "4\n", stderr: "", exit_code: 0 });
      expect((await byName.run("exit 1")).exit_code).toBe(1);
      const env = await byName.run("echo $MY_VAR; pwd", { env: { MY_VAR: "test-value" }, cwd: "/tmp" });
      expect(env.stdout).toBe("test-value\n/tmp\n");
      await byId.write("/app/script.py", "print('Hello from file!')");
      expect((await byId.run("python3 /app/script.py")).stdout).toBe("Hello from file!\n");
      expect(new TextDecoder().decode(await byId.read("/app/script.py"))).toBe("print('Hello from file!')");
      await byId.write("/app/data.bin", new Uint8Array([0, 1, 2, 3]));
      expect([...(await byId.read("/app/data.bin"))]).toEqual([0, 1, 2, 3]);
      expect((await c.listSandboxes()).map((s) => s.name)).toEqual(expect.arrayContaining([`byid-${tag}`, byName.name]));
      await byId.delete();
      await c.deleteSandbox(byName.name);
      await c.deleteSnapshot(snap.id);
      expect(c.classify(await thrown(c.getSnapshot(snap.id)))).toMatchObject({ kind: "not_found" });
    },
  ],
  [
    "list snapshots with a filter and pages",
    async ({ w, c, tag }) => {
      const ids: string[] = [];
      for (const i of [1, 2, 3]) ids.push((await c.createSnapshot(`page-${tag}-${i}`, `${w.registry.host}/python:latest`, GIB)).id);
      const all = await c.listSnapshots({ nameContains: `PAGE-${tag}` });
      expect(all.map((s) => s.id).sort()).toEqual([...ids].sort());
      const first = await c.listSnapshots({ nameContains: `page-${tag}`, limit: 2, offset: 0 });
      const second = await c.listSnapshots({ nameContains: `page-${tag}`, limit: 2, offset: 2 });
      expect(first).toHaveLength(2);
      expect(second).toHaveLength(1);
      expect(new Set([...first, ...second].map((s) => s.id))).toEqual(new Set(ids));
      for (const id of ids) await c.deleteSnapshot(id);
    },
  ],
  [
    "errors map to the client's classes",
    async ({ w, c, tag }) => {
      expect(c.classify(await thrown(c.getSandbox(`missing-${tag}`)))).toEqual({ kind: "not_found", resourceType: "sandbox" });
      expect(c.classify(await thrown(c.createSandbox({ snapshotId: "not-a-real-snapshot" }))).kind).toBe("not_found");
      const a = await c.createSandbox({ snapshotId: w.snapshots.python, name: `a-${tag}` });
      await c.createSandbox({ snapshotId: w.snapshots.python, name: `b-${tag}` });
      // langsmith@0.12.0 has no special case for 409 on create and throws its base class.
      const dupKind = c.classify(await thrown(c.createSandbox({ snapshotId: w.snapshots.python, name: `a-${tag}` }))).kind;
      expect(dupKind).toBe(c.name.startsWith("langsmith") ? "other" : "conflict");
      expect(c.classify(await thrown(c.updateSandbox(`b-${tag}`, { newName: `a-${tag}` }))).kind).toBe("conflict");
      expect(c.classify(await thrown(a.run("sleep 30", { timeout: 1 }))).kind).toBe("command_timeout");
      expect(c.classify(await thrown(a.read("/no/such/file")))).toMatchObject({ kind: "not_found" });
      await c.deleteSandbox(`a-${tag}`);
      await c.deleteSandbox(`b-${tag}`);
    },
  ],
  [
    "update retention and rename",
    async ({ w, c, tag }) => {
      await c.createSandbox({ snapshotId: w.snapshots.python, name: `ret-${tag}`, idleTtlSeconds: 300 });
      const u = await c.updateSandbox(`ret-${tag}`, { idleTtlSeconds: 1800 });
      expect(u.idle_ttl_seconds).toBe(1800);
      const renamed = await c.updateSandbox(`ret-${tag}`, { newName: `ret2-${tag}` });
      expect(renamed.name).toBe(`ret2-${tag}`);
      expect(c.classify(await thrown(c.updateSandbox(`ret2-${tag}`, { idleTtlSeconds: 61 }))).kind).toBe("validation");
      await c.deleteSandbox(`ret2-${tag}`);
    },
  ],
];

describe("shared scenarios through both clients", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld(["python"]);
  });
  afterAll(async () => {
    await w?.stop();
  });

  const clients: [string, (w: World) => ClientAdapter][] = [
    ["langsmith", (world) => langsmithAdapter(world.t.url, world.t.apiKey)],
    ["sandbar", (world) => sandbarAdapter(world.t.url, world.t.apiKey)],
  ];
  for (const [tag, make] of clients) {
    describe(tag, () => {
      for (const [name, fn] of scenarios) {
        it(name, () => fn({ w, c: make(w), tag }));
      }
      it("a bad key is an authentication error", async () => {
        const bad = tag === "langsmith" ? langsmithAdapter(w.t.url, "wrong-key") : sandbarAdapter(w.t.url, "wrong-key");
        expect(bad.classify(await thrown(bad.listSnapshots({}))).kind).toBe("auth");
      });
    });
  }
});
