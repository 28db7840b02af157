/**
 * The CLI (run from source with tsx) against a stand-in server: the request bodies of
 * `sandbox create` with egress and memory flags, of `sandbox snapshot`, of `registry` and
 * `snapshot create --registry`, of `snapshot build` (multipart, with its followed build log),
 * and of `service-url`, and `tunnel` forwarding until SIGINT.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { YamuxSession } from "@sandbar/shared/yamux";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

interface Recorded {
  method: string;
  url: string;
  body: unknown;
}

let port = 0;
let httpServer: http.Server;
const requests: Recorded[] = [];
/** Open tunnel WebSockets on the stand-in. */
let openTunnels = 0;
/** Connect headers the stand-in read: the remote port of each. */
const connects: number[] = [];

function info(): Record<string, unknown> {
  return { id: "sb-1", name: "box", status: "ready", dataplane_url: `http://127.0.0.1:${port}/dataplane/sb-1`, network_policy: { egress: "allow_all", allow_cidrs: [], allow_domains: [] } };
}

function snapshotView(withMemory: boolean): Record<string, unknown> {
  return { id: withMemory ? "sn-mem" : "sn-files", name: "warm", status: "ready", status_message: null, source_sandbox_id: "sb-1", memory_snapshot_size_bytes: withMemory ? 52428800 : null };
}

function registryView(name: string, url: string, username: string | null, hasPassword: boolean): Record<string, unknown> {
  return { id: `rg-${name}`, name, url, auth_type: "DOCKER_CONFIG", provider: "DOCKER_REGISTRY", username, has_password: hasPassword, created_at: "2030-01-01T00:00:00.000Z", updated_at: "2030-01-01T00:00:00.000Z" };
}

const POOL = { id: "p-1", snapshot_id: "sn-files", size: 2, vcpus: 1, mem_bytes: 536870912, fs_capacity_bytes: 1073741824, ready: 2, booting: 0, source: "api" };

