/**
 * Streaming figures: `echo hi` round trip over WebSocket through @sandbar/sdk (against the
 * HTTP execute and raw `runsc exec`), and stdout throughput of a streamed command against
 * `runsc exec cat` of the same bytes, measured in one run.
 *
 *   npx tsx bench/streaming-bench.ts [--execs 200] [--mib 64] [--out bench/results/streaming.json]
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { startTestServer } from "../test/support/sandbar-server.js";
import { report, runMain, summarize, timed, type Row } from "./stats.js";

const run = promisify(execFile);

/** Run `runsc exec` and count the bytes it writes, in ms. */
function runscCat(cid: string, path: string): Promise<{ ms: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let bytes = 0;
    const child = spawn("runsc", ["exec", cid, "cat", path], { stdio: ["ignore", "pipe", "ignore"] });
    child.stdout.on("data", (b: Buffer) => (bytes += b.length));
    child.on("error", reject);
    child.on("close", () => resolve({ ms: performance.now() - t0, bytes }));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { execs: { type: "string", default: "200" }, mib: { type: "string", default: "64" }, out: { type: "string", default: "bench/results/streaming.json" } } });
  const execs = Number(values.execs);
  const mib = Number(values.mib);
  const registry = await startRegistry();
  const img = await testImage("python");
  await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
  const t = await startTestServer();
  const rows: Row[] = [];
  try {
    const client = new SandboxClient({ endpoint: t.url, apiKey: t.apiKey });
    const snap = await client.createSnapshot("bench", `${registry.host}/python:latest`);
    const sb = await client.createSandbox({ snapshotId: snap.id });
    const cid = `sandbar-${createHash("sha256").update(t.dataDir).digest("hex").slice(0, 8)}-${sb.id}`;

    const ws: number[] = [];
    const http: number[] = [];
    const raw: number[] = [];
    for (let i = 0; i < execs; i++) {
      ws.push(await timed(async () => {
        const h = await sb.run("echo hi", { wait: false });
        if ((await h.result).stdout !== "hi\n") throw new Error("bad output");
      }));
      http.push(await timed(() => sb.run("echo hi")));
      if (i < 100) raw.push(await timed(() => run("runsc", ["exec", cid, "echo", "hi"])));
    }
    rows.push({ case: "`echo hi` round trip, SDK over WebSocket", unit: "ms", ours: summarize(ws), baseline: summarize(raw), baselineName: "raw `runsc exec ID echo hi`" });
    rows.push({ case: "`echo hi` round trip, SDK over HTTP execute", unit: "ms", ours: summarize(http), baseline: summarize(raw), baselineName: "raw `runsc exec ID echo hi`" });

    // Throughput: the same file streamed through the SDK and read by `runsc exec cat`.
    await sb.run(`head -c ${mib * 1024 * 1024} /dev/urandom | base64 -w 0 > /root/blob.txt`, { timeout: 300 });
    const size = Number((await sb.run("stat -c %s /root/blob.txt")).stdout.trim());
    const oursMBs: number[] = [];
    const rawMBs: number[] = [];
    for (let i = 0; i < 5; i++) {
      let got = 0;
      const ms = await timed(async () => {
        const h = await sb.run("cat /root/blob.txt", { wait: false, timeout: 300 });
        for await (const chunk of h) got += chunk.data.length;
      });
      if (got !== size) throw new Error(`streamed ${got} of ${size} bytes`);
      oursMBs.push(size / 1e6 / (ms / 1000));
      const r = await runscCat(cid, "/root/blob.txt");
      if (r.bytes !== size) throw new Error(`runsc cat gave ${r.bytes} of ${size}`);
      rawMBs.push(size / 1e6 / (r.ms / 1000));
    }
    rows.push({ case: `stdout streaming of ${mib} MiB (base64), SDK over WebSocket`, unit: "MB/s", ours: summarize(oursMBs), baseline: summarize(rawMBs), baselineName: "`runsc exec ID cat` of the same file" });
  } finally {
    await t.stop();
    await registry.stop();
  }
  await report(values.out, rows);
}

runMain(main);
