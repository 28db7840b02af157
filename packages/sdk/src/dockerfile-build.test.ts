/**
 * createSnapshotFromDockerfile and buildLog against a scripted fetch: the multipart fields,
 * the context archive (map and directory), the followed log to onBuildLog (split chunks,
 * reconnects without repeats), failed builds with the log's tail, timeouts, and fallbacks.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { errorBody } from "@sandbar/shared";
import { SandboxClient } from "./client.js";
import { ResourceCreationError, ResourceNameConflictError, ResourceTimeoutError, ValidationError } from "./errors.js";

const VIEW = { id: "sn-1", name: "app", status: "building", status_message: null, docker_image: null, fs_capacity_bytes: 1 << 30 };

interface Seen {
  method: string;
  url: string;
  body: unknown;
  apiKey: string | null;
}

type Handler = (req: Seen, init: RequestInit) => Response | Promise<Response>;

/** A fetch answering by "METHOD path?query" (exact) or "METHOD path". */
function server(routes: Record<string, Handler>): { fetch: typeof fetch; seen: Seen[] } {
  const seen: Seen[] = [];
  const f = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input));
    const req = { method: init.method ?? "GET", url: `${url.pathname}${url.search}`, body: init.body, apiKey: new Headers(init.headers).get("x-api-key") };
    seen.push(req);
    const route = routes[`${req.method} ${req.url}`] ?? routes[`${req.method} ${url.pathname}`];
    if (!route) return json(404, errorBody("ROUTE_NOT_FOUND", `no route ${req.method} ${req.url}`));
    return route(req, init);
  };
  return { fetch: f as typeof fetch, seen };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const enc = new TextEncoder();

/** A text/plain streaming body: the chunks in order, then the end (or an error, or nothing when `hang`). */
function streamed(chunks: string[], end: "close" | "error" | "hang" = "close", signal?: AbortSignal | null): Response {
  const body = new ReadableStream<Uint8Array>({
    async start(c) {
      for (const ch of chunks) {
        c.enqueue(enc.encode(ch));
        await new Promise((r) => setTimeout(r, 1));
      }
      if (end === "close") c.close();
      else if (end === "error") c.error(new TypeError("terminated"));
      else signal?.addEventListener("abort", () => c.error(signal.reason));
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "text/plain; charset=utf-8" } });
}

const LOG = "/v2/sandboxes/snapshots/sn-1/build-log?follow=true";

function client(f: typeof fetch): SandboxClient {
  return new SandboxClient({ endpoint: "http://h", apiKey: "k", fetch: f, maxRetries: 0 });
}

