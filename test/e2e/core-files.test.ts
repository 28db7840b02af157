import { createHash, randomBytes } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe("files in a sandbox", () => {
  let w: World;
  let sb: SandboxJson;
  const hostSecret = `/root/sandbar-host-secret-${randomBytes(6).toString("hex")}`;

  const upload = (box: SandboxJson, path: string, body: Uint8Array | string, multipart = false): Promise<Response> => {
    const url = `${box.dataplane_url}/upload?path=${encodeURIComponent(path)}`;
    if (multipart) {
      const form = new FormData();
      form.append("file", new Blob([typeof body === "string" ? body : new Uint8Array(body)]), "file");
      return fetch(url, { method: "POST", headers: { "x-api-key": w.t.apiKey }, body: form });
    }
    return fetch(url, { method: "POST", headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" }, body });
  };
  const download = (box: SandboxJson, path: string, headers: Record<string, string> = {}, method = "GET"): Promise<Response> =>
    fetch(`${box.dataplane_url}/download?path=${encodeURIComponent(path)}`, { method, headers: { "x-api-key": w.t.apiKey, ...headers } });

  beforeAll(async () => {
    await writeFile(hostSecret, "host-only-secret");
    w = await startWorld(["python"]);
    sb = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "files-box" });
  });
  afterAll(async () => {
    await w?.stop();
    await rm(hostSecret, { force: true });
  });

  it.each([
    ["empty", new Uint8Array(0), false],
    ["binary", Uint8Array.from({ length: 256 * 4 }, (_, i) => i % 256), false],
    ["binary multipart", Uint8Array.from({ length: 256 * 4 }, (_, i) => 255 - (i % 256)), true],
  ])("round-trips a %s file", async (_name, bytes, multipart) => {
    const path = `/data/${_name.replace(" ", "-")}.bin`;
    expect((await upload(sb, path, bytes, multipart)).status).toBe(200);
    const res = await download(sb, path);
    expect(res.status).toBe(200);
    expect(sha(new Uint8Array(await res.arrayBuffer()))).toBe(sha(bytes));
  });

  it("round-trips 50 MiB identically, multipart and raw", async () => {
    const big = randomBytes(50 * 1024 * 1024);
    expect((await upload(sb, "/data/big-multipart.bin", big, true)).status).toBe(200);
    expect((await upload(sb, "/data/big-raw.bin", big)).status).toBe(200);
    for (const p of ["/data/big-multipart.bin", "/data/big-raw.bin"]) {
      const res = await download(sb, p);
      expect(res.headers.get("content-length")).toBe(String(big.length));
      expect(sha(new Uint8Array(await res.arrayBuffer()))).toBe(sha(big));
    }
    const inside = await w.exec(sb, "sha256sum /data/big-raw.bin | cut -d' ' -f1");
    expect(inside.body.stdout.trim()).toBe(sha(big));
  });

  it("answers 404 FILE_NOT_FOUND for a missing file, on GET and HEAD", async () => {
    const res = await download(sb, "/no/such/file");
    expect(res.status).toBe(404);
    expect(((await res.json()) as { code: string }).code).toBe("FILE_NOT_FOUND");
    expect((await download(sb, "/no/such/file", {}, "HEAD")).status).toBe(404);
  });

  it("stats with HEAD and serves ranges with ETag validation", async () => {
    await upload(sb, "/data/range.txt", "0123456789");
    const head = await download(sb, "/data/range.txt", {}, "HEAD");
    expect(head.headers.get("content-length")).toBe("10");
    const etag = head.headers.get("etag") ?? "";
    expect(etag).not.toBe("");
    const part = await download(sb, "/data/range.txt", { range: "bytes=2-5" });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe("2345");
    expect((await download(sb, "/data/range.txt", { "if-none-match": etag })).status).toBe(304);
    const past = await download(sb, "/data/range.txt", { range: "bytes=50-" });
    expect(past.status).toBe(416);
    expect(((await past.json()) as { code: string }).code).toBe("RANGE_NOT_SATISFIABLE");
  });

  it("never exposes the host through planted symlinks", async () => {
    const plant = await w.exec(sb, `mkdir -p /app && ln -sf ${hostSecret} /app/abs && ln -sf ../../../../../../../..${hostSecret} /app/rel && ln -sf ${w.t.dataDir}/sandbar.db /app/db && ls -l /app`);
    expect(plant.body.exit_code).toBe(0);
    for (const p of ["/app/abs", "/app/rel", "/app/db", hostSecret]) {
      const res = await download(sb, p);
      expect(res.status).toBe(404);
      expect(await res.text()).not.toContain("host-only-secret");
    }
    const cat = await w.exec(sb, "cat /app/abs /app/rel 2>&1; true");
    expect(cat.body.stdout).not.toContain("host-only-secret");
    // Writing through the symlink replaces it inside the sandbox; the host file is untouched.
    expect((await upload(sb, "/app/abs", "overwritten")).status).toBe(200);
    expect(await readFile(hostSecret, "utf8")).toBe("host-only-secret");
    expect(await (await download(sb, "/app/abs")).text()).toBe("overwritten");
  });

  it("fails writes past fs_capacity_bytes with ENOSPC inside, and works again after cleanup", async () => {
    const small = await w.createSandbox({ snapshot_id: w.snapshots.python, fs_capacity_bytes: 64 * 1024 * 1024 });
    const fill = await w.exec(small, "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?");
    expect(fill.body.stdout).toMatch(/No space left on device/);
    expect(fill.body.stdout).not.toContain("rc=0");
    const up = await upload(small, "/more.bin", randomBytes(8 * 1024 * 1024));
    expect(up.status).toBe(507);
    expect(((await up.json()) as { code: string }).code).toBe("NO_SPACE");
    // The host's disk is not what filled up: a neighbour writes fine.
    expect((await upload(sb, "/data/neighbour.txt", "ok")).status).toBe(200);
    const clean = await w.exec(small, "rm -f /fill && echo after > /after.txt && cat /after.txt");
    expect(clean.body.stdout).toBe("after\n");
    expect((await upload(small, "/more.bin", randomBytes(1024 * 1024))).status).toBe(200);
    expect((await w.t.call("DELETE", `/boxes/${small.id}`)).status).toBe(204);
  });

  it("keeps /tmp on a tmpfs", async () => {
    const r = await w.exec(sb, "grep ' /tmp ' /proc/mounts | cut -d' ' -f3");
    expect(r.body.stdout.trim()).toBe("tmpfs");
  });
});