/** Names of the entries of an uncompressed ustar archive (no PAX). */
function tarNames(tar: Uint8Array): string[] {
  const names: string[] = [];
  for (let at = 0; at + 512 <= tar.length; ) {
    const h = tar.subarray(at, at + 512);
    if (h.every((x) => x === 0)) break;
    const field = (o: number, n: number): string => Buffer.from(h.subarray(o, o + n)).toString("utf8").replace(/\0.*$/s, "");
    const prefix = field(345, 155);
    names.push(prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    at += 512 + Math.ceil(parseInt(field(124, 12), 8) / 512) * 512;
  }
  return names;
}

/**
 * A multipart body as its text fields plus the entry names of its `context` tar. Multipart
 * encoding sends text fields with CRLF line ends; like the server, read them back as LF.
 */
async function parseMultipart(raw: Buffer, contentType: string): Promise<Record<string, unknown>> {
  const form = await new Response(raw, { headers: { "content-type": contentType } }).formData();
  const out: Record<string, unknown> = {};
  for (const [k, v] of form) out[k] = typeof v === "string" ? v.replace(/\r\n/g, "\n") : tarNames(new Uint8Array(await v.arrayBuffer()));
  return out;
}

/** Build logs of the stand-in's Dockerfile builds, by the snapshot name's part before a `-`; other names are refused with 422. */
const BUILD_LOGS: Record<string, { lines: string[]; status: "ready" | "failed"; message: string | null }> = {
  built: { lines: ["Step 1/2 : FROM python:3.12-slim", " ---> Using cache", "Step 2/2 : COPY app.py /app/", "Successfully built"], status: "ready", message: null },
  broken: { lines: ["Step 1/2 : FROM alpine", "Step 2/2 : RUN false", "ERROR: process \"/bin/sh -c false\" returned a non-zero code: 1"], status: "failed", message: "step 2/2 RUN false: exit code 1" },
};

function buildView(name: string, status: string, message: string | null): Record<string, unknown> {
  return { id: `sn-b-${name}`, name, status, status_message: message, docker_image: null, source_sandbox_id: null, memory_snapshot_size_bytes: null };
}

/** A tunnel stream that answers OK to any port and echoes what it gets. */
function echoStream(stream: Duplex): void {
  stream.on("error", () => undefined);
  const onReadable = (): void => {
    const h = stream.read(3) as Buffer | null;
    if (!h) return;
    stream.off("readable", onReadable);
    connects.push(h.readUInt16BE(1));
    stream.write(Buffer.from([0]));
    stream.pipe(stream);
  };
  stream.on("readable", onReadable);
}

beforeAll(async () => {
  const wss = new WebSocketServer({ noServer: true });
  httpServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks).toString();
      const contentType = req.headers["content-type"] ?? "";
      const body = contentType.startsWith("multipart/form-data") ? await parseMultipart(Buffer.concat(chunks), contentType) : raw ? JSON.parse(raw) : undefined;
      requests.push({ method: req.method ?? "", url: req.url ?? "", body });
      const send = (status: number, body: unknown): void => void res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "POST" && req.url === "/v2/sandboxes/snapshots/build") {
        const name = String((body as { name?: unknown }).name);
        if (!BUILD_LOGS[name.split("-")[0] as string]) return send(422, { code: "VALIDATION_ERROR", message: "dockerfile line 2: unknown instruction FORM", detail: [] });
        return send(201, buildView(name, "building", null));
      }
      const build = /^\/v2\/sandboxes\/snapshots\/sn-b-([^/?]+)(\/build-log\?follow=true)?$/.exec(req.url ?? "");
      const b = build && BUILD_LOGS[(build[1] as string).split("-")[0] as string];
      if (req.method === "GET" && build && b) {
        if (!build[2]) return send(200, buildView(build[1] as string, b.status, b.message));
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        for (const line of b.lines) {
          res.write(`${line}\n`);
          await new Promise((r) => setTimeout(r, 5));
        }
        return void res.end();
      }
      if (req.method === "POST" && req.url === "/v2/sandboxes/boxes") return send(201, info());
      if (req.method === "GET" && req.url === "/v2/sandboxes/boxes/box") return send(200, info());
      if (req.method === "POST" && req.url === "/v2/sandboxes/boxes/box/snapshot") {
        const withMemory = (JSON.parse(raw) as { include_memory?: boolean }).include_memory === true;
        return send(201, snapshotView(withMemory));
      }
      if (req.method === "GET" && req.url === "/v2/sandboxes/snapshots/sn-mem") return send(200, snapshotView(true));
      if (req.method === "GET" && req.url === "/v2/sandboxes/snapshots/sn-files") return send(200, snapshotView(false));
      if (req.method === "POST" && req.url === "/v2/sandboxes/registries") {
        const b = JSON.parse(raw) as { name: string; url: string; username?: string; password?: string };
        return send(201, registryView(b.name, b.url, b.username ?? null, b.password !== undefined));
      }
      if (req.method === "GET" && req.url?.startsWith("/v2/sandboxes/registries?")) {
        const views = [registryView("corp", "registry.corp.example:5000", "ci", true), registryView("anon", "registry.lan:5000", null, false)];
        return send(200, { items: views, registries: views, offset: 2, next_cursor: null });
      }
      if (req.method === "DELETE" && req.url === "/v2/sandboxes/registries/corp") return void res.writeHead(204).end();
      if (req.method === "POST" && req.url === "/v2/sandboxes/pools") return send(201, { ...POOL, ...(JSON.parse(raw) as object) });
      if (req.method === "GET" && req.url === "/v2/sandboxes/pools") return send(200, { pools: [POOL] });
      if (req.method === "PATCH" && req.url === "/v2/sandboxes/pools/p-1") return send(200, { ...POOL, ...(JSON.parse(raw) as object) });
      if (req.method === "DELETE" && req.url === "/v2/sandboxes/pools/p-1") return void res.writeHead(204).end();
      if (req.method === "POST" && req.url === "/v2/sandboxes/snapshots") return send(201, { ...snapshotView(false), id: "sn-reg", registry_id: "rg-1" });
      if (req.method === "GET" && req.url === "/v2/sandboxes/snapshots/sn-reg") return send(200, { ...snapshotView(false), id: "sn-reg", registry_id: "rg-1" });
      if (req.method === "POST" && req.url === "/v2/sandboxes/boxes/box/service-url") {
        return send(200, { browser_url: "http://8000--sb-1.localhost/__sandbar/auth?token=tk", service_url: `http://127.0.0.1:${port}/svc/sb-1/8000`, token: "tk", expires_at: "2030-01-01T00:00:00.000Z" });
      }
      send(404, { code: "ROUTE_NOT_FOUND", message: "no route" });
    });
  });
  httpServer.on("upgrade", (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      openTunnels++;
      const session = new YamuxSession({ client: false, send: (f) => ws.readyState === ws.OPEN && ws.send(f) });
      ws.on("message", (d: Buffer) => session.receive(d));
      ws.on("close", () => {
        openTunnels--;
        session.close();
      });
      session.on("stream", echoStream);
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  port = (httpServer.address() as AddressInfo).port;
});

