/**
 * Streaming through faults: the server killed with -9 mid-command, and a client that reads
 * far slower than the command writes.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient, type Sandbox } from "@sandbar/sdk";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MIB = 1024 * 1024;

async function rss(pid: number): Promise<number> {
  const kb = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) * 1024;
}

describe("streaming through faults", () => {
  let registry: TestRegistry;
  let server: ServerProcess;
  let dataDir: string;
  let port: number;
  let client: SandboxClient;
  let sb: Sandbox;
  const apiKey = `sb_${randomBytes(12).toString("hex")}`;

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("python");
    await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-faults-"));
    port = await freePort();
    server = await startServerProcess(dataDir, apiKey, port);
    client = new SandboxClient({ endpoint: server.url, apiKey });
    const snap = await client.createSnapshot("py", `${registry.host}/python:latest`);
    sb = await client.createSandbox({ snapshotId: snap.id, name: "faults" });
  });
  afterAll(async () => {
    for (const s of await client.listSandboxes()) await s.delete();
    for (const s of await client.listSnapshots()) await client.deleteSnapshot(s.id);
    await server?.kill("SIGTERM");
    await registry?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("kill -9 of the server mid-command: after the restart the rest of the output and the exit code arrive", async () => {
    const handle = await sb.run("for i in $(seq 1 30); do echo tick-$i; sleep 0.1; done; exit 7", { wait: false, timeout: 60 });
    let before = "";
    for await (const chunk of handle) {
      before += chunk.data;
      if (before.includes("tick-5\n")) break;
    }
    const offset = handle.lastStdoutOffset;
    handle.detach();
    await server.kill("SIGKILL");
    await sleep(500);
    server = await startServerProcess(dataDir, apiKey, port);
    const again = await sb.reconnect(handle.commandId, { stdoutOffset: offset });
    let after = "";
    for await (const chunk of again) after += chunk.data;
    const result = await again.result;
    expect(before + after).toBe(Array.from({ length: 30 }, (_, i) => `tick-${i + 1}\n`).join(""));
    expect(result.exit_code).toBe(7);
  });

  it("the SDK reattaches by itself when the server restarts under it", async () => {
    const handle = await sb.run("for i in $(seq 1 40); do echo beat-$i; sleep 0.1; done", { wait: false, timeout: 60 });
    let out = "";
    let restarted = false;
    for await (const chunk of handle) {
      out += chunk.data;
      if (!restarted && out.includes("beat-3\n")) {
        restarted = true;
        await server.kill("SIGKILL");
        server = await startServerProcess(dataDir, apiKey, port);
      }
    }
    expect(out).toBe(Array.from({ length: 40 }, (_, i) => `beat-${i + 1}\n`).join(""));
  });

  it("a slow reader of 1 MiB/s for 60 s: server and agent memory stay bounded, offsets jump where data aged out", async () => {
    // 1 MiB per second for 60 s, each line numbered so gaps are visible.
    const cmd = `python3 -c "
import sys, time
line = b'x' * 1000
for s in range(60):
    t = time.time()
    for i in range(1024):
        sys.stdout.buffer.write(b'%06d:' % (s * 1024 + i) + line + b'\\\\n')
    sys.stdout.flush()
    time.sleep(max(0, 1 - (time.time() - t)))
"`;
    const serverPid = server.child.pid ?? 0;
    const serverBase = await rss(serverPid);
    const handle = await sb.run(cmd, { wait: false, timeout: 120 });
    const started = Date.now();
    let expectedOffset = 0;
    let jumps = 0;
    let received = 0;
    let serverPeak = 0;
    let agentPeakKb = 0;
    let lastSample = 0;
    for await (const chunk of handle) {
      if (chunk.offset !== expectedOffset) {
        expect(chunk.offset).toBeGreaterThan(expectedOffset);
        jumps++;
      }
      const len = new TextEncoder().encode(chunk.data).length;
      expectedOffset = chunk.offset + len;
      received += len;
      // Read slowly, with pauses: one chunk every 150 ms against 1 MiB/s written, while the
      // command writes; what is left in the ring afterwards is read at full speed (how long the
      // pauses would take to drain it depends only on how small the chunks came out).
      if (Date.now() - started < 62_000) await sleep(150);
      if (Date.now() - lastSample > 2000) {
        lastSample = Date.now();
        serverPeak = Math.max(serverPeak, await rss(serverPid));
        const agent = await sb.run("cat /proc/1/status");
        agentPeakKb = Math.max(agentPeakKb, Number(/VmRSS:\s+(\d+) kB/.exec(agent.stdout)?.[1] ?? 0));
      }
    }
    const r = await handle.result;
    // Figures for the closing note.
    console.log(
      JSON.stringify({
        slowReader: { receivedMiB: received / MIB, jumps, serverGrowthMiB: (serverPeak - serverBase) / MIB, agentPeakMiB: agentPeakKb / 1024 },
      }),
    );
    expect(r.exit_code).toBe(0);
    expect(jumps).toBeGreaterThan(0);
    expect(received).toBeLessThan(60 * MIB);
    expect(serverPeak - serverBase).toBeLessThan(100 * MIB);
    // The agent (PID 1, its RSS as the sandbox reports it) holds a 4 MiB ring per stream, not the 60 MiB written.
    expect(agentPeakKb).toBeGreaterThan(0);
    expect(agentPeakKb * 1024).toBeLessThan(48 * MIB);
  }, 240_000);
});