/** Names of the entries of an uncompressed ustar archive (no PAX). */
function tarNames(tar: Uint8Array): string[] {
  const names: string[] = [];
  for (let at = 0; at + 512 <= tar.length;) {
    const h = tar.subarray(at, at + 512);
    if (h.every((x) => x === 0)) break;
    const field = (o: number, n: number): string => new TextDecoder().decode(h.subarray(o, o + n)).replace(/\0.*$/s, "");
    const prefix = field(345, 155);
    names.push(prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    at += 512 + Math.ceil(parseInt(field(124, 12), 8) / 512) * 512;
  }
  return names;
}

const tmp = mkdtempSync(join(tmpdir(), "sandbar-build-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("createSnapshotFromDockerfile: the request", () => {
  it("posts multipart name, dockerfile, build_args (JSON), target, fs_capacity_bytes and the context tar", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () => streamed(["Step 1/1 : FROM alpine\n"]),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: "ready" }),
    });
    const snap = await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\nCOPY . /app\n", {
      context: { "hello.sh": "echo hi\n", "lib/util.py": new Uint8Array([1, 2]) },
      buildArgs: { PY: "3.12", EMPTY: "" },
      target: "runtime",
      fsCapacityBytes: 2147483648,
    });
    expect(snap.status).toBe("ready");
    const post = s.seen[0];
    expect(post).toMatchObject({ method: "POST", url: "/v2/sandboxes/snapshots/build", apiKey: "k" });
    const form = post?.body as FormData;
    expect(form).toBeInstanceOf(FormData);
    expect([...form.keys()].sort()).toEqual(["build_args", "context", "dockerfile", "fs_capacity_bytes", "name", "target"]);
    expect(form.get("name")).toBe("app");
    expect(form.get("dockerfile")).toBe("FROM alpine\nCOPY . /app\n");
    expect(JSON.parse(form.get("build_args") as string)).toEqual({ PY: "3.12", EMPTY: "" });
    expect(form.get("target")).toBe("runtime");
    expect(form.get("fs_capacity_bytes")).toBe("2147483648");
    const ctx = form.get("context") as File;
    expect(ctx.name).toBe("context.tar");
    expect(ctx.type).toBe("application/x-tar");
    expect(tarNames(new Uint8Array(await ctx.arrayBuffer()))).toEqual(["hello.sh", "lib/", "lib/util.py"]);
    // No content-type of our own: fetch sets the multipart boundary.
    expect(s.seen.map((x) => `${x.method} ${x.url}`)).toEqual(["POST /v2/sandboxes/snapshots/build", `GET ${LOG}`, "GET /v2/sandboxes/snapshots/sn-1"]);
  });

  it("sends only name and dockerfile when no options are given", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots/build": (_r, init) => {
        expect(new Headers(init.headers).get("content-type")).toBeNull();
        return json(201, VIEW);
      },
      [`GET ${LOG}`]: () => streamed([]),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: "ready" }),
    });
    await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\n");
    expect([...(s.seen[0]?.body as FormData).keys()].sort()).toEqual(["dockerfile", "name"]);
  });

  it("archives a directory context (Node), honouring its .dockerignore", async () => {
    const dir = join(tmp, "ctx");
    mkdirSync(join(dir, "src"), { recursive: true });
    mkdirSync(join(dir, "node_modules/x"), { recursive: true });
    writeFileSync(join(dir, "src/main.py"), "print(1)\n");
    writeFileSync(join(dir, "node_modules/x/i.js"), "x");
    writeFileSync(join(dir, ".dockerignore"), "node_modules\n.dockerignore\n");
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () => streamed([]),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: "ready" }),
    });
    await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\n", { context: dir });
    const ctx = (s.seen[0]?.body as FormData).get("context") as File;
    expect(tarNames(new Uint8Array(await ctx.arrayBuffer()))).toEqual(["src/", "src/main.py"]);
  });

  it.each([
    [{ buildArgs: { N: 1 as unknown as string } }, /buildArgs\.N must be a string/],
    [{ fsCapacityBytes: 1.5 }, /fsCapacityBytes must be a positive integer/],
    [{ context: { "../escape": "x" } }, /'\.\.' in build context path/],
    [{ context: join(tmp, "missing") }, /no such directory/],
  ])("refuses %j before calling the server (ValidationError)", async (opts, message) => {
    const s = server({});
    const err = await client(s.fetch)
      .createSnapshotFromDockerfile("app", "FROM alpine\n", opts)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(message);
    expect(s.seen).toEqual([]);
  });

  it("server refusals are thrown as they come: 422 (the Dockerfile's line), 409, 413", async () => {
    const answers: [number, unknown, unknown][] = [
      [422, errorBody("VALIDATION_ERROR", "dockerfile line 3: unknown instruction FORM"), ValidationError],
      [409, errorBody("NAME_CONFLICT", "snapshot 'app' already exists"), ResourceNameConflictError],
      [413, errorBody("PAYLOAD_TOO_LARGE", "build context over 1 GiB"), ValidationError],
    ];
    for (const [status, body, cls] of answers) {
      const s = server({ "POST /v2/sandboxes/snapshots/build": () => json(status, body) });
      const err = await client(s.fetch)
        .createSnapshotFromDockerfile("app", "FROM alpine\n")
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls as new () => Error);
      expect((err as Error).message).toBe((body as { message: string }).message);
      expect(s.seen).toHaveLength(1);
    }
  });
});

