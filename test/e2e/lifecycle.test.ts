/**
 * Sandbox lifecycle: capture as a snapshot (seed 000), stop/start with files kept, waking on
 * a data-plane request, and the retention timers under scaled time, across a restart.
 */
import { rm } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient } from "@sandbar/sdk";
import * as ls from "langsmith/experimental/sandbox";
import { startWorld, type World } from "../support/fixture.js";
import { startTestServer } from "../support/sandbar-server.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("capture, stop/start and wake", () => {
  let w: World;
  let client: SandboxClient;

  beforeAll(async () => {
    w = await startWorld(["python"]);
    client = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("seed 000: a prepared sandbox captured as a snapshot boots pre-loaded, /tmp excluded", async () => {
    const lc = new ls.SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey });
    const sb = await lc.createSandbox(w.snapshots.python ?? "", { name: "setup-box" });
    await sb.run("mkdir -p /usr/local/lib/tool && echo 'print(\"tool v1\")' > /usr/local/lib/tool/tool.py && printf '#!/bin/sh\\nexec python3 /usr/local/lib/tool/tool.py\\n' > /usr/local/bin/tool && chmod +x /usr/local/bin/tool");
    await sb.write("/opt/config.yaml", "model: gpt-5\n");
    await sb.run("echo scratch > /tmp/scratch.txt && rm /usr/bin/pydoc3");
    const snap = await sb.captureSnapshot("ml-ready");
    expect(snap.status).toBe("ready");
    expect(snap.source_sandbox_id).toBe(sb.id);
    await sb.delete();

    const fresh = await lc.createSandbox({ snapshotName: "ml-ready" });
    expect((await fresh.run("tool")).stdout).toBe("tool v1\n");
    expect(new TextDecoder().decode(await fresh.read("/opt/config.yaml"))).toBe("model: gpt-5\n");
    // /tmp is a tmpfs, and a deleted file stays deleted in the capture.
    expect((await fresh.run("test -e /tmp/scratch.txt && echo kept || echo gone")).stdout).toBe("gone\n");
    expect((await fresh.run("test -e /usr/bin/pydoc3 && echo there || echo deleted")).stdout).toBe("deleted\n");
    // A capture of a capture, from a stopped sandbox.
    await fresh.write("/opt/second.txt", "2");
    await lc.stopSandbox(fresh.name);
    const second = await client.captureSnapshot(fresh.name, "ml-ready-2");
    const third = await client.createSandbox({ snapshotId: second.id });
    expect((await third.run("cat /opt/config.yaml /opt/second.txt; tool")).stdout).toBe("model: gpt-5\n2tool v1\n");
    await third.delete();
    await fresh.delete();
  });

  it("a capture that pauses a sandbox for a while is not mistaken for a dead sandbox", async () => {
    // A monitor ticking every 50 ms sees the sandbox paused during this capture.
    const fast = await startWorld(["busybox"], { config: { monitorIntervalMs: 50 } });
    try {
      const c = new SandboxClient({ endpoint: fast.t.url, apiKey: fast.t.apiKey });
      const sb = await c.createSandbox({ snapshotName: "busybox" });
      await sb.run("head -c 157286400 /dev/urandom > /root/big.bin", { timeout: 120 });
      const snap = await sb.captureSnapshot("big", { timeout: 120 });
      expect(snap.status).toBe("ready");
      expect((await c.getSandboxStatus(sb.id)).status).toBe("ready");
      expect((await sb.run("echo alive")).stdout).toBe("alive\n");
    } finally {
      await fast.stop();
    }
  });

  it("stop keeps files, start brings them back with the same dataplane_url; a data-plane request wakes a stopped sandbox", async () => {
    const sb = await client.createSandbox({ snapshotId: w.snapshots.python, name: "sleeper" });
    await sb.write("/root/state.txt", "hello");
    const url = sb.dataplaneUrl;
    await sb.stop();
    expect(sb.info.status).toBe("stopped");
    expect(sb.info.stopped_at).not.toBeNull();
    await sb.start();
    expect(sb.dataplaneUrl).toBe(url);
    expect((await sb.run("cat /root/state.txt")).stdout).toBe("hello");
    await sb.stop();
    // No explicit start: the request itself wakes it.
    expect((await sb.run("cat /root/state.txt")).stdout).toBe("hello");
    expect((await client.getSandboxStatus("sleeper")).status).toBe("ready");
    await sb.delete();
  });
});

describe("retention under scaled time", () => {
  it("stops idle sandboxes, deletes stopped ones, honours 0 and activity, and keeps going after a restart", async () => {
    const w = await startWorld(["busybox"], { config: { timeScale: 60, retentionIntervalMs: 200 } });
    let dataDir = w.t.dataDir;
    try {
      const c = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
      // 60 s idle = 1 s here; 120 s after stop = 2 s here.
      const idle = await c.createSandbox({ snapshotName: "busybox", name: "idle", idleTtlSeconds: 60, deleteAfterStopSeconds: 120 });
      const never = await c.createSandbox({ snapshotName: "busybox", name: "never", idleTtlSeconds: 0 });
      const busy = await c.createSandbox({ snapshotName: "busybox", name: "busy", idleTtlSeconds: 120, deleteAfterStopSeconds: 0 });
      /** Poll a status: a stop itself takes a second or two on a loaded machine. */
      const eventually = async (name: string, want: string): Promise<string> => {
        let st = "";
        for (let i = 0; i < 100 && st !== want; i++) {
          st = (await c.getSandboxStatus(name)).status;
          if (st !== want) await sleep(100);
        }
        return st;
      };
      const t0 = Date.now();
      while (Date.now() - t0 < 2500) {
        await busy.run("true");
        await sleep(200);
      }
      expect(await eventually("idle", "stopped")).toBe("stopped");
      expect((await c.getSandboxStatus("idle")).status_message).toContain("without activity");
      expect((await c.getSandboxStatus("never")).status).toBe("ready");
      expect((await c.getSandboxStatus("busy")).status).toBe("ready");
      await never.delete();
      // busy goes idle, stops, and (delete_after_stop 0) stays stopped.
      expect(await eventually("busy", "stopped")).toBe("stopped");
      // A restart in between: timers come from the store, not from memory.
      dataDir = w.t.dataDir;
      await w.t.server.close();
      const t2 = await startTestServer({ dataDir, apiKey: w.t.apiKey, config: { timeScale: 60, retentionIntervalMs: 200 } });
      try {
        const c2 = new SandboxClient({ endpoint: t2.url, apiKey: t2.apiKey });
        await sleep(2500);
        await expect(c2.getSandbox(idle.id)).rejects.toMatchObject({ code: "SANDBOX_NOT_FOUND" });
        expect((await c2.getSandboxStatus("busy")).status).toBe("stopped");
        await c2.deleteSandbox("busy");
      } finally {
        await t2.stop();
      }
    } finally {
      await w.registry.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
