import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes, createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testImage } from "../support/images.js";
import { pushImage, startRegistry, type TestRegistry } from "../support/registry.js";
import { freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";

const MIB = 1024 * 1024;
const SIZE = 1024 * MIB;

/** Peak resident memory of a process (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb) * 1024;
}

/** A deterministic 1 GiB body produced chunk by chunk, never held whole. */
function body(seed: Buffer): { stream: ReadableStream<Uint8Array>; digest: () => string } {
  const hash = createHash("sha256");
  let sent = 0;
  let counter = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      if (sent >= SIZE) {
        ctrl.close();
        return;
      }
      const chunk = Buffer.alloc(MIB);
      for (let off = 0; off < MIB; off += seed.length) seed.copy(chunk, off);
      chunk.writeUInt32BE(counter++, 0);
      hash.update(chunk);
      sent += chunk.length;
      ctrl.enqueue(chunk);
    },
  });
  return { stream, digest: () => hash.digest("hex") };
}

describe("1 GiB through the server, never whole in its memory", () => {
  let registry: TestRegistry;
  let server: ServerProcess;
  let dataDir: string;
  const apiKey = `sb_${randomBytes(12).toString("hex")}`;
  let dp = "";

  beforeAll(async () => {
    registry = await startRegistry();
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-bodies-"));
    server = await startServerProcess(dataDir, apiKey, await freePort());
    const call = (path: string, b: unknown): Promise<Response> =>
      fetch(`${server.url}/v2/sandboxes${path}`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/json" }, body: JSON.stringify(b) });
    const snap = (await (await call("/snapshots", { name: "bb", docker_image: `${registry.host}/busybox:latest` })).json()) as { id: string };
    const sb = (await (await call("/boxes", { snapshot_id: snap.id, fs_capacity_bytes: 2048 * MIB })).json()) as { dataplane_url: string };
    dp = sb.dataplane_url;
  });
  afterAll(async () => {
    const h = { "x-api-key": apiKey };
    const boxes = (await (await fetch(`${server.url}/v2/sandboxes/boxes`, { headers: h })).json()) as { sandboxes: { id: string }[] };
    for (const b of boxes.sandboxes) await fetch(`${server.url}/v2/sandboxes/boxes/${b.id}`, { method: "DELETE", headers: h });
    const snaps = (await (await fetch(`${server.url}/v2/sandboxes/snapshots`, { headers: h })).json()) as { snapshots: { id: string }[] };
    for (const s of snaps.snapshots) await fetch(`${server.url}/v2/sandboxes/snapshots/${s.id}`, { method: "DELETE", headers: h });
    await server?.kill("SIGTERM");
    await registry?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("uploads and downloads 1 GiB with the server's peak RSS growing far less than the file", async () => {
    const pid = server.child.pid ?? 0;
    const base = await peakRss(pid);
    const b = body(randomBytes(4096));
    const up = await fetch(`${dp}/upload?path=/big.bin`, {
      method: "POST",
      headers: { "x-api-key": apiKey, "content-type": "application/octet-stream" },
      body: b.stream,
      duplex: "half",
    } as RequestInit);
    expect(up.status).toBe(200);
    const expected = b.digest();
    const down = await fetch(`${dp}/download?path=/big.bin`, { headers: { "x-api-key": apiKey } });
    expect(down.headers.get("content-length")).toBe(String(SIZE));
    const hash = createHash("sha256");
    let got = 0;
    for await (const chunk of down.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      got += chunk.length;
    }
    expect(got).toBe(SIZE);
    expect(hash.digest("hex")).toBe(expected);
    const growth = (await peakRss(pid)) - base;
    expect(growth).toBeLessThan(200 * MIB);
  });
});