describe("createSnapshotFromDockerfile: the build log", () => {
  it("streams the log line by line to onBuildLog (chunks split anywhere, CRLF), then returns the ready snapshot", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () =>
        streamed([
          "Step 1/3 : FROM alp",
          "ine\nStep 2/3 : RUN pip install x\r\n ---> Using cache\n",
          'Collecting x\nStep 3/3 : CMD ["sh"]',
          "\n",
          "Successfully built",
        ]),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: "ready" }),
    });
    const lines: string[] = [];
    const snap = await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\n", { onBuildLog: (l) => lines.push(l) });
    expect(lines).toEqual([
      "Step 1/3 : FROM alpine",
      "Step 2/3 : RUN pip install x",
      " ---> Using cache",
      "Collecting x",
      'Step 3/3 : CMD ["sh"]',
      "Successfully built",
    ]);
    expect(snap).toMatchObject({ id: "sn-1", status: "ready" });
  });

  it("a failed build throws ResourceCreationError with the status_message and the last 20 log lines", async () => {
    const log = Array.from({ length: 30 }, (_, i) => `line ${i + 1}\n`);
    log.push('ERROR: process "/bin/sh -c exit 3" returned a non-zero code: 3\n');
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () => streamed(log),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: "failed", status_message: "step 4/7 RUN exit 3: exit code 3" }),
    });
    const lines: string[] = [];
    const err = await client(s.fetch)
      .createSnapshotFromDockerfile("app", "FROM alpine\n", { onBuildLog: (l) => lines.push(l) })
      .catch((e: unknown) => e);
    expect(lines).toHaveLength(31);
    expect(err).toBeInstanceOf(ResourceCreationError);
    const e = err as ResourceCreationError;
    const tail = [...Array.from({ length: 19 }, (_, i) => `line ${i + 12}`), 'ERROR: process "/bin/sh -c exit 3" returned a non-zero code: 3'];
    expect(e.buildLogTail).toEqual(tail);
    expect(e.message).toBe(`step 4/7 RUN exit 3: exit code 3\n\nlast 20 lines of the build log:\n${tail.join("\n")}`);
  });

  it("a follow that breaks off is opened again; lines already handed out are not repeated", async () => {
    let follows = 0;
    let gets = 0;
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () => (++follows === 1 ? streamed(["a\nb\npart"], "error") : streamed(["a\nb\npartial done\nc\n"])),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: ++gets === 1 ? "building" : "ready" }),
    });
    const lines: string[] = [];
    await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\n", { onBuildLog: (l) => lines.push(l) });
    expect(lines).toEqual(["a", "b", "partial done", "c"]);
    expect(follows).toBe(2);
  });

  it("past the timeout: ResourceTimeoutError (resourceType snapshot)", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: (_r, init) => streamed(["Step 1/2 : RUN sleep 1000\n"], "hang", init.signal),
    });
    const lines: string[] = [];
    const t0 = Date.now();
    const err = await client(s.fetch)
      .createSnapshotFromDockerfile("app", "FROM alpine\n", { timeout: 0.3, onBuildLog: (l) => lines.push(l) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceTimeoutError);
    expect((err as ResourceTimeoutError).resourceType).toBe("snapshot");
    expect((err as Error).message).toBe("snapshot app not built within 0.3s (last status building)");
    expect(lines).toEqual(["Step 1/2 : RUN sleep 1000"]);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it("a server without the build-log route: waits on the status alone", async () => {
    let gets = 0;
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      "GET /v2/sandboxes/snapshots/sn-1": () => json(200, { ...VIEW, status: ++gets < 2 ? "building" : "ready" }),
    });
    const snap = await client(s.fetch).createSnapshotFromDockerfile("app", "FROM alpine\n", { onBuildLog: () => undefined });
    expect(snap.status).toBe("ready");
    expect(s.seen.map((x) => x.url)).toContain(LOG);
  });

  it("an exception of onBuildLog is the caller's: thrown as is", async () => {
    const s = server({
      "POST /v2/sandboxes/snapshots/build": () => json(201, VIEW),
      [`GET ${LOG}`]: () => streamed(["x\n", "y\n"]),
    });
    const boom = new Error("boom");
    const err = await client(s.fetch)
      .createSnapshotFromDockerfile("app", "FROM alpine\n", {
        onBuildLog: () => {
          throw boom;
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBe(boom);
  });
});

describe("buildLog", () => {
  it("GETs the log so far, without follow", async () => {
    const s = server({
      "GET /v2/sandboxes/snapshots/sn%2F1/build-log": () => new Response("Step 1/1 : FROM alpine\n", { headers: { "content-type": "text/plain" } }),
    });
    expect(await client(s.fetch).buildLog("sn/1")).toBe("Step 1/1 : FROM alpine\n");
    expect(s.seen).toMatchObject([{ method: "GET", url: "/v2/sandboxes/snapshots/sn%2F1/build-log", apiKey: "k" }]);
  });
});
