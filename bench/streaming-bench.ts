/**
 * Streaming and file figures: `echo hi` round trip over WebSocket through @sandbar/sdk (against
 * the HTTP execute and raw `runsc exec`), stdout throughput of a streamed command against
 * `runsc exec cat` of the same bytes, and file upload/download throughput against writing and
 * reading the same bytes on the host, measured in one run.
 *
 *   npx tsx bench/streaming-bench.ts [--execs 200] [--mib 64] [--reps 5] [--out bench/results/streaming.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed); python snapshot.
 * - upload: `Sandbox.write(path, bytes)` of `--mib` MiB of random bytes held in memory, i.e.
 *   `POST {dataplane}/upload?path=` with an octet-stream body, through the server to the agent,
 *   which writes a temporary file on the sandbox's disk (ext4 on a loop device, through
 *   gVisor) and renames it; timed until the answer. Baseline: node's `writeFile` of the same
 *   buffer to a new file in the host's temp dir (page cache, no fsync: the upload does not
 *   sync either).
 * - download: `Sandbox.read(path)` of that file (`GET {dataplane}/download?path=`) into
 *   memory, checked byte for byte (untimed). Baseline: node's `readFile` of the host copy just
 *   written (warm cache, as the sandbox's file is).
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { Cleanup, cleanUpOnSignals, startBenchServer } from "./harness.js";
import { fmt, report, runMain, summarize, timed, type Row } from "./stats.js";

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
  const { values } = parseArgs({
    options: { execs: { type: "string", default: "200" }, mib: { type: "string", default: "64" }, reps: { type: "string", default: "5" }, out: { type: "string", default: "bench/results/streaming.json" } },
  });
  const execs = Number(values.execs);
  const mib = Number(values.mib);
  const reps = Number(values.reps);
  const cleanup = new Cleanup("streaming-bench");
  const detach = cleanUpOnSignals("streaming-bench", cleanup);
  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  try {
    const registry = await startRegistry();
    cleanup.add("registry", () => registry.stop());
    const img = await testImage("python");
    await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
    const bench = await startBenchServer(cleanup);
    const client = new SandboxClient({ endpoint: bench.server.url, apiKey: bench.apiKey });
    const snap = await client.createSnapshot("bench", `${registry.host}/python:latest`);
    const sb = await client.createSandbox({ snapshotId: snap.id, fsCapacityBytes: 2 * 1024 ** 3 });
    const cid = `sandbar-${createHash("sha256").update(bench.dataDir).digest("hex").slice(0, 8)}-${sb.id}`;

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
    // A reader that falls behind (a stall of the client on a busy machine) is not waited for: the
    // agent's ring drops what it missed (docs/agent-protocol.md, Pacing). Such an attempt says
    // nothing about throughput: it is counted and the rep run again, at most 5 attempts; a rep
    // without a complete stream is left out (and counted); no complete stream at all fails.
    const incomplete: string[] = [];
    let attempts = 0;
    for (let i = 0; i < reps; i++) {
      let ms = NaN;
      for (let attempt = 1; attempt <= 5; attempt++) {
        let got = 0;
        attempts++;
        const t = await timed(async () => {
          const h = await sb.run("cat /root/blob.txt", { wait: false, timeout: 300 });
          for await (const chunk of h) got += chunk.data.length;
        });
        if (got === size) {
          ms = t;
          break;
        }
        incomplete.push(`rep ${i + 1} attempt ${attempt}: ${got} of ${size} bytes in ${fmt(t)} ms`);
        console.error(`[streaming-bench] stream incomplete (${got} of ${size} bytes): the reader fell behind and the agent's ring dropped bytes`);
      }
      if (Number.isFinite(ms)) oursMBs.push(size / 1e6 / (ms / 1000));
      const r = await runscCat(cid, "/root/blob.txt");
      if (r.bytes !== size) throw new Error(`runsc cat gave ${r.bytes} of ${size}`);
      rawMBs.push(size / 1e6 / (r.ms / 1000));
    }
    rows.push({
      case: `stdout streaming of ${mib} MiB (base64), SDK over WebSocket`,
      unit: "MB/s",
      ours: summarize(oursMBs),
      baseline: summarize(rawMBs),
      baselineName: "`runsc exec ID cat` of the same file",
      ...(incomplete.length ? { note: `${incomplete.length} of ${attempts} streams incomplete (the reader fell behind, the ring dropped bytes), left out; ${oursMBs.length} of ${reps} reps complete` } : {}),
    });
    details.streamAttempts = attempts;
    details.incompleteStreams = incomplete;
    if (oursMBs.length === 0) throw new Error(`no complete stream in ${attempts} attempts: ${incomplete.join("; ")}`);
    await sb.run("rm -f /root/blob.txt");

    // Files: the same random bytes uploaded/downloaded through the data plane and written/read on the host.
    const scratch = await mkdtemp(join(tmpdir(), "sandbar-bench-files-"));
    cleanup.add(`scratch ${scratch}`, () => rm(scratch, { recursive: true, force: true }));
    const data = randomBytes(mib * 1024 * 1024);
    const digest = createHash("sha256").update(data).digest("hex");
    const mbs = (ms: number): number => data.length / 1e6 / (ms / 1000);
    const up: number[] = [];
    const down: number[] = [];
    const hostWrite: number[] = [];
    const hostRead: number[] = [];
    // One untimed round of each first (allocations, first write of the sandbox's disk).
    for (let i = -1; i < reps; i++) {
      const keep = <T>(list: T[], v: T): void => void (i >= 0 && list.push(v));
      const path = `/root/upload-${i}.bin`;
      keep(up, mbs(await timed(() => sb.write(path, data, 300))));
      let got: Uint8Array = new Uint8Array();
      keep(down, mbs(await timed(async () => (got = await sb.read(path, 300)))));
      if (got.length !== data.length || createHash("sha256").update(got).digest("hex") !== digest) throw new Error(`download ${i}: ${got.length} bytes, not the ${data.length} uploaded`);
      await sb.run(`rm -f ${path}`);
      const hostPath = join(scratch, `copy-${i}.bin`);
      keep(hostWrite, mbs(await timed(() => writeFile(hostPath, data))));
      let back: Buffer = Buffer.alloc(0);
      keep(hostRead, mbs(await timed(async () => (back = await readFile(hostPath)))));
      if (back.length !== data.length) throw new Error("host read came back short");
      await rm(hostPath);
    }
    rows.push({ case: `file upload of ${mib} MiB, SDK write (POST upload)`, unit: "MB/s", ours: summarize(up), baseline: summarize(hostWrite), baselineName: "node writeFile of the same bytes on the host" });
    rows.push({ case: `file download of ${mib} MiB, SDK read (GET download)`, unit: "MB/s", ours: summarize(down), baseline: summarize(hostRead), baselineName: "node readFile of the same bytes on the host" });
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows, details);
}

runMain(main);
