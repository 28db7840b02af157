import { access } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient } from "@sandbar/sdk";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { waitSnapshot } from "../support/sandbar-server.js";

interface SnapshotJson {
  id: string;
  name: string;
  status: string;
  status_message: string | null;
  memory_snapshot_size_bytes: number | null;
}

/**
 * A counter in memory and in /tmp (a tmpfs inside the sandbox: memory too). Each value is
 * written aside and renamed into place, so a reader never sees the file truncated but not yet
 * rewritten (which read as 0 on a loaded CI machine).
 */
const COUNTER =
  "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &";

describe("memory snapshots: checkpoint, resume, branch", () => {
  let w: World;
  let sdk: SandboxClient;
  let source: SandboxJson;
  let snap: SnapshotJson;
  let countAtCapture = 0;
  const commandId = "ticker-before-checkpoint";

  const out = async (sb: SandboxJson, cmd: string): Promise<string> => {
    const r = await w.exec(sb, cmd);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.stdout.trim();
  };
  const capture = async (sb: SandboxJson, name: string, extra: Record<string, unknown>): Promise<SnapshotJson> => {
    const res = await w.t.call("POST", `/boxes/${sb.name}/snapshot`, { name, ...extra });
    expect(res.status, await res.clone().text()).toBe(201);
    const s = await waitSnapshot(w.t, ((await res.json()) as SnapshotJson).id, 300_000);
    expect(s.status, s.status_message ?? "").toBe("ready");
    return (await (await w.t.call("GET", `/snapshots/${s.id}`)).json()) as SnapshotJson;
  };

  beforeAll(async () => {
    w = await startWorld(["python"]);
    sdk = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    source = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "mem-source" });
    // "Install something": a package-like tree on disk and a warmed-up server in memory.
    await out(source, "mkdir -p /opt/tool && echo 'tool v1' > /opt/tool/VERSION && mkdir -p /srv && echo warmed > /srv/index.html");
    await out(source, "cd /srv && (nohup python3 -m http.server 8000 >/dev/null 2>&1 &) && sleep 1");
    await out(source, COUNTER);
    // A streaming command started before the checkpoint, to be reconnected after the restore.
    const sb = await sdk.getSandbox(source.name);
    const h = await sb.run("for i in $(seq 1 600); do echo tick $i; sleep 0.1; done", { wait: false, commandId });
    h.detach();
    await new Promise((r) => setTimeout(r, 2000));
    countAtCapture = Number(await out(source, "cat /tmp/count"));
    expect(countAtCapture).toBeGreaterThan(10);
    snap = await capture(source, "mem-snap", { include_memory: true });
  }, 600_000);
  afterAll(async () => {
    await w?.stop();
  });

  it("records the memory image's size; the source keeps running", async () => {
    expect(snap.memory_snapshot_size_bytes).toBeGreaterThan(1024 * 1024);
    const a = Number(await out(source, "cat /tmp/count"));
    await new Promise((r) => setTimeout(r, 300));
    expect(Number(await out(source, "cat /tmp/count"))).toBeGreaterThan(a);
  });

  it("(b) a restored sandbox continues the counter from the checkpoint, not from zero", async () => {
    const r = await w.createSandbox({ snapshot_id: snap.id, name: "mem-restored" });
    const first = Number(await out(r, "cat /tmp/count"));
    expect(first).toBeGreaterThanOrEqual(countAtCapture);
    await new Promise((res) => setTimeout(res, 300));
    expect(Number(await out(r, "cat /tmp/count"))).toBeGreaterThan(first);
  });

  it("(a) what was installed is there without reinstalling, and the server started before answers at once", async () => {
    const r = await w.createSandbox({ snapshot_id: snap.id, name: "mem-installed" });
    // The very first thing asked of the restored sandbox: its pre-checkpoint HTTP server.
    const page = await out(r, "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).read().decode().strip())\"");
    expect(page).toBe("warmed");
    expect(await out(r, "cat /opt/tool/VERSION")).toBe("tool v1");
  });

  it("a command session started before the checkpoint can be reconnected and streams on", async () => {
    const r = await w.createSandbox({ snapshot_id: snap.id, name: "mem-session" });
    const sb = await sdk.getSandbox(r.name);
    const h = await sb.reconnect(commandId);
    const seen: number[] = [];
    for await (const chunk of h) {
      for (const m of chunk.data.matchAll(/tick (\d+)/g)) seen.push(Number(m[1]));
      if (seen.length >= 40) break;
    }
    // It replays what the ring held and then keeps producing new lines in the restored sandbox.
    expect(seen.length).toBeGreaterThanOrEqual(40);
    expect(Math.max(...seen)).toBeGreaterThan(Math.min(...seen) + 20);
  });

  it("(c) two branches from one snapshot run side by side and diverge", async () => {
    const [a, b] = (await Promise.all([
      w.createSandbox({ snapshot_id: snap.id, name: "mem-branch-a" }),
      w.createSandbox({ snapshot_id: snap.id, name: "mem-branch-b" }),
    ])) as [SandboxJson, SandboxJson];
    await out(a, "echo approach-a > /root/choice");
    await out(b, "echo approach-b > /root/choice");
    expect(await out(a, "cat /root/choice")).toBe("approach-a");
    expect(await out(b, "cat /root/choice")).toBe("approach-b");
    // Own network identity each.
    const ip = "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.255.255.254', 9)); print(s.getsockname()[0])\"";
    expect(await out(a, ip)).not.toBe(await out(b, ip));
    // Both continued from the checkpoint; their fates are their own.
    expect(Number(await out(a, "cat /tmp/count"))).toBeGreaterThanOrEqual(countAtCapture);
    expect(Number(await out(b, "cat /tmp/count"))).toBeGreaterThanOrEqual(countAtCapture);
    expect((await w.t.call("DELETE", `/boxes/${a.name}`)).status).toBe(204);
    expect(await out(b, "cat /root/choice")).toBe("approach-b");
  });

  it("preserve_memory_on_stop: stop keeps memory, start resumes it; the counter continues", async () => {
    const sb = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "mem-pause", preserve_memory_on_stop: true });
    expect(sb.preserve_memory_on_stop).toBe(true);
    await out(sb, COUNTER);
    await new Promise((r) => setTimeout(r, 1500));
    const before = Number(await out(sb, "cat /tmp/count"));
    expect(before).toBeGreaterThan(5);
    const stopped = (await (await w.t.call("POST", `/boxes/${sb.name}/stop`)).json()) as SandboxJson;
    expect(stopped.status).toBe("stopped");
    expect(stopped.memory_preserved).toBe(true);
    await new Promise((r) => setTimeout(r, 1000));
    const started = (await (await w.t.call("POST", `/boxes/${sb.name}/start`, {})).json()) as SandboxJson;
    expect(started.status).toBe("ready");
    expect(started.memory_preserved).toBe(false);
    const after = Number(await out(sb, "cat /tmp/count"));
    // Continued, not restarted: at least where it was (stopped time does not count).
    expect(after).toBeGreaterThanOrEqual(before);
    expect(after).toBeLessThan(before + 60);
    // Without the flag (PATCHed off), a stop is a plain stop: processes and /tmp are gone.
    expect((await w.t.call("PATCH", `/boxes/${sb.name}`, { preserve_memory_on_stop: false })).status).toBe(200);
    expect(((await (await w.t.call("POST", `/boxes/${sb.name}/stop`)).json()) as SandboxJson).memory_preserved).toBe(false);
    expect((await w.t.call("POST", `/boxes/${sb.name}/start`, {})).status).toBeLessThan(300);
    expect(await out(sb, "test -e /tmp/count && echo kept || echo fresh")).toBe("fresh");
  });

  it("a warm pool of a memory snapshot holds restored sandboxes: a claim is already running the checkpointed state", async () => {
    const res = await w.t.call("POST", "/pools", { snapshot_id: snap.id, size: 1 });
    expect(res.status).toBe(201);
    const pool = (await res.json()) as { id: string };
    const deadline = Date.now() + 60_000;
    while (((await (await w.t.call("GET", `/pools/${pool.id}`)).json()) as { ready: number }).ready < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const claimed = await w.t.call("POST", "/boxes", { snapshot_id: snap.id, name: "mem-pooled" });
    expect(claimed.status).toBe(201);
    expect(claimed.headers.get("sandbar-pool")).toBe("claimed");
    const sb = (await claimed.json()) as SandboxJson;
    expect(Number(await out(sb, "cat /tmp/count"))).toBeGreaterThanOrEqual(countAtCapture);
    expect(await out(sb, "cat /opt/tool/VERSION")).toBe("tool v1");
    // Asking for the files only does not match the pool (its sandboxes are restored).
    const cold = await w.t.call("POST", "/boxes", { snapshot_id: snap.id, name: "mem-unpooled", restore_memory: false });
    expect(cold.headers.get("sandbar-pool")).toBe("miss");
    expect((await w.t.call("DELETE", `/pools/${pool.id}`)).status).toBe(204);
    for (const name of ["mem-pooled", "mem-unpooled"]) expect((await w.t.call("DELETE", `/boxes/${name}`)).status).toBe(204);
  });

  it("restore_memory: false boots from the snapshot's files only", async () => {
    const r = await w.createSandbox({ snapshot_id: snap.id, name: "mem-cold", restore_memory: false });
    expect(await out(r, "cat /opt/tool/VERSION")).toBe("tool v1");
    expect(await out(r, "test -e /tmp/count && echo kept || echo fresh")).toBe("fresh");
  });

  it("refuses bad memory requests with clear errors", async () => {
    const res = await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, restore_memory: true });
    expect(res.status).toBe(422);
    const stopped = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "mem-stopped" });
    expect((await w.t.call("POST", `/boxes/${stopped.name}/stop`)).status).toBeLessThan(300);
    const cap = await w.t.call("POST", `/boxes/${stopped.name}/snapshot`, { name: "never", include_memory: true });
    expect(cap.status).toBe(400);
    expect(((await cap.json()) as { code: string }).code).toBe("SANDBOX_NOT_READY");
    // LangSmith's "promote an existing checkpoint" has nothing to promote here.
    expect((await w.t.call("POST", `/boxes/${source.name}/snapshot`, { name: "promote", checkpoint: "ckpt-1" })).status).toBe(422);
  });

  it("a filesystem capture has no memory image", async () => {
    const fsSnap = await capture(source, "fs-only", {});
    expect(fsSnap.memory_snapshot_size_bytes).toBeNull();
  });

  it("deleting a memory snapshot is refused while sandboxes restored from it exist; then its image leaves the disk", async () => {
    const dir = join(w.t.dataDir, "memory", snap.id);
    await access(dir);
    const refused = await w.t.call("DELETE", `/snapshots/${snap.id}`);
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { code: string }).code).toBe("SNAPSHOT_IN_USE");
    const boxes = (await (await w.t.call("GET", "/boxes?limit=100")).json()) as { sandboxes: SandboxJson[] };
    for (const b of boxes.sandboxes.filter((x) => x.snapshot_id === snap.id)) expect((await w.t.call("DELETE", `/boxes/${b.name}`)).status).toBe(204);
    expect((await w.t.call("DELETE", `/snapshots/${snap.id}`)).status).toBe(204);
    await expect(access(dir)).rejects.toThrow(/ENOENT/);
  });
});
