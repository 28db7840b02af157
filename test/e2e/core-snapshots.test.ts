import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type World } from "../support/fixture.js";
import { testImage } from "../support/images.js";
import { remoteLayerDigests } from "../support/registry.js";

/** Unpacked layers present in the server's layer store. */
async function storedLayers(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, "layers"))).filter((n) => n.endsWith(".json")).map((n) => `sha256:${n.slice(0, -5)}`).sort();
}

describe("snapshots from images in a registry", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld(["busybox", "python", "python-extra"]);
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("records the registry's digest and the image, and lists with filters", async () => {
    const s = (await (await w.t.call("GET", `/snapshots/${w.snapshots.python}`)).json()) as Record<string, unknown>;
    expect(s).toMatchObject({ name: "python", status: "ready", docker_image: `${w.registry.host}/python:latest`, source_sandbox_id: null });
    expect(s.image_digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(Number(s.fs_used_bytes)).toBeGreaterThan(10 * 1024 * 1024);
    const byName = (await (await w.t.call("GET", "/snapshots/python")).json()) as { id: string };
    expect(byName.id).toBe(w.snapshots.python);
    const list = (await (await w.t.call("GET", "/snapshots?name_contains=PYTHON")).json()) as { snapshots: { name: string }[] };
    expect(list.snapshots.map((x) => x.name).sort()).toEqual(["python", "python-extra"]);
  });

  it("stores a base layer shared by two snapshots once", async () => {
    const python = await testImage("python");
    const extra = await testImage("python-extra");
    expect(extra.layerDigests[0]).toBe(python.layerDigests[0]);
    expect(await remoteLayerDigests(w.registry.host, "python-extra:latest")).toEqual(extra.layerDigests);
    // busybox 1 + python 1 + python-extra's own 1: the shared base is not stored twice.
    expect((await storedLayers(w.t.dataDir)).length).toBe(3);
  });

  it("boots sandboxes that see every layer of their image", async () => {
    const sb = await w.createSandbox({ snapshot_name: "python-extra" });
    const r = await w.exec(sb, "cat /opt/extra/hello.txt; hello; python3 -c 'print(2 + 2)'");
    expect(r.body.stdout).toBe("extra\nhello from extra\n4\n");
    const bb = await w.createSandbox({ snapshot_name: "busybox" });
    const r2 = await w.exec(bb, "echo $0; ls /bin/busybox");
    expect(r2.body).toMatchObject({ stdout: "/bin/sh\n/bin/busybox\n", exit_code: 0 });
    expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204);
    expect((await w.t.call("DELETE", `/boxes/${bb.name}`)).status).toBe(204);
  });

  it("refuses to delete a snapshot in use, then frees its unshared layers", async () => {
    const sb = await w.createSandbox({ snapshot_id: w.snapshots["python-extra"] });
    const refused = await w.t.call("DELETE", `/snapshots/${w.snapshots["python-extra"]}`);
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { code: string }).code).toBe("SNAPSHOT_IN_USE");
    expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204);
    const before = await storedLayers(w.t.dataDir);
    expect((await w.t.call("DELETE", `/snapshots/${w.snapshots["python-extra"]}`)).status).toBe(204);
    const after = await storedLayers(w.t.dataDir);
    const extra = await testImage("python-extra");
    // The extra layer left the disk; the base layer stays for the python snapshot.
    expect(before.length - after.length).toBe(1);
    expect((await w.t.call("GET", `/snapshots/${w.snapshots["python-extra"]}`)).status).toBe(404);
    expect(extra.layerDigests.length).toBe(2);
  });
});
