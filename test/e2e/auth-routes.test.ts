/**
 * Authentication and workspace isolation, route by route, from the server's own route table:
 *
 * - every route but /healthz and the download links refuses a missing, wrong, revoked or
 *   misplaced API key with 401 UNAUTHENTICATED, on both control prefixes, WebSocket upgrades
 *   included; download links and service URLs refuse a missing or forged token with 401;
 * - a key of workspace A gets 404 with the resource's NOT_FOUND code (never 403, never data)
 *   for every route that names one of workspace B's sandboxes, snapshots, registries or pools,
 *   by id and by name, and changes nothing of B's;
 * - tokens are bound to their sandbox and port: the cases download-links.test.ts and
 *   network-services.test.ts do not already cover (another sandbox, another workspace, claims
 *   edited under a kept signature, one kind of token for the other).
 *
 * The route list below is a snapshot of the route table: a new route fails the first test
 * until it is classified here, and so gets its auth and isolation checks.
 */
import http, { type IncomingHttpHeaders } from "node:http";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_TABLE, type ErrorCode } from "@sandbar/shared";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

const PREFIXES = ["/v2/sandboxes", "/api/v2/sandboxes"];

/** How a route authenticates. */
type Auth = "key" | "public" | "link";

/** Control-plane routes, under each prefix; all need a key. */
const CONTROL_ROUTES = [
  "POST /boxes",
  "GET /quotas",
  "HEAD /quotas",
  "GET /boxes",
  "HEAD /boxes",
  "GET /boxes/:name",
  "HEAD /boxes/:name",
  "GET /boxes/:name/status",
  "HEAD /boxes/:name/status",
  "PATCH /boxes/:name",
  "DELETE /boxes/:name",
  "POST /boxes/:name/stop",
  "POST /boxes/:name/snapshot",
  "POST /boxes/:name/start",
  "POST /boxes/:name/download-url",
  "POST /boxes/:name/service-url",
  "POST /snapshots",
  "GET /snapshots",
  "HEAD /snapshots",
  "GET /snapshots/:id",
  "HEAD /snapshots/:id",
  "DELETE /snapshots/:id",
  "POST /snapshots/build",
  "GET /snapshots/:id/build-log",
  "HEAD /snapshots/:id/build-log",
  "POST /registries",
  "GET /registries",
  "HEAD /registries",
  "GET /registries/:name",
  "HEAD /registries/:name",
  "PATCH /registries/:name",
  "DELETE /registries/:name",
  "POST /pools",
  "GET /pools",
  "HEAD /pools",
  "GET /pools/:id",
  "HEAD /pools/:id",
  "PATCH /pools/:id",
  "DELETE /pools/:id",
];

/** Every route of the server and how it authenticates. */
const ROUTES: Record<string, Auth> = {
  "GET /healthz": "public",
  "HEAD /healthz": "public",
  "GET /links/:token": "link",
  "HEAD /links/:token": "link",
  "POST /dataplane/:id/execute": "key",
  "POST /dataplane/:id/upload": "key",
  "GET /dataplane/:id/download": "key",
  "HEAD /dataplane/:id/download": "key",
  "POST /dataplane/:id/glob": "key",
  "POST /dataplane/:id/grep": "key",
  "GET /dataplane/:id/execute/ws": "key",
  "HEAD /dataplane/:id/execute/ws": "key",
  "GET /dataplane/:id/tunnel": "key",
  "HEAD /dataplane/:id/tunnel": "key",
  ...Object.fromEntries(PREFIXES.flatMap((p) => CONTROL_ROUTES.map((r) => [r.replace(" ", ` ${p}`), "key" as Auth]))),
};

/** WebSocket routes: checked with an upgrade as well as a plain request. */
const WS_ROUTES = new Set(["/dataplane/:id/execute/ws", "/dataplane/:id/tunnel"]);

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

let base: URL;

/** One request on node:http (any method, duplicate headers, a Host of our choosing). */
function send(method: string, path: string, headers: Record<string, string | string[]> = {}, body?: { data: string; type: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string | string[]> = { ...headers };
    if (body) {
      h["content-type"] = body.type;
      h["content-length"] = String(Buffer.byteLength(body.data));
    }
    const req = http.request({ host: base.hostname, port: base.port, method, path, headers: h, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`no answer: ${method} ${path}`)));
    req.on("error", reject);
    req.end(body?.data);
  });
}

