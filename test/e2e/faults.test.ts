import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { startTestServer, waitSnapshot, type TestServer } from "../support/sandbar-server.js";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { hostResources } from "../support/host-resources.js";

const RUNSC_ROOT = "/run/runsc";

/** PIDs of a container's processes as the host sees them (the sandbox and gofer included). */
function containerPids(cid: string): number[] {
  const state = JSON.parse(execFileSync("runsc", ["--root", RUNSC_ROOT, "state", cid], { encoding: "utf8" })) as { pid: number };
  // The sandbox process (sentry) and its children: the gofer and the exec'd helpers.
  const out = execFileSync("ps", ["-eo", "pid=,ppid=,args="], { encoding: "utf8" });
  const pids = out
    .split("\n")
    .map((l) => l.trim().split(/\s+/, 3))
    .filter((p) => p.length === 3 && (p[2] ?? "").includes(cid))
    .map((p) => Number(p[0]));
  return [...new Set([state.pid, ...pids])];
}

/**
 * A TCP relay to the registry that passes at most `bytesPerSecond` and can be cut: a pull
 * through it is slow enough to be interrupted at a known point, every time.
 */
async function throttledRelay(target: { host: string; port: number }, bytesPerSecond: number): Promise<{ port: number; passed: () => number; cut: () => void; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let passed = 0;
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on("data", (chunk: Buffer) => {
      passed += chunk.length;
      upstream.pause();
      client.write(chunk);
      setTimeout(() => upstream.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    passed: () => passed,
    cut: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe("faults: a sandbox's runtime processes killed", () => {
  let w: World;
  beforeAll(async () => {
    w = await startWorld(["busybox"], { config: { monitorIntervalMs: 200 } });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  it("kill -9 of the runsc sandbox process: the sandbox is marked stopped with its files, starts again, leaks nothing", async () => {
    const sb = await w.createSandbox({ snapshot_id: w.snapshots.busybox, name: "victim" });
    const neighbour = await w.createSandbox({ snapshot_id: w.snapshots.busybox, name: "neighbour" });
    expect((await w.exec(sb, "echo kept > /root/file")).status).toBe(200);
    const cid = `${(await hostResources(w.t.dataDir)).containers.find((c) => c.endsWith(sb.id))}`;
    const pids = containerPids(cid);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone with its parent
      }
    }
    // The monitor notices and releases it; requests in the meantime fail cleanly (not 500).
    const deadline = Date.now() + 20_000;
    let status = "";
    while (Date.now() < deadline) {
      status = ((await (await w.t.call("GET", `/boxes/${sb.name}`)).json()) as SandboxJson).status;
      if (status === "stopped") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe("stopped");
    const after = (await (await w.t.call("GET", `/boxes/${sb.name}`)).json()) as SandboxJson & { status_message: string };
    expect(after.status_message).toContain("stopped unexpectedly");
    // Nothing of it is left running or mounted; the neighbour did not notice.
    const res = await hostResources(w.t.dataDir);
    expect(res.containers.filter((c) => c.endsWith(sb.id))).toEqual([]);
    expect(res.netns.filter((n) => n.endsWith(sb.id))).toEqual([]);
    expect(res.mounts.filter((m) => m.includes(sb.id))).toEqual([]);
    expect((await w.exec(neighbour, "echo alive")).body.stdout).toBe("alive\n");
    // It starts again with its files.
    expect((await w.t.call("POST", `/boxes/${sb.name}/start`, {})).status).toBe(200);
    expect((await w.exec(sb, "cat /root/file")).body.stdout).toBe("kept\n");
  }, 120_000);
});

describe("faults: the registry dies in the middle of a pull", () => {
  let registry: TestRegistry;
  let t: TestServer;
  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("python");
    await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
    t = await startTestServer();
  }, 300_000);
  afterAll(async () => {
    await t?.stop();
    await registry?.stop();
  });

  it("the snapshot fails with a clear message, leaves no partial layer or scratch file, and a retry succeeds", async () => {
    const [host, port] = registry.host.split(":");
    const relay = await throttledRelay({ host: host as string, port: Number(port) }, 4 * 1024 * 1024);
    const layersBefore = await readdir(join(t.dataDir, "layers"));
    const res = await t.call("POST", "/snapshots", { name: "py", docker_image: `127.0.0.1:${relay.port}/python:latest`, fs_capacity_bytes: 1024 ** 3 });
    expect(res.status).toBe(201);
    const id = ((await res.json()) as { id: string }).id;
    // Cut it once a few MiB of blobs went through (the image is ~57 MiB).
    const deadline = Date.now() + 60_000;
    while (relay.passed() < 3 * 1024 * 1024 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(relay.passed()).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    relay.cut();
    const snap = await waitSnapshot(t, id, 120_000);
    expect(snap.status).toBe("failed");
    expect(snap.status_message ?? "").toMatch(/pull|registry|connection|EOF|reset|refused/i);
    // Nothing half-written stays: the layer store is as before, the scratch space is empty.
    expect(await readdir(join(t.dataDir, "layers"))).toEqual(layersBefore);
    expect((await readdir(join(t.dataDir, "tmp"))).filter((f) => !f.startsWith("."))).toEqual([]);
    // The server answers, and the same image through the registry itself builds.
    expect((await t.call("DELETE", `/snapshots/${id}`)).status).toBe(204);
    const again = await t.call("POST", "/snapshots", { name: "py", docker_image: `${registry.host}/python:latest`, fs_capacity_bytes: 1024 ** 3 });
    expect(again.status).toBe(201);
    expect((await waitSnapshot(t, ((await again.json()) as { id: string }).id)).status).toBe("ready");
  }, 300_000);
});

describe("faults: the data disk fills up", () => {
  let registry: TestRegistry;
  let t: TestServer;
  let mountDir: string;
  let snapId: string;
  const MIB = 1024 * 1024;

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    mountDir = await mkdtemp(join(tmpdir(), "sandbar-fulldisk-"));
    // A small filesystem of its own for the data dir: filling it touches nothing else.
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=192m", "tmpfs", mountDir]);
    t = await startTestServer({ dataDir: join(mountDir, "data") });
    const res = await t.call("POST", "/snapshots", { name: "bb", docker_image: `${registry.host}/busybox:latest`, fs_capacity_bytes: 64 * MIB });
    snapId = (await waitSnapshot(t, ((await res.json()) as { id: string }).id)).id;
  }, 120_000);
  afterAll(async () => {
    await rm(join(mountDir, "filler"), { force: true });
    await t?.stop();
    await registry?.stop();
    if (mountDir) {
      execFileSync("umount", [mountDir]);
      await rm(mountDir, { recursive: true, force: true });
    }
  });

  it("writes fail with DISK_FULL (never 500), running sandboxes keep answering, and all works again once space is freed", async () => {
    const created = await t.call("POST", "/boxes", { snapshot_id: snapId, name: "before", fs_capacity_bytes: 64 * MIB });
    expect(created.status).toBe(201);
    const before = (await created.json()) as SandboxJson;
    const exec = async (command: string): Promise<{ stdout: string; exit_code: number }> => {
      const r = await fetch(`${before.dataplane_url}/execute`, { method: "POST", headers: { "x-api-key": t.apiKey, "content-type": "application/json" }, body: JSON.stringify({ command }) });
      expect(r.status).toBe(200);
      return (await r.json()) as { stdout: string; exit_code: number };
    };
    expect((await exec("echo precious > /root/data && sync")).exit_code).toBe(0);

    // Fill the data disk to the last block.
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${join(mountDir, "filler")}`, "bs=1M", "status=none"]);
    } catch {
      // dd stops with ENOSPC: that is the point
    }
    expect(execFileSync("df", ["--output=avail", "-B1", mountDir], { encoding: "utf8" }).split("\n")[1]?.trim()).toBe("0");

    const codes: Record<string, { status: number; code?: string }> = {};
    const attempt = async (what: string, method: string, path: string, body?: unknown): Promise<void> => {
      const r = await t.call(method, path, body);
      const text = await r.text();
      codes[what] = { status: r.status, code: text.startsWith("{") ? (JSON.parse(text) as { code?: string }).code : undefined };
    };
    await attempt("create", "POST", "/boxes", { snapshot_id: snapId, name: "during", fs_capacity_bytes: 64 * MIB });
    await attempt("capture", "POST", "/boxes/before/snapshot", { name: "cap-full" });
    await attempt("list", "GET", "/boxes");
    // Writes are refused with the documented code; reads go on.
    expect(codes.create).toEqual({ status: 507, code: "DISK_FULL" });
    expect(codes.capture).toEqual({ status: 507, code: "DISK_FULL" });
    expect(codes.list?.status).toBe(200);
    // The running sandbox still answers and reads its files.
    expect((await exec("cat /root/data")).stdout).toBe("precious\n");
    expect((await (await fetch(`${t.url}/healthz`)).json())).toEqual({ status: "ok" });

    // Space back: everything works, nothing was lost.
    await rm(join(mountDir, "filler"));
    for (const name of ["during", "cap-full"]) {
      const r = await t.call("GET", name === "during" ? "/boxes/during" : "/snapshots/cap-full");
      if (r.status === 200) await t.call("DELETE", name === "during" ? "/boxes/during" : "/snapshots/cap-full");
    }
    const after = await t.call("POST", "/boxes", { snapshot_id: snapId, name: "after", fs_capacity_bytes: 64 * MIB });
    expect(after.status, await after.clone().text()).toBe(201);
    expect((await exec("cat /root/data")).stdout).toBe("precious\n");
    const cap = await t.call("POST", "/boxes/before/snapshot", { name: "cap-after" });
    expect(cap.status).toBe(201);
    expect((await waitSnapshot(t, ((await cap.json()) as { id: string }).id)).status).toBe("ready");
    console.log(JSON.stringify({ diskFull: codes }));
  }, 180_000);
});
