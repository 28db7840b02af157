/**
 * kill -9 of the server in the middle of create, capture, stop, start and delete, then a
 * restart: every sandbox and snapshot ends in a settled, documented state, and once they are
 * deleted nothing of theirs is left on the host.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { controlPlane, freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";
import { hostResources, hostVeths, stillPresent } from "../support/host-resources.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("kill -9 at each lifecycle step", () => {
  let registry: TestRegistry;
  let server: ServerProcess;
  let dataDir: string;
  let port: number;
  let snapshotId = "";
  const apiKey = `sb_${randomBytes(12).toString("hex")}`;
  const plane = controlPlane(() => port, apiKey);
  const call = plane.call;
  const json = async <T>(method: string, path: string, body?: unknown): Promise<T> => (await (await call(method, path, body)).json()) as T;
  /** Fire a request, kill the server `afterMs` later, restart it. */
  const crashDuring = async (method: string, path: string, body: unknown, afterMs: number): Promise<void> => {
    const pending = call(method, path, body).catch(() => undefined);
    await sleep(afterMs);
    await server.kill("SIGKILL");
    await pending;
    server = await startServerProcess(dataDir, apiKey, port);
  };
  const status = async (name: string): Promise<string> => (await json<{ status?: string }>("GET", `/boxes/${name}`)).status ?? "gone";

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-crash-"));
    port = await freePort();
    server = await startServerProcess(dataDir, apiKey, port);
    snapshotId = (await json<{ id: string }>("POST", "/snapshots", { name: "bb", docker_image: `${registry.host}/busybox:latest` })).id;
  });
  afterAll(async () => {
    await server?.kill("SIGTERM");
    await registry?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("settles every step and leaks nothing", async () => {
    const veths: { ifindex: number; name: string }[] = [];
    // create: killed while booting -> failed (or ready if it won the race), never provisioning.
    await crashDuring("POST", "/boxes", { snapshot_id: snapshotId, name: "c-create" }, 120);
    expect(["failed", "ready", "gone"]).toContain(await status("c-create"));

    // A ready sandbox with a file for the next steps.
    const ready = await json<{ dataplane_url: string }>("POST", "/boxes", { snapshot_id: snapshotId, name: "c-steps" });
    veths.push(...(await hostVeths(dataDir)));
    await fetch(`${ready.dataplane_url}/upload?path=/root/keep.txt`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/octet-stream" }, body: "kept" });

    // capture: killed mid-capture -> the snapshot is failed or ready; the sandbox runs (not left paused).
    await crashDuring("POST", "/boxes/c-steps/snapshot", { name: "c-cap" }, 30);
    const cap = await json<{ status?: string }>("GET", "/snapshots/c-cap");
    expect(["failed", "ready"]).toContain(cap.status);
    expect(await status("c-steps")).toBe("ready");
    const alive = await fetch(`${ready.dataplane_url}/execute`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/json" }, body: JSON.stringify({ command: "cat /root/keep.txt" }) });
    expect(((await alive.json()) as { stdout: string }).stdout).toBe("kept");

    // stop: killed while stopping -> stopped (files kept).
    await crashDuring("POST", "/boxes/c-steps/stop", {}, 30);
    expect(await status("c-steps")).toBe("stopped");

    // start: killed while booting -> stopped again (files kept), and a later start works.
    await crashDuring("POST", "/boxes/c-steps/start", {}, 100);
    expect(["stopped", "ready"]).toContain(await status("c-steps"));
    expect((await call("POST", "/boxes/c-steps/start", {})).status).toBe(200);
    const back = await fetch(`${ready.dataplane_url}/execute`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/json" }, body: JSON.stringify({ command: "cat /root/keep.txt" }) });
    expect(((await back.json()) as { stdout: string }).stdout).toBe("kept");
    veths.push(...(await hostVeths(dataDir)));

    // delete: killed mid-delete -> the restart finishes it.
    await crashDuring("DELETE", "/boxes/c-steps", undefined, 30);
    expect(await status("c-steps")).toBe("gone");

    // Clean up the rest through the API; then nothing of this server is left on the host.
    for (const b of (await json<{ sandboxes: { id: string }[] }>("GET", "/boxes")).sandboxes) expect((await call("DELETE", `/boxes/${b.id}`)).status).toBe(204);
    for (const s of (await json<{ snapshots: { id: string }[] }>("GET", "/snapshots")).snapshots) expect((await call("DELETE", `/snapshots/${s.id}`)).status).toBe(204);
    expect(await hostResources(dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    expect(stillPresent(veths)).toEqual([]);
  });
});