/** A WebSocket upgrade request: its status (101 when it opened) and body. */
function upgrade(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: base.hostname,
      port: base.port,
      path,
      agent: false,
      headers: { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": randomBytes(16).toString("base64"), ...headers },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, headers: res.headers, body: "" });
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Status and code of an error answer (HEAD: status only, there is no body). */
function expectError(a: Answer, method: string, code: ErrorCode, what: string): void {
  const ctx = `${what} -> ${a.status} ${a.body.slice(0, 300)}`;
  expect(a.status, ctx).toBe(ERROR_TABLE[code].status);
  expect(String(a.headers["content-type"] ?? ""), ctx).toMatch(/^application\/json/);
  if (method === "HEAD") return;
  const body = JSON.parse(a.body) as { code: string; detail: { error: string } };
  expect(body.code, ctx).toBe(code);
  expect(body.detail.error, ctx).toBe(ERROR_TABLE[code].wireType);
}

/** A token's claims. */
function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
}

/** Edit a token's claims and keep its signature. */
function reclaim(token: string, edit: (c: Record<string, unknown>) => void): string {
  const [body, mac] = token.split(".") as [string, string];
  const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Record<string, unknown>;
  edit(claims);
  return `${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${mac}`;
}

interface Resources {
  box: SandboxJson;
  snapshotId: string;
  snapshotName: string;
  registryId: string;
  registryName: string;
  poolId: string;
}

describe("authentication and workspace isolation on every route", () => {
  let w: World;
  /** Workspace A: the test server's default key. */
  let keyA: string;
  /** Workspace B: a key made for this file. */
  let keyB: string;
  const wsB = `auth-b-${randomBytes(4).toString("hex")}`;
  let A: Resources;
  let B: Resources;
  const callAs = (key: string, method: string, path: string, body?: unknown): Promise<Answer> =>
    send(method, `/v2/sandboxes${path}`, { "x-api-key": key }, body === undefined ? undefined : { data: JSON.stringify(body), type: "application/json" });

  /** One workspace's sandbox, registry and empty pool, of its own snapshot (built here unless given). */
  async function makeResources(key: string, tag: string, snapshot?: { id: string; name: string }): Promise<Resources> {
    let snap = snapshot;
    if (!snap) {
      const snapRes = await callAs(key, "POST", "/snapshots", { name: `snap-${tag}`, docker_image: `${w.registry.host}/busybox:latest` });
      expect(snapRes.status, snapRes.body).toBe(201);
      snap = { id: (JSON.parse(snapRes.body) as { id: string }).id, name: `snap-${tag}` };
      // Polled with this workspace's key (the fixture's helpers use the default key).
      for (let i = 0; ; i++) {
        const s = JSON.parse((await callAs(key, "GET", `/snapshots/${snap.id}`)).body) as { status: string; status_message: string | null };
        if (s.status !== "building") {
          expect(s.status, s.status_message ?? "").toBe("ready");
          break;
        }
        if (i > 1200) throw new Error(`snapshot ${snap.id} still building`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const boxRes = await callAs(key, "POST", "/boxes", { snapshot_id: snap.id, name: `box-${tag}` });
    expect(boxRes.status, boxRes.body).toBe(201);
    const reg = await callAs(key, "POST", "/registries", { name: `reg-${tag}`, url: "registry.example.com", username: "u", password: "p" });
    expect(reg.status, reg.body).toBe(201);
    const pool = await callAs(key, "POST", "/pools", { snapshot_id: snap.id, size: 0 });
    expect(pool.status, pool.body).toBe(201);
    return {
      box: JSON.parse(boxRes.body) as SandboxJson,
      snapshotId: snap.id,
      snapshotName: snap.name,
      registryId: (JSON.parse(reg.body) as { id: string }).id,
      registryName: `reg-${tag}`,
      poolId: (JSON.parse(pool.body) as { id: string }).id,
    };
  }

  beforeAll(async () => {
    w = await startWorld(["busybox"]);
    base = new URL(w.t.url);
    keyA = w.t.apiKey;
    keyB = (await w.t.server.keys.createKey(wsB, "auth-routes")).key;
    [A, B] = await Promise.all([makeResources(keyA, "a", { id: w.snapshots.busybox as string, name: "busybox" }), makeResources(keyB, "b")]);
  });

  afterAll(async () => {
    if (!w) return;
    // B's resources are not the test server's to clean up: its stop() only knows A's key.
    if (B) {
      await callAs(keyB, "DELETE", `/pools/${B.poolId}`);
      await callAs(keyB, "DELETE", `/boxes/${B.box.id}`);
      await callAs(keyB, "DELETE", `/snapshots/${B.snapshotId}`);
      await callAs(keyB, "DELETE", `/registries/${B.registryId}`);
      const left = await Promise.all(["/boxes", "/snapshots", "/registries", "/pools"].map(async (p) => JSON.parse((await callAs(keyB, "GET", p)).body) as Record<string, unknown[]>));
      expect(left.map((l) => (l.sandboxes ?? l.snapshots ?? l.items ?? l.pools ?? []).length)).toEqual([0, 0, 0, 0]);
    }
    if (A) await callAs(keyA, "DELETE", `/pools/${A.poolId}`);
    if (A) await callAs(keyA, "DELETE", `/registries/${A.registryId}`);
    await w.stop();
  });

  it("the route table is exactly the classified list (a new route must be added here)", () => {
    const served = [...new Set(w.t.server.app.routeTable.map((r) => `${r.method} ${r.url}`))].sort();
    expect(served).toEqual(Object.keys(ROUTES).sort());
    // WebSocket routes are the ones the table marks so.
    const ws = new Set(w.t.server.app.routeTable.filter((r) => r.websocket).map((r) => r.url));
    expect([...ws].sort()).toEqual([...WS_ROUTES].sort());
  });

  /** A concrete path for a route with A's real ids, and a body that would be valid. */
  function requestFor(route: string, r: Resources): { path: string; body?: { data: string; type: string } } {
    const [method, pattern] = route.split(" ") as [string, string];
    const path = pattern
      .replace(/\/boxes\/:name/, `/boxes/${r.box.id}`)
      .replace(/\/dataplane\/:id/, `/dataplane/${r.box.id}`)
      .replace(/\/snapshots\/:id/, `/snapshots/${r.snapshotId}`)
      .replace(/\/registries\/:name/, `/registries/${r.registryId}`)
      .replace(/\/pools\/:id/, `/pools/${r.poolId}`)
      .replace(/\/links\/:token/, "/links/x");
    if (method === "GET" || method === "HEAD") {
      if (path.endsWith("/download")) return { path: `${path}?path=/etc/hostname` };
      return { path };
    }
    const json = (v: unknown): { data: string; type: string } => ({ data: JSON.stringify(v), type: "application/json" });
    const bodies: [RegExp, { data: string; type: string }][] = [
      [/\/boxes$/, json({ snapshot_id: r.snapshotId, name: "made-without-a-key", wait_for_ready: false })],
      [/\/boxes\/[^/]+$/, json({ name: "renamed-without-a-key" })],
      [/\/snapshot$/, json({ name: "captured-without-a-key" })],
      [/\/download-url$/, json({ path: "/etc/hostname" })],
      [/\/service-url$/, json({ port: 8080 })],
      [/\/snapshots$/, json({ name: "built-without-a-key", docker_image: `${w.registry.host}/busybox:latest` })],
      [/\/snapshots\/build$/, { data: '--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nnokey\r\n--B\r\nContent-Disposition: form-data; name="dockerfile"\r\n\r\nFROM scratch\r\n--B--\r\n', type: "multipart/form-data; boundary=B" }],
      [/\/registries$/, json({ name: "reg-without-a-key", url: "r.example.com" })],
      [/\/registries\/[^/]+$/, json({ name: "renamed-without-a-key" })],
      [/\/pools$/, json({ snapshot_id: r.snapshotId, size: 1 })],
      [/\/pools\/[^/]+$/, json({ size: 2 })],
      [/\/execute$/, json({ command: "touch /tmp/pwned-execute" })],
      [/\/upload$/, { data: "pwned", type: "application/octet-stream" }],
      [/\/glob$/, json({ pattern: "*", path: "/" })],
      [/\/grep$/, json({ pattern: "root", path: "/etc" })],
      [/\/start$/, json({})],
    ];
    const body = bodies.find(([re]) => re.test(path))?.[1];
    return { path: path.endsWith("/upload") ? `${path}?path=/tmp/pwned-upload` : path, body };
  }

  /** Everything of workspace A is still there and as it was. */
  async function expectAUntouched(): Promise<void> {
    const box = JSON.parse((await callAs(keyA, "GET", `/boxes/${A.box.id}`)).body) as SandboxJson;
    expect(box).toMatchObject({ name: A.box.name, status: "ready" });
    const boxes = JSON.parse((await callAs(keyA, "GET", "/boxes")).body) as { sandboxes: SandboxJson[] };
    expect(boxes.sandboxes.map((b) => b.name)).toEqual([A.box.name]);
    expect(JSON.parse((await callAs(keyA, "GET", `/snapshots/${A.snapshotId}`)).body)).toMatchObject({ name: A.snapshotName, status: "ready" });
    expect((JSON.parse((await callAs(keyA, "GET", "/snapshots")).body) as { snapshots: unknown[] }).snapshots).toHaveLength(1);
    expect(JSON.parse((await callAs(keyA, "GET", `/registries/${A.registryId}`)).body)).toMatchObject({ name: A.registryName });
    expect((JSON.parse((await callAs(keyA, "GET", "/registries")).body) as { items: unknown[] }).items).toHaveLength(1);
    expect(JSON.parse((await callAs(keyA, "GET", `/pools/${A.poolId}`)).body)).toMatchObject({ size: 0 });
    const files = await send("POST", `/dataplane/${A.box.id}/execute`, { "x-api-key": keyA }, { data: JSON.stringify({ command: "ls /tmp/pwned-execute /tmp/pwned-upload 2>/dev/null; true" }), type: "application/json" });
    expect(JSON.parse(files.body)).toMatchObject({ stdout: "", exit_code: 0 });
  }

  it("every keyed route refuses a missing, wrong, revoked or misplaced key with 401 UNAUTHENTICATED, and does nothing", async () => {
    const revoked = await w.t.server.keys.createKey("default", "to-revoke");
    await w.t.server.keys.revoke(revoked.view.id);
    const badKeys: [string, Record<string, string | string[]>][] = [
      ["no key", {}],
      ["empty key", { "x-api-key": "" }],
      ["wrong key", { "x-api-key": `sb_${randomBytes(24).toString("hex")}` }],
      ["revoked key", { "x-api-key": revoked.key }],
      ["the key's prefix", { "x-api-key": keyA.slice(0, 8) }],
      ["the key with one more character", { "x-api-key": `${keyA}x` }],
      ["key as a bearer token", { authorization: `Bearer ${keyA}` }],
      ["key in a cookie", { cookie: `x-api-key=${keyA}` }],
      ["two x-api-key headers", { "x-api-key": [keyA, keyA] }],
    ];
    let checked = 0;
    for (const [route, auth] of Object.entries(ROUTES)) {
      if (auth !== "key") continue;
      const method = route.split(" ")[0] as string;
      const { path, body } = requestFor(route, A);
      for (const [what, headers] of badKeys) {
        expectError(await send(method, path, headers, body), method, "UNAUTHENTICATED", `${what}: ${route}`);
        // ?api_key= in the URL is no key either.
        if (what === "no key") expectError(await send(method, `${path}${path.includes("?") ? "&" : "?"}x-api-key=${keyA}&api_key=${keyA}`, {}, body), method, "UNAUTHENTICATED", `query key: ${route}`);
        checked++;
      }
      const url = route.split(" ")[1] as string;
      if (WS_ROUTES.has(url) && method === "GET") {
        for (const [what, headers] of badKeys) {
          if (Array.isArray(headers["x-api-key"])) continue;
          expectError(await upgrade(path, headers as Record<string, string>), "GET", "UNAUTHENTICATED", `upgrade with ${what}: ${route}`);
        }
      }
    }
    expect(checked).toBe(Object.values(ROUTES).filter((a) => a === "key").length * badKeys.length);
    // Unknown paths are checked too: no key is 401 before any 404.
    for (const path of ["/nope", "/v2/sandboxes/nope", "/dataplane", "/svc/not-a-uuid/80/", "/v2/sandboxes/boxes/%", `/v2/sandboxes/boxes/${"x".repeat(5000)}`]) {
      expectError(await send("GET", path), "GET", "UNAUTHENTICATED", `unknown path ${path.slice(0, 40)}`);
    }
    await expectAUntouched();
  });

  it("/healthz needs no key", async () => {
    for (const method of ["GET", "HEAD"]) {
      const a = await send(method, "/healthz");
      expect(a.status).toBe(200);
    }
  });

  it("download links refuse a missing, forged or tampered token with 401, with or without an API key", async () => {
    const made = JSON.parse((await callAs(keyA, "POST", `/boxes/${A.box.id}/download-url`, { path: "/etc/hostname", expires_in_seconds: 600 })).body) as { token: string };
    const svc = JSON.parse((await callAs(keyA, "POST", `/boxes/${A.box.id}/service-url`, { port: 8080 })).body) as { token: string };
    // Control: the genuine link works without a key.
    const ok = await send("GET", `/links/${made.token}`);
    expect(ok.status).toBe(200);
    expect(ok.body.trim()).toBe(A.box.name);
    const forged: [string, string][] = [
      ["garbage", "garbage"],
      ["no signature", made.token.split(".")[0] as string],
      ["empty signature", `${made.token.split(".")[0] ?? ""}.`],
      ["bad signature", `${made.token.split(".")[0] ?? ""}.AAAA`],
      ["three parts", `${made.token}.x`],
      ["another sandbox", reclaim(made.token, (c) => (c.s = B.box.id))],
      ["another workspace", reclaim(made.token, (c) => (c.w = "00000000-0000-4000-8000-000000000000"))],
      ["expiry removed", reclaim(made.token, (c) => delete c.e)],
      ["expiry extended", reclaim(made.token, (c) => (c.e = 4102444800))],
      ["service token", svc.token],
      ["API key", keyA],
    ];
    for (const method of ["GET", "HEAD"]) {
      for (const [what, token] of forged) {
        for (const headers of [{}, { "x-api-key": keyA }] as Record<string, string>[]) {
          expectError(await send(method, `/links/${encodeURIComponent(token)}`, headers), method, "UNAUTHENTICATED", `${method} link: ${what}`);
        }
      }
      // No token at all: no route (the router needs a non-empty segment), never the file.
      for (const path of ["/links/", "/links"]) {
        const a = await send(method, path);
        expect(a.status, path).toBeGreaterThanOrEqual(400);
        expect(a.status, path).toBeLessThan(500);
      }
    }
  });

  it("service URLs refuse a missing or forged token, another sandbox's or workspace's token, and API keys, with 401", async () => {
    const mint = async (key: string, box: SandboxJson, port: number): Promise<{ token: string }> => {
      const r = await callAs(key, "POST", `/boxes/${box.id}/service-url`, { port, expires_in_seconds: 600 });
      expect(r.status, r.body).toBe(200);
      return JSON.parse(r.body) as { token: string };
    };
    const tokA = await mint(keyA, A.box, 8080);
    const tokB = await mint(keyB, B.box, 8080);
    const link = JSON.parse((await callAs(keyA, "POST", `/boxes/${A.box.id}/download-url`, { path: "/etc/hostname" })).body) as { token: string };
    const pathForm = (box: SandboxJson): string => `/svc/${box.id}/8080/`;
    const hostForm = (box: SandboxJson): string => `8080--${box.id}.localhost`;
    const T = "x-langsmith-sandbox-service-token";
    // Control: the right token passes authentication (nothing listens: 502 SERVICE_UNAVAILABLE).
    expectError(await send("GET", pathForm(A.box), { [T]: tokA.token }), "GET", "SERVICE_UNAVAILABLE", "control, path form");
    expectError(await send("GET", "/", { host: hostForm(B.box), [T]: tokB.token }), "GET", "SERVICE_UNAVAILABLE", "control, host form");
    const refused: [string, Record<string, string>][] = [
      ["no token", {}],
      ["API key of the owner", { "x-api-key": keyA }],
      ["bearer API key", { authorization: `Bearer ${keyA}` }],
      ["other workspace's token", { [T]: tokB.token }],
      ["token edited to this sandbox", { [T]: reclaim(tokB.token, (c) => (c.s = A.box.id)) }],
      ["token edited to this sandbox and workspace", { [T]: reclaim(tokB.token, (c) => ((c.s = A.box.id), (c.w = claimsOf(tokA.token).w))) }],
      ["token edited to another port", { [T]: reclaim(tokA.token, (c) => (c.port = 8081)) }],
      ["expiry extended", { [T]: reclaim(tokA.token, (c) => (c.e = 4102444800)) }],
      ["download-link token", { [T]: link.token }],
      ["forged cookie", { cookie: `sandbar_service_token=${reclaim(tokA.token, (c) => (c.e = 4102444800))}` }],
    ];
    for (const [what, headers] of refused) {
      for (const method of ["GET", "POST", "DELETE"]) {
        expectError(await send(method, pathForm(A.box), headers), method, "UNAUTHENTICATED", `path form, ${what}`);
        expectError(await send(method, "/some/path", { host: hostForm(A.box), ...headers }), method, "UNAUTHENTICATED", `host form, ${what}`);
      }
      expectError(await upgrade(pathForm(A.box), headers), "GET", "UNAUTHENTICATED", `upgrade, ${what}`);
    }
    // The cookie login checks the token the same way.
    for (const token of [tokB.token, link.token, "garbage", reclaim(tokA.token, (c) => (c.port = 9))]) {
      expectError(await send("GET", `/__sandbar/auth?token=${encodeURIComponent(token)}`, { host: hostForm(A.box) }), "GET", "UNAUTHENTICATED", "cookie login");
    }
  });

  describe("workspace isolation: A's key and B's resources", () => {
    /** The NOT_FOUND code of the resource a route's parameter names. */
    const notFound = (pattern: string): ErrorCode | undefined =>
      pattern.includes("/boxes/:name") || pattern.startsWith("/dataplane/:id")
        ? "SANDBOX_NOT_FOUND"
        : pattern.includes("/snapshots/:id")
          ? "SNAPSHOT_NOT_FOUND"
          : pattern.includes("/registries/:name")
            ? "REGISTRY_NOT_FOUND"
            : pattern.includes("/pools/:id")
              ? "POOL_NOT_FOUND"
              : undefined;

    it("every route with a resource in its path answers 404 and the resource's code for B's, by id and by name", async () => {
      let routes = 0;
      for (const [route, auth] of Object.entries(ROUTES)) {
        const [method, pattern] = route.split(" ") as [string, string];
        if (!pattern.includes(":") || auth !== "key") continue;
        const code = notFound(pattern);
        expect(code, `${route} has a parameter of an unknown kind: classify it`).toBeDefined();
        routes++;
        const { path: byId, body } = requestFor(route, B);
        const refs = [byId];
        // By name too where names are accepted (not on the data plane, not for pools).
        if (pattern.includes("/boxes/:name")) refs.push(byId.replace(B.box.id, B.box.name));
        if (pattern.includes("/snapshots/:id")) refs.push(byId.replace(B.snapshotId, B.snapshotName));
        if (pattern.includes("/registries/:name")) refs.push(byId.replace(B.registryId, B.registryName));
        for (const path of refs) {
          expectError(await send(method, path, { "x-api-key": keyA }, body), method, code as ErrorCode, `A: ${method} ${path}`);
          if (WS_ROUTES.has(pattern) && method === "GET") expectError(await upgrade(path, { "x-api-key": keyA }), "GET", code as ErrorCode, `A: upgrade ${path}`);
        }
      }
      expect(routes).toBeGreaterThan(40);
    });

    it("B's snapshots, registries and pools cannot be used from A's requests either", async () => {
      for (const prefix of PREFIXES) {
        const post = (path: string, body: unknown): Promise<Answer> => send("POST", `${prefix}${path}`, { "x-api-key": keyA }, { data: JSON.stringify(body), type: "application/json" });
        expectError(await post("/boxes", { snapshot_id: B.snapshotId, wait_for_ready: false }), "POST", "SNAPSHOT_NOT_FOUND", "box from B's snapshot id");
        expectError(await post("/boxes", { snapshot_name: B.snapshotName, wait_for_ready: false }), "POST", "SNAPSHOT_NOT_FOUND", "box from B's snapshot name");
        expectError(await post("/pools", { snapshot_id: B.snapshotId, size: 0 }), "POST", "SNAPSHOT_NOT_FOUND", "pool of B's snapshot");
        expectError(await post("/pools", { snapshot_name: B.snapshotName, size: 0 }), "POST", "SNAPSHOT_NOT_FOUND", "pool of B's snapshot name");
        for (const ref of [B.registryId, B.registryName]) {
          expectError(await post("/snapshots", { name: "with-b-registry", docker_image: "registry.example.com/x:1", registry_id: ref }), "POST", "REGISTRY_NOT_FOUND", "build with B's registry");
        }
        // Lists show none of B's.
        for (const [path, field] of [["/boxes", "sandboxes"], ["/snapshots", "snapshots"], ["/registries", "items"], ["/pools", "pools"]] as const) {
          const list = JSON.parse((await send("GET", `${prefix}${path}?limit=500`, { "x-api-key": keyA })).body) as Record<string, { id: string }[]>;
          const ids = (list[field] ?? []).map((x) => x.id);
          expect(ids, path).not.toContain(B.box.id);
          expect(ids, path).not.toContain(B.snapshotId);
          expect(ids, path).not.toContain(B.registryId);
          expect(ids, path).not.toContain(B.poolId);
        }
      }
    });

    it("B's resources are unchanged, and B still reaches them", async () => {
      const box = JSON.parse((await callAs(keyB, "GET", `/boxes/${B.box.id}`)).body) as SandboxJson;
      expect(box).toMatchObject({ name: B.box.name, status: "ready" });
      expect(JSON.parse((await callAs(keyB, "GET", `/snapshots/${B.snapshotName}`)).body)).toMatchObject({ id: B.snapshotId, status: "ready" });
      expect(JSON.parse((await callAs(keyB, "GET", `/registries/${B.registryName}`)).body)).toMatchObject({ id: B.registryId, username: "u" });
      expect(JSON.parse((await callAs(keyB, "GET", `/pools/${B.poolId}`)).body)).toMatchObject({ size: 0 });
      const pwned = await send("POST", `/dataplane/${B.box.id}/execute`, { "x-api-key": keyB }, { data: JSON.stringify({ command: "ls /tmp/pwned-execute /tmp/pwned-upload 2>/dev/null; true" }), type: "application/json" });
      expect(JSON.parse(pwned.body)).toMatchObject({ stdout: "", exit_code: 0 });
      expect((JSON.parse((await callAs(keyB, "GET", "/boxes")).body) as { sandboxes: unknown[] }).sandboxes).toHaveLength(1);
    });

    it("a download link outlives neither its sandbox nor its workspace's ownership: after B deletes the sandbox it is 404", async () => {
      const made = JSON.parse((await callAs(keyB, "POST", `/boxes/${B.box.id}/download-url`, { path: "/etc/hostname" })).body) as { token: string };
      // A link is a bearer credential for one file of one sandbox: anyone holding it reads that.
      const got = await send("GET", `/links/${made.token}`);
      expect(got.status).toBe(200);
      expect(got.body.trim()).toBe(B.box.name);
      // Not another file of the same sandbox.
      expectError(await send("GET", `/links/${reclaim(made.token, (c) => (c.p = "/etc/passwd"))}`), "GET", "UNAUTHENTICATED", "path edited");
      const svc = JSON.parse((await callAs(keyB, "POST", `/boxes/${B.box.id}/service-url`, { port: 8080 })).body) as { token: string };
      expect((await callAs(keyB, "DELETE", `/boxes/${B.box.id}`)).status).toBe(204);
      expectError(await send("GET", `/links/${made.token}`), "GET", "SANDBOX_NOT_FOUND", "link to a deleted sandbox");
      expectError(await send("GET", `/svc/${B.box.id}/8080/`, { "x-langsmith-sandbox-service-token": svc.token }), "GET", "SANDBOX_NOT_FOUND", "service of a deleted sandbox");
      // A new sandbox of B's with the same name does not inherit the old links.
      const again = await callAs(keyB, "POST", "/boxes", { snapshot_id: B.snapshotId, name: B.box.name });
      expect(again.status, again.body).toBe(201);
      const fresh = JSON.parse(again.body) as SandboxJson;
      expect(fresh.id).not.toBe(B.box.id);
      expectError(await send("GET", `/links/${made.token}`), "GET", "SANDBOX_NOT_FOUND", "link to the old sandbox after a new one took its name");
      B.box = fresh;
    });
  });
});
