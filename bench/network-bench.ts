/**
 * Network figures: TCP tunnel throughput (through @sandbar/sdk's tunnel: WebSocket, yamux,
 * the server, the agent's dial) and service-URL requests/s (wrk through the server's proxy),
 * each against a direct TCP connection from the host to the sandbox's own address, measured
 * in one run.
 *
 *   npx tsx bench/network-bench.ts [--mib 256] [--reps 5] [--wrk-seconds 5] [--wrk-runs 3] [--out bench/results/network.json]
 */
import { execFile } from "node:child_process";
import { connect } from "node:net";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { SERVICE_APP, SERVICE_APP_PATH, startServiceApp } from "../test/support/service-app.js";
import { Cleanup, cleanUpOnSignals, startBenchServer } from "./harness.js";
import { report, runMain, summarize, type Row } from "./stats.js";

const run = promisify(execFile);

/** A TCP source/sink: "d" + u64 N -> N bytes back; "u" -> reads to EOF, answers the count. */
const SOURCE_SINK = String.raw`
import socket, struct, threading
block = memoryview(bytes(range(256)) * 4096)
def serve(c):
    with c:
        mode = c.recv(1)
        if mode == b"d":
            n = struct.unpack(">Q", c.recv(8, socket.MSG_WAITALL))[0]
            while n > 0:
                k = c.send(block[: min(n, len(block))])
                n -= k
        elif mode == b"u":
            total = 0
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                total += len(b)
            c.sendall(struct.pack(">Q", total))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/** Download `bytes` from the source at host:port; MB/s. */
function download(host: string, port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const s = connect(port, host, () => {
      const head = Buffer.alloc(9);
      head.write("d");
      head.writeBigUInt64BE(BigInt(bytes), 1);
      s.write(head);
    });
    s.on("data", (b: Buffer) => {
      got += b.length;
      if (got >= bytes) {
        s.destroy();
        resolve(bytes / 1e6 / ((performance.now() - t0) / 1000));
      }
    });
    s.on("error", reject);
    s.on("close", () => {
      if (got < bytes) reject(new Error(`download ended at ${got} of ${bytes} bytes`));
    });
  });
}

/** Upload `bytes` to the sink; MB/s once the sink confirmed the count. */
function upload(host: string, port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(1 << 20, 7);
    const t0 = performance.now();
    const s = connect(port, host);
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          s.once("drain", pump);
          return;
        }
      }
      s.end();
    };
    s.on("connect", () => {
      s.write("u");
      pump();
    });
    const reply: Buffer[] = [];
    s.on("data", (b: Buffer) => reply.push(b));
    s.on("end", () => {
      const count = Buffer.concat(reply).readBigUInt64BE(0);
      if (Number(count) !== bytes) reject(new Error(`sink counted ${count} of ${bytes}`));
      else resolve(bytes / 1e6 / ((performance.now() - t0) / 1000));
    });
    s.on("error", reject);
  });
}

/** wrk's Requests/sec for `url`. */
async function wrk(url: string, seconds: number, headers: string[] = []): Promise<number> {
  const { stdout } = await run("wrk", ["-t2", "-c16", `-d${seconds}s`, ...headers.flatMap((h) => ["-H", h]), url], { maxBuffer: 1 << 20 });
  const m = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  if (!m) throw new Error(`wrk printed no rate:\n${stdout}`);
  if (/Non-2xx/.test(stdout)) throw new Error(`wrk saw errors:\n${stdout}`);
  return Number(m[1]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mib: { type: "string", default: "256" }, reps: { type: "string", default: "5" }, "wrk-seconds": { type: "string", default: "5" }, "wrk-runs": { type: "string", default: "3" }, out: { type: "string", default: "bench/results/network.json" } } });
  const bytes = Number(values.mib) * 1024 * 1024;
  const reps = Number(values.reps);
  const wrkSeconds = Number(values["wrk-seconds"]);
  const wrkRuns = Number(values["wrk-runs"]);
  const cleanup = new Cleanup("network-bench");
  const detach = cleanUpOnSignals("network-bench", cleanup);
  const rows: Row[] = [];
  try {
    const registry = await startRegistry();
    cleanup.add("registry", () => registry.stop());
    const img = await testImage("python");
    await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
    // The server runs as its own process, as deployed: the client's work (framing, WebSocket
    // masking) must not share one event loop with the server's.
    const bench = await startBenchServer(cleanup);
    const t = { url: bench.server.url, apiKey: bench.apiKey };
    const client = new SandboxClient({ endpoint: t.url, apiKey: t.apiKey });
    const snap = await client.createSnapshot("bench", `${registry.host}/python:latest`);
    const sb = await client.createSandbox({ snapshotId: snap.id });
    await sb.write("/srv/source.py", SOURCE_SINK);
    await sb.write(SERVICE_APP_PATH, SERVICE_APP);
    await sb.run("nohup python3 /srv/source.py >/tmp/source.log 2>&1 &");
    const started = await sb.run(startServiceApp(8000));
    if (started.exit_code !== 0) throw new Error(`service app: ${started.stdout}${started.stderr}`);
    const ip = (await sb.run(`python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.255.255.254', 9)); print(s.getsockname()[0])"`)).stdout.trim();
    const tunnel = await sb.tunnel(9000);
    try {
      const tDown: number[] = [];
      const dDown: number[] = [];
      const tUp: number[] = [];
      const dUp: number[] = [];
      // Interleaved so drift hits both sides alike; one warm-up each.
      await download("127.0.0.1", tunnel.localPort, 8 << 20);
      await download(ip, 9000, 8 << 20);
      for (let i = 0; i < reps; i++) {
        tDown.push(await download("127.0.0.1", tunnel.localPort, bytes));
        dDown.push(await download(ip, 9000, bytes));
        tUp.push(await upload("127.0.0.1", tunnel.localPort, bytes));
        dUp.push(await upload(ip, 9000, bytes));
      }
      rows.push({ case: `tunnel download ${values.mib} MiB`, unit: "MB/s", ours: summarize(tDown), baseline: summarize(dDown), baselineName: "direct TCP to the sandbox address" });
      rows.push({ case: `tunnel upload ${values.mib} MiB`, unit: "MB/s", ours: summarize(tUp), baseline: summarize(dUp), baselineName: "direct TCP to the sandbox address" });
    } finally {
      await tunnel.close();
    }

    const svc = await sb.service(8000);
    const viaProxy: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < wrkRuns; i++) {
      viaProxy.push(await wrk(`${svc.serviceUrl}/`, wrkSeconds, [`X-Langsmith-Sandbox-Service-Token: ${svc.token}`]));
      direct.push(await wrk(`http://${ip}:8000/`, wrkSeconds));
    }
    rows.push({ case: "service URL GET / (wrk -c16)", unit: "req/s", ours: summarize(viaProxy), baseline: summarize(direct), baselineName: "wrk direct to the sandbox address" });
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out as string, rows);
}

runMain(main);