afterAll(async () => {
  httpServer.closeAllConnections();
  await new Promise((r) => httpServer.close(r));
});

/** Run the CLI to completion; `input`, when given, is written to its stdin, which is then closed. */
function run(args: string[], input?: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args, "--endpoint", `http://127.0.0.1:${port}`, "--api-key", "k"], { env: { ...process.env, ...env } });
    if (input !== undefined) child.stdin.end(input);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe.concurrent("sandbox create --egress/--allow-cidr/--allow-domain", () => {
  it.each([
    [["--egress", "deny_all"], { egress: "deny_all" }],
    [["--egress", "allow_list", "--allow-cidr", "10.0.0.0/8", "--allow-cidr", "1.1.1.1,8.8.8.8", "--allow-domain", "pypi.org", "--allow-domain", "*.pythonhosted.org"], { egress: "allow_list", allow_cidrs: ["10.0.0.0/8", "1.1.1.1", "8.8.8.8"], allow_domains: ["pypi.org", "*.pythonhosted.org"] }],
    [["--allow-domain", "github.com"], { egress: "allow_list", allow_domains: ["github.com"] }],
    [[], undefined],
  ])("%j sends network_policy %j", async (flags, policy) => {
    const name = `c-${Math.random().toString(16).slice(2, 10)}`;
    const r = await run(["sandbox", "create", "--snapshot", "python", "--name", name, ...flags]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const body = requests.find((x) => x.method === "POST" && (x.body as { name?: string } | undefined)?.name === name)?.body as Record<string, unknown>;
    expect(body.network_policy).toEqual(policy);
    expect(JSON.parse(r.stdout)).toMatchObject({ network_policy: { egress: "allow_all" } });
  }, 30_000);

  it("rejects an unknown egress mode before calling the server", async () => {
    const r = await run(["sandbox", "create", "--snapshot", "python", "--name", "never-sent", "--egress", "some"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: --egress must be one of deny_all, allow_all, allow_list, not 'some'\n");
    expect(requests.filter((x) => (x.body as { name?: string } | undefined)?.name === "never-sent")).toEqual([]);
  }, 30_000);
});

describe.concurrent("memory snapshots: sandbox create --no-restore-memory/--preserve-memory, sandbox snapshot --memory", () => {
  it.each([
    [["--no-restore-memory", "--preserve-memory"], { restore_memory: false, preserve_memory_on_stop: true }],
    [["--preserve-memory"], { preserve_memory_on_stop: true }],
    [["--no-restore-memory"], { restore_memory: false }],
    [[], {}],
  ])("create %j sends %j", async (flags, expected) => {
    const name = `m-${Math.random().toString(16).slice(2, 10)}`;
    const r = await run(["sandbox", "create", "--snapshot", "warm", "--name", name, ...flags]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const body = requests.find((x) => x.method === "POST" && (x.body as { name?: string } | undefined)?.name === name)?.body as Record<string, unknown>;
    const memory = Object.fromEntries(Object.entries(body).filter(([k]) => k === "restore_memory" || k === "preserve_memory_on_stop"));
    expect(memory).toEqual(expected);
  }, 30_000);

  it.each([
    [["--memory"], { include_memory: true }, 52428800],
    [["--fs-capacity", "2147483648"], { fs_capacity_bytes: 2147483648 }, null],
  ])("snapshot box NAME %j captures with %j and prints the snapshot", async (flags, expected, size) => {
    const name = `s-${Math.random().toString(16).slice(2, 10)}`;
    const r = await run(["sandbox", "snapshot", "box", name, ...flags]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const body = requests.find((x) => x.url === "/v2/sandboxes/boxes/box/snapshot" && (x.body as { name?: string } | undefined)?.name === name)?.body;
    expect(body).toEqual({ name, ...expected });
    expect(JSON.parse(r.stdout)).toMatchObject({ name: "warm", status: "ready", memory_snapshot_size_bytes: size });
  }, 30_000);

  it("snapshot without a snapshot name fails before calling the server", async () => {
    const r = await run(["sandbox", "snapshot", "box", "--memory"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: missing snapshot name: sandbar sandbox snapshot SANDBOX SNAPSHOT_NAME [--memory]\n");
  }, 30_000);
});

describe("workspace ls|quota (on the data dir)", () => {
  it("sets, shows and resets a workspace's quota overrides", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sandbar-cli-ws-"));
    try {
      expect((await run(["key", "create", "--workspace", "team", "--data-dir", dir])).code).toBe(0);
      const set = await run(["workspace", "quota", "team", "--sandboxes", "5", "--mem-bytes", "none", "--data-dir", dir]);
      expect(set.stderr).toBe("");
      expect(JSON.parse(set.stdout)).toEqual({ workspace: "team", quotas: { sandboxes: 5, mem_bytes: null } });
      expect((await run(["workspace", "ls", "--data-dir", dir])).stdout).toContain('{"sandboxes":5,"mem_bytes":null}');
      expect(JSON.parse((await run(["workspace", "quota", "team", "--reset", "--data-dir", dir])).stdout).quotas).toBe("server defaults");
      const bad = await run(["workspace", "quota", "team", "--vcpus", "-1", "--data-dir", dir]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toBe("error: --vcpus must be a number > 0 or 'none' (got -1)\n");
      expect((await run(["workspace", "quota", "nobody", "--vcpus", "2", "--data-dir", dir])).stderr).toBe("error: no workspace named 'nobody' (sandbar workspace ls)\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe.concurrent("pool create|ls|resize|rm", () => {
  it("sends the snapshot, size and sizes; lists, resizes and deletes by id", async () => {
    const created = await run(["pool", "create", "warm", "3", "--mem-bytes", "1073741824", "--vcpus", "2"]);
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    expect(requests.find((x) => x.method === "POST" && x.url === "/v2/sandboxes/pools")?.body).toEqual({ snapshot_name: "warm", size: 3, vcpus: 2, mem_bytes: 1073741824 });
    const ls = await run(["pool", "ls"]);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/p-1\s+sn-files\s+2\s+2\s+0/);
    const resized = await run(["pool", "resize", "p-1", "5"]);
    expect(JSON.parse(resized.stdout)).toMatchObject({ id: "p-1", size: 5 });
    expect((await run(["pool", "rm", "p-1"])).code).toBe(0);
    expect(requests.some((x) => x.method === "DELETE" && x.url === "/v2/sandboxes/pools/p-1")).toBe(true);
  }, 120_000);

  it("refuses a size that is not a number before calling the server", async () => {
    const r = await run(["pool", "create", "warm", "lots"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: SIZE must be a number >= 0 (got lots)\n");
  }, 30_000);
});

describe.concurrent("registry create|ls|rm, snapshot create --registry", () => {
  const posted = (name: string): unknown => requests.find((x) => x.method === "POST" && x.url === "/v2/sandboxes/registries" && (x.body as { name?: string } | undefined)?.name === name)?.body;

  it("create --username U --password-stdin reads the password from stdin (one trailing newline dropped)", async () => {
    const r = await run(["registry", "create", "corp", "registry.corp.example:5000", "--username", "ci", "--password-stdin"], "s3cret pass\n");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(posted("corp")).toEqual({ name: "corp", url: "registry.corp.example:5000", username: "ci", password: "s3cret pass" });
    expect(JSON.parse(r.stdout)).toMatchObject({ name: "corp", username: "ci", has_password: true });
    expect(r.stdout).not.toContain("s3cret");
  }, 30_000);

  it("create without credentials sends name and url only", async () => {
    const r = await run(["registry", "create", "anon", "https://registry.lan:5000"]);
    expect(r.code).toBe(0);
    expect(posted("anon")).toEqual({ name: "anon", url: "https://registry.lan:5000" });
  }, 30_000);

  it.each([
    [["registry", "create", "p1", "h.example", "--password", "secret"], undefined, "error: --password is not accepted (the command line shows in ps and shell history); pipe it in with --password-stdin\n"],
    [["registry", "create", "p2", "h.example", "--password=secret"], undefined, "error: --password is not accepted (the command line shows in ps and shell history); pipe it in with --password-stdin\n"],
    [["registry", "create", "p3", "h.example", "--username", "u"], undefined, "error: --username and --password-stdin go together\n"],
    [["registry", "create", "p4", "h.example", "--password-stdin"], "pw\n", "error: --username and --password-stdin go together\n"],
    [["registry", "create", "p5", "h.example", "--username", "u", "--password-stdin"], "\n", "error: --password-stdin: stdin held no password\n"],
    [["registry", "create", "p6"], undefined, "error: missing registry URL: sandbar registry create NAME URL [--username U --password-stdin]\n"],
  ])("%j fails before calling the server", async (argv, input, message) => {
    const r = await run(argv, input);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(message);
    expect(posted(argv[2] as string)).toBeUndefined();
  }, 30_000);

  it("ls lists with the filters; rm deletes by name", async () => {
    const ls = await run(["registry", "ls", "--name-contains", "co", "--limit", "5"]);
    expect(ls.code).toBe(0);
    expect(requests.some((x) => x.method === "GET" && x.url === "/v2/sandboxes/registries?name_contains=co&limit=5")).toBe(true);
    const lines = ls.stdout.trimEnd().split("\n");
    expect(lines[0]?.split(/\s+/)).toEqual(["ID", "NAME", "URL", "USERNAME", "HAS_PASSWORD", "CREATED_AT"]);
    expect(lines[1]?.split(/\s+/)).toEqual(["rg-corp", "corp", "registry.corp.example:5000", "ci", "true", "2030-01-01T00:00:00.000Z"]);
    expect(lines).toHaveLength(3);
    const rm = await run(["registry", "rm", "corp"]);
    expect([rm.code, rm.stderr]).toEqual([0, ""]);
    expect(requests.some((x) => x.method === "DELETE" && x.url === "/v2/sandboxes/registries/corp")).toBe(true);
  }, 30_000);

  it("snapshot create --registry NAME sends registry_id", async () => {
    const r = await run(["snapshot", "create", "app", "--image", "registry.corp.example:5000/team/app:1", "--registry", "corp"]);
    expect(r.code).toBe(0);
    const body = requests.find((x) => x.method === "POST" && x.url === "/v2/sandboxes/snapshots")?.body;
    expect(body).toEqual({ name: "app", docker_image: "registry.corp.example:5000/team/app:1", registry_id: "corp" });
    expect(JSON.parse(r.stdout)).toMatchObject({ id: "sn-reg", registry_id: "rg-1", status: "ready" });
  }, 30_000);
});

describe("service-url and tunnel", () => {
  it("service-url requests a token URL for the port and prints it", async () => {
    const r = await run(["service-url", "box", "8000", "--expires", "600"]);
    expect(r.code).toBe(0);
    expect(requests.find((x) => x.url.endsWith("/service-url"))).toEqual({ method: "POST", url: "/v2/sandboxes/boxes/box/service-url", body: { port: 8000, expires_in_seconds: 600 } });
    expect(r.stdout).toBe(
      `browser_url  http://8000--sb-1.localhost/__sandbar/auth?token=tk\nservice_url  http://127.0.0.1:${port}/svc/sb-1/8000\ntoken        tk\nexpires_at   2030-01-01T00:00:00.000Z\n`,
    );
  }, 30_000);

  it("tunnel forwards a local port until SIGINT, then closes and exits 0", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, "tunnel", "box", "5432", "--endpoint", `http://127.0.0.1:${port}`, "--api-key", "k"]);
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes("\n")) resolve(stdout.split("\n")[0] as string);
      });
      child.on("close", () => reject(new Error(`exited early: ${stderr}`)));
    });
    const m = /^forwarding 127\.0\.0\.1:(\d+) -> box:5432$/.exec(line);
    expect(m, line).not.toBeNull();
    const local = Number(m?.[1]);
    const echoed = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port: local });
      let got = "";
      s.on("data", (d: Buffer) => {
        got += d.toString();
        if (got === "hello") {
          resolve(got);
          s.end();
        }
      });
      s.on("error", reject);
      s.write("hello");
    });
    expect(echoed).toBe("hello");
    expect(connects).toContain(5432);
    expect(openTunnels).toBe(1);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(stderr).toBe("");
    await new Promise((r) => setTimeout(r, 100));
    expect(openTunnels).toBe(0);
  }, 30_000);

  it("tunnel uses LOCAL_PORT when given and fails clearly when it is taken", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const taken = (blocker.address() as AddressInfo).port;
    const r = await run(["tunnel", "box", "80", String(taken)]);
    await new Promise((res) => blocker.close(res));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: SandboxClientError: cannot listen on 127.0.0.1:${taken}: the port is already in use (choose another local port, or 0 for a free one)\n`);
  }, 30_000);
});

describe.concurrent("snapshot build", () => {
  const root = mkdtempSync(join(tmpdir(), "sandbar-cli-build-"));
  const ctx = join(root, "ctx");
  mkdirSync(join(ctx, "src"), { recursive: true });
  writeFileSync(join(ctx, "Dockerfile"), "FROM python:3.12-slim\nCOPY app.py /app/\n");
  writeFileSync(join(ctx, "other.Dockerfile"), "FROM alpine\n");
  writeFileSync(join(ctx, "app.py"), "print('hi')\n");
  writeFileSync(join(ctx, "src", "lib.py"), "x = 1\n");
  writeFileSync(join(ctx, "secret.txt"), "s3cret");
  writeFileSync(join(ctx, ".dockerignore"), "secret.txt\n");
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const posted = (name: string): Record<string, unknown> | undefined =>
    requests.find((x) => x.url === "/v2/sandboxes/snapshots/build" && (x.body as { name?: string } | undefined)?.name === name)?.body as Record<string, unknown> | undefined;

  it("sends the Dockerfile, the context (minus .dockerignore) and the flags; streams the log, then prints the snapshot", async () => {
    const r = await run(["snapshot", "build", "built-flags", ctx, "--build-arg", "A=1,2", "--build-arg", "FROM_ENV", "--build-arg", "UNSET_ARG", "--target", "runtime", "--fs-capacity", "2147483648"], undefined, { FROM_ENV: "env-value" });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(posted("built-flags")).toEqual({
      name: "built-flags",
      dockerfile: "FROM python:3.12-slim\nCOPY app.py /app/\n",
      build_args: JSON.stringify({ A: "1,2", FROM_ENV: "env-value" }),
      target: "runtime",
      fs_capacity_bytes: "2147483648",
      context: [".dockerignore", "Dockerfile", "app.py", "other.Dockerfile", "src/", "src/lib.py"],
    });
    const log = BUILD_LOGS.built?.lines.join("\n") ?? "";
    expect(r.stdout.startsWith(`${log}\n{`)).toBe(true);
    expect(JSON.parse(r.stdout.slice(log.length + 1))).toMatchObject({ id: "sn-b-built-flags", name: "built-flags", status: "ready" });
  }, 30_000);

  it.each([
    ["built-file", ["-f", join(ctx, "other.Dockerfile")], undefined, "FROM alpine\n"],
    ["built-stdin", ["-f", "-"], "FROM busybox\nRUN true\n", "FROM busybox\nRUN true\n"],
  ])("%s: -f %j names the Dockerfile", async (name, flags, input, dockerfile) => {
    const r = await run(["snapshot", "build", name, ctx, ...flags], input);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(posted(name)?.dockerfile).toBe(dockerfile);
  }, 30_000);

  it("a failed build exits 1: the log on stdout, the reason and the log's tail on stderr", async () => {
    const r = await run(["snapshot", "build", "broken", ctx]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`${BUILD_LOGS.broken?.lines.join("\n")}\n`);
    expect(r.stderr).toBe(`error: ResourceCreationError: step 2/2 RUN false: exit code 1\n\nlast 3 lines of the build log:\n${BUILD_LOGS.broken?.lines.join("\n")}\n`);
  }, 30_000);

  it("a Dockerfile the server refuses exits 1 with its message", async () => {
    const r = await run(["snapshot", "build", "refused", ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: VALIDATION_ERROR: dockerfile line 2: unknown instruction FORM\n");
  }, 30_000);

  it.each([
    [["snapshot", "build"], "error: missing snapshot name: sandbar snapshot build NAME [CONTEXT_DIR] [-f DOCKERFILE] [--build-arg K=V]... [--target T] [--fs-capacity BYTES] [--timeout S]\n"],
    [["snapshot", "build", "n1", join(root, "nope")], `error: build context ${join(root, "nope")} is not a directory\n`],
    [["snapshot", "build", "n2", join(ctx, "src")], `error: cannot read the Dockerfile ${join(ctx, "src", "Dockerfile")}: no such file (name it with -f)\n`],
    [["snapshot", "build", "n3", ctx, "--fs-capacity", "2G"], "error: --fs-capacity must be a number of bytes, not '2G'\n"],
    [["snapshot", "build", "n4", ctx, "--build-arg", "=x"], "error: --build-arg must be NAME=VALUE or NAME, not '=x'\n"],
  ])("%j fails before calling the server", async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(message);
    expect(posted(argv[2] ?? "")).toBeUndefined();
  }, 30_000);
});
