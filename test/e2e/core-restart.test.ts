import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { controlPlane, freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";
import { hostResources } from "../support/host-resources.js";

describe("sandboxes do not depend on the server process", () => {
  let registry: TestRegistry;
  let dataDir: string;
  let server: ServerProcess | undefined;
  let port: number;
  const apiKey = `sb_${randomBytes(12).toString("hex")}`;
  const plane = controlPlane(() => port, apiKey);
  const call = plane.call;
  const exec = plane.exec;

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-restart-"));
    port = await freePort();
    server = await startServerProcess(dataDir, apiKey, port);
  });
  afterAll(async () => {
    if (server) {
      const boxes = (await (await call("GET", "/boxes")).json()) as { sandboxes: { id: string }[] };
      for (const b of boxes.sandboxes) await call("DELETE", `/boxes/${b.id}`);
      const snaps = (await (await call("GET", "/snapshots")).json()) as { snapshots: { id: string }[] };
      for (const s of snaps.snapshots) await call("DELETE", `/snapshots/${s.id}`);
      await server.kill("SIGTERM");
    }
    await registry?.stop();
    expect(await hostResources(dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    await rm(dataDir, { recursive: true, force: true });
  });

  it("a sandbox keeps running through kill -9 of the server and is adopted by the next start", async () => {
    const snap = (await (await call("POST", "/snapshots", { name: "bb", docker_image: `${registry.host}/busybox:latest` })).json()) as { id: string; status: string };
    expect(snap.status).toBe("ready");
    const created = await call("POST", "/boxes", { snapshot_id: snap.id, name: "survivor" });
    expect(created.status).toBe(201);
    const sb = (await created.json()) as { id: string; dataplane_url: string };
    await exec(sb.dataplane_url, "echo before > /root/state; (nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done' >/dev/null 2>&1 &)");

    await server?.kill("SIGKILL");
    server = undefined;
    // The sandbox is still running with nobody watching it.
    const during = await hostResources(dataDir);
    expect(during.containers).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 600));

    server = await startServerProcess(dataDir, apiKey, port);
    const status = (await (await call("GET", "/boxes/survivor/status")).json()) as { status: string };
    expect(status.status).toBe("ready");
    const r = await exec(sb.dataplane_url, "cat /root/state; c1=$(cat /root/counter); sleep 0.5; c2=$(cat /root/counter); [ $c2 -gt $c1 ] && echo counting");
    expect(r.stdout).toBe("before\ncounting\n");
  });

  it("a graceful restart adopts too, and the dataplane_url stays the same", async () => {
    const before = (await (await call("GET", "/boxes/survivor")).json()) as { dataplane_url: string };
    await server?.kill("SIGTERM");
    server = await startServerProcess(dataDir, apiKey, port);
    const after = (await (await call("GET", "/boxes/survivor")).json()) as { dataplane_url: string; status: string };
    expect(after).toMatchObject({ status: "ready", dataplane_url: before.dataplane_url });
    expect((await exec(after.dataplane_url, "cat /root/state")).stdout).toBe("before\n");
  });
});
