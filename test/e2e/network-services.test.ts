import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { connect } from "node:net";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import pg from "pg";
import { SandboxClient, type Sandbox } from "@sandbar/sdk";
import { YamuxSession } from "@sandbar/shared/yamux";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { SERVICE_APP, SERVICE_APP_PATH, startServiceApp } from "../support/service-app.js";

const CLI_MAIN = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

interface ServiceUrl {
  browser_url: string;
  service_url: string;
  token: string;
  expires_at: string;
}

/** A plain HTTP request to the server with any Host header (fetch cannot set Host). */
function request(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { method: opts.method ?? "GET", headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    r.on("error", reject);
    r.end(opts.body);
  });
}

/** Raw tunnel protocol: one yamux stream, connect header, status byte. */
async function rawTunnel(w: World, sb: SandboxJson): Promise<{ session: YamuxSession; ws: WebSocket; connect(port: number, version?: number): Promise<{ status: number; stream: Duplex }> }> {
  const ws = new WebSocket(`${sb.dataplane_url.replace(/^http/, "ws")}/tunnel`, { headers: { "x-api-key": w.t.apiKey } });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  const session = new YamuxSession({ client: true, send: (f) => ws.send(f) });
  ws.on("message", (d: Buffer) => session.receive(d));
  ws.on("close", () => session.close());
  return {
    session,
    ws,
    async connect(port: number, version = 1) {
      const stream = session.open();
      const header = Buffer.alloc(3);
      header[0] = version;
      header.writeUInt16BE(port, 1);
      stream.write(header);
      const status = await new Promise<number>((resolve, reject) => {
        const onReadable = (): void => {
          const b = stream.read(1) as Buffer | null;
          if (b) {
            stream.off("readable", onReadable);
            resolve(b[0] as number);
          }
        };
        stream.on("readable", onReadable);
        stream.once("error", reject);
        stream.once("end", () => reject(new Error("stream ended before the status byte")));
      });
      return { status, stream };
    },
  };
}

function readAllStream(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("end", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  });
}

/** Redis PING over a TCP socket at 127.0.0.1:port. */
function redisPing(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    s.once("error", reject);
    s.once("data", (d) => {
      resolve(d.toString());
      s.end();
    });
    s.write("*1\r\n$4\r\nPING\r\n");
  });
}

describe("service URLs and TCP tunnels", () => {
  let w: World;
  let app: SandboxJson;
  let sdk: SandboxClient;

  const serviceUrl = async (sb: SandboxJson, port: number, extra: Record<string, unknown> = {}): Promise<ServiceUrl> => {
    const res = await w.t.call("POST", `/boxes/${sb.name}/service-url`, { port, ...extra });
    expect(res.status).toBe(200);
    return (await res.json()) as ServiceUrl;
  };

  beforeAll(async () => {
    w = await startWorld(["python", "databases"]);
    sdk = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    app = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "svc-app" });
    const up = await fetch(`${app.dataplane_url}/upload?path=${SERVICE_APP_PATH}`, {
      method: "POST",
      headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" },
      body: SERVICE_APP,
    });
    expect(up.status).toBeLessThan(300);
    for (const port of [8000, 8001]) {
      const r = await w.exec(app, startServiceApp(port));
      expect(r.body.exit_code, r.body.stdout + r.body.stderr).toBe(0);
    }
  });
  afterAll(async () => {
    await w?.stop();
  });

  describe("service URLs", () => {
    it("serves the page through the path-form service_url with the token header", async () => {
      const svc = await serviceUrl(app, 8000, { expires_in_seconds: 600 });
      expect(svc.service_url).toBe(`${w.t.url}/svc/${app.id}/8000`);
      expect(new URL(svc.browser_url).hostname).toBe(`8000--${app.id}.localhost`);
      expect(Date.parse(svc.expires_at) - Date.now()).toBeGreaterThan(590_000);
      const res = await fetch(`${svc.service_url}/`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      expect(res.status).toBe(200);
      expect(await res.text()).toContain("hello from the sandbox");
    });

    it("does not pass the token on to the service", async () => {
      const svc = await serviceUrl(app, 8000);
      const res = await fetch(`${svc.service_url}/headers`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token, cookie: "theirs=1; sandbar_service_token=x" } });
      const seen = (await res.json()) as Record<string, string>;
      const lower = Object.fromEntries(Object.entries(seen).map(([k, v]) => [k.toLowerCase(), v]));
      expect(lower["x-langsmith-sandbox-service-token"]).toBeUndefined();
      expect(lower["cookie"]).toBe("theirs=1");
      expect(lower["x-forwarded-prefix"]).toBe(`/svc/${app.id}/8000`);
    });

    it("refuses missing, forged, other-port, other-sandbox and expired tokens with 401", async () => {
      const svc = await serviceUrl(app, 8000);
      const other = await serviceUrl(app, 8001);
      const url = `${svc.service_url}/`;
      const tries: [string, Record<string, string>][] = [
        ["missing", {}],
        ["forged", { "X-Langsmith-Sandbox-Service-Token": `${svc.token.split(".")[0]}.AAAA` }],
        ["garbage", { "X-Langsmith-Sandbox-Service-Token": "not-a-token" }],
        ["other port", { "X-Langsmith-Sandbox-Service-Token": other.token }],
      ];
      for (const [what, headers] of tries) {
        const res = await fetch(url, { headers });
        expect(res.status, what).toBe(401);
        expect(((await res.json()) as { code: string }).code, what).toBe("UNAUTHENTICATED");
      }
      const short = await serviceUrl(app, 8000, { expires_in_seconds: 1 });
      expect((await fetch(url, { headers: { "X-Langsmith-Sandbox-Service-Token": short.token } })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 2100));
      expect((await fetch(url, { headers: { "X-Langsmith-Sandbox-Service-Token": short.token } })).status).toBe(401);
      // A download-link token is not a service token.
      const dl = await w.t.call("POST", `/boxes/${app.name}/download-url`, { path: SERVICE_APP_PATH });
      const dlToken = ((await dl.json()) as { token: string }).token;
      expect((await fetch(url, { headers: { "X-Langsmith-Sandbox-Service-Token": dlToken } })).status).toBe(401);
    });

    it("browser_url sets an HttpOnly cookie for the service host and redirects; the cookie then authenticates", async () => {
      const svc = await serviceUrl(app, 8000);
      const b = new URL(svc.browser_url);
      const server = new URL(w.t.url);
      const res = await request(`http://127.0.0.1:${server.port}${b.pathname}${b.search}`, { headers: { host: b.host } });
      expect(res.status).toBe(302);
      expect(res.headers.location).toBe("/");
      const cookie = String(res.headers["set-cookie"]);
      expect(cookie).toMatch(/^sandbar_service_token=[^;]+; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax/);
      const pair = cookie.split(";")[0] as string;
      const page = await request(`http://127.0.0.1:${server.port}/`, { headers: { host: b.host, cookie: pair } });
      expect(page.status).toBe(200);
      expect(page.body.toString()).toContain("hello from the sandbox");
      // The same cookie on another port's host is refused.
      const otherHost = b.host.replace(/^8000--/, "8001--");
      expect((await request(`http://127.0.0.1:${server.port}/`, { headers: { host: otherHost, cookie: pair } })).status).toBe(401);
      // Never an open redirect.
      for (const bad of ["//evil.example/", "/%09/evil.example", "/\\evil.example", "https://evil.example/"]) {
        const evil = await request(`http://127.0.0.1:${server.port}${b.pathname}${b.search}&redirect=${bad}`, { headers: { host: b.host } });
        expect(evil.headers.location, bad).toBe("/");
      }
      // A page of another origin cannot ride the cookie into a state-changing request.
      const cross = await request(`http://127.0.0.1:${server.port}/echo`, { method: "POST", body: Buffer.from("x"), headers: { host: b.host, cookie: pair, origin: "http://8001--evil.localhost" } });
      expect(cross.status).toBe(401);
      const same = await request(`http://127.0.0.1:${server.port}/echo`, { method: "POST", body: Buffer.from("x"), headers: { host: b.host, cookie: pair, origin: `http://${b.host}` } });
      expect(same.status).toBe(200);
      // The path form takes the header only: the cookie does not open it.
      const pathForm = await request(`${svc.service_url}/`, { headers: { cookie: pair } });
      expect(pathForm.status).toBe(401);
    });

    it("streams server-sent events as they are produced", async () => {
      const svc = await serviceUrl(app, 8000);
      const res = await fetch(`${svc.service_url}/sse`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      expect(res.headers.get("content-type")).toBe("text/event-stream");
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const arrivals: number[] = [];
      let text = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
        arrivals.push(Date.now());
      }
      expect(text.match(/data: tick \d/g)).toEqual(["data: tick 0", "data: tick 1", "data: tick 2"]);
      // Three events 300 ms apart arrive apart, not in one piece at the end.
      expect(arrivals.length).toBeGreaterThanOrEqual(3);
      expect((arrivals.at(-1) as number) - (arrivals[0] as number)).toBeGreaterThan(400);
    });

    it("carries large bodies both ways", async () => {
      const svc = await serviceUrl(app, 8000);
      const body = randomBytes(32 * 1024 * 1024);
      const up = await fetch(`${svc.service_url}/echo`, { method: "POST", body, headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      expect(await up.json()).toEqual({ bytes: body.length, sha256: createHash("sha256").update(body).digest("hex") });
      const n = 64 * 1024 * 1024;
      const down = await fetch(`${svc.service_url}/big?n=${n}`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      const got = Buffer.from(await down.arrayBuffer());
      expect(got.length).toBe(n);
      expect(got[n - 1]).toBe((n - 1) % 256);
    });

    it("carries WebSocket upgrades (echo), authenticated by the header", async () => {
      const svc = await serviceUrl(app, 8000);
      const ws = new WebSocket(`${svc.service_url.replace(/^http/, "ws")}/ws`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const replies: string[] = [];
      const got = new Promise<void>((resolve) => {
        ws.on("message", (d: Buffer) => {
          replies.push(d.toString());
          if (replies.length === 2) resolve();
        });
      });
      ws.send("one");
      ws.send("two");
      await got;
      expect(replies).toEqual(["echo: one", "echo: two"]);
      ws.close();
      const noAuth = new WebSocket(`${svc.service_url.replace(/^http/, "ws")}/ws`);
      const status = await new Promise<number>((resolve) => noAuth.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)));
      expect(status).toBe(401);
    });

    it("answers 502 SERVICE_UNAVAILABLE when nothing listens on the port", async () => {
      const svc = await serviceUrl(app, 8999);
      const res = await fetch(`${svc.service_url}/`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      expect(res.status).toBe(502);
      expect(((await res.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
    });

    it("validates the service-url request", async () => {
      for (const body of [{}, { port: 0 }, { port: 70000 }, { port: "80" }, { port: 80, expires_in_seconds: 0 }, { port: 80, access: "workspace" }, { port: 2024 }, { port: 80, embed_origins: ["https://x.example"] }]) {
        const res = await w.t.call("POST", `/boxes/${app.name}/service-url`, body);
        expect(res.status, JSON.stringify(body)).toBe(422);
      }
      expect((await w.t.call("POST", "/boxes/no-such-box/service-url", { port: 80 })).status).toBe(404);
    });

    it("after a stop, a request wakes the sandbox; pooled connections from before are not reused", async () => {
      const svc = await serviceUrl(app, 8000);
      const get = (): Promise<Response> => fetch(`${svc.service_url}/`, { headers: { "X-Langsmith-Sandbox-Service-Token": svc.token } });
      expect((await get()).status).toBe(200);
      expect((await w.t.call("POST", `/boxes/${app.name}/stop`)).status).toBeLessThan(300);
      // The request starts the sandbox again; its app is not running yet.
      const woke = await get();
      expect(woke.status).toBe(502);
      expect(((await woke.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
      expect(((await (await w.t.call("GET", `/boxes/${app.name}`)).json()) as SandboxJson).status).toBe("ready");
      for (const port of [8000, 8001]) expect((await w.exec(app, startServiceApp(port))).body.exit_code).toBe(0);
      const res = await get();
      expect(res.status).toBe(200);
      expect(await res.text()).toContain("hello from the sandbox");
    });

    it("the SDK's service() fetches with the token", async () => {
      const sb = await sdk.getSandbox(app.name);
      const svc = await sb.service(8000);
      const res = await svc.fetch("/");
      expect(await res.text()).toContain("hello from the sandbox");
    });
  });

  describe("TCP tunnels", () => {
    let db: Sandbox;

    beforeAll(async () => {
      db = await sdk.createSandbox(w.snapshots.databases as string, { name: "svc-db" });
      const pgStart = await db.run(
        "su postgres -s /bin/sh -c '/usr/lib/postgresql/15/bin/initdb -D /tmp/pgdata -A trust -U postgres >/tmp/initdb.log 2>&1 && /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pgdata -o \"-c listen_addresses=127.0.0.1 -k /tmp\" -l /tmp/pg.log -w start' ; tail -5 /tmp/pg.log",
        { timeout: 120 },
      );
      expect(pgStart.exit_code, pgStart.stdout + pgStart.stderr).toBe(0);
      const redis = await db.run("redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --save '' && sleep 0.2 && redis-cli ping");
      expect(redis.stdout.trim()).toBe("PONG");
    }, 180_000);

    it("the seed's Postgres example: SELECT version() through a tunnel while a Redis tunnel answers PING", async () => {
      const t1 = await db.tunnel(5432);
      const t2 = await db.tunnel(6379);
      try {
        const client = new pg.Client({ host: "127.0.0.1", port: t1.localPort, user: "postgres", database: "postgres" });
        await client.connect();
        const r = await client.query<{ version: string }>("SELECT version()");
        expect(r.rows[0]?.version).toMatch(/^PostgreSQL 15/);
        expect(await redisPing(t2.localPort)).toBe("+PONG\r\n");
        // Both at once, several connections each.
        const many = await Promise.all([...Array(8)].map(() => redisPing(t2.localPort)));
        expect(many.every((p) => p === "+PONG\r\n")).toBe(true);
        const r2 = await client.query<{ n: string }>("SELECT count(*) AS n FROM generate_series(1, 100000)");
        expect(r2.rows[0]?.n).toBe("100000");
        await client.end();
      } finally {
        await t1.close();
        await t2.close();
      }
    });

    it("a tunnel on a fixed local port, closed cleanly, frees the port", async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const t = await db.tunnel(6379, { localPort: port });
      expect(t.localPort).toBe(port);
      expect(await redisPing(port)).toBe("+PONG\r\n");
      await t.close();
      await expect(redisPing(port)).rejects.toThrow(/ECONNREFUSED/);
      const again = await db.tunnel(6379, { localPort: port });
      await again.close();
    });

    it("answers the protocol's status bytes: ok, port not allowed, dial failed, unsupported version", async () => {
      const dbJson = (await (await w.t.call("GET", `/boxes/${db.name}`)).json()) as SandboxJson;
      const t = await rawTunnel(w, dbJson);
      try {
        expect((await t.connect(6379)).status).toBe(0);
        expect((await t.connect(2024)).status).toBe(1);
        expect((await t.connect(1)).status).toBe(2);
        expect((await t.connect(6379, 9)).status).toBe(3);
      } finally {
        t.session.close();
        t.ws.close();
      }
    });

    it("runs many streams on one session, with half-close", async () => {
      const dbJson = (await (await w.t.call("GET", `/boxes/${db.name}`)).json()) as SandboxJson;
      const t = await rawTunnel(w, dbJson);
      try {
        const results = await Promise.all(
          [...Array(20)].map(async (_, i) => {
            const { status, stream } = await t.connect(6379);
            expect(status).toBe(0);
            // Pipelined commands, then half-close: redis answers all and closes.
            stream.end(`*3\r\n$3\r\nSET\r\n$2\r\nk${i % 10}\r\n$${String(i).length}\r\n${i}\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n`);
            return (await readAllStream(stream)).toString();
          }),
        );
        for (const r of results) expect(r).toBe("+OK\r\n+PONG\r\n+OK\r\n");
      } finally {
        t.session.close();
        t.ws.close();
      }
    });

    it("moves bulk data through a tunnel intact", async () => {
      const appSb = await sdk.getSandbox(app.name);
      const http8000 = await appSb.tunnel(8000);
      try {
        const n = 48 * 1024 * 1024;
        const res = await fetch(`http://127.0.0.1:${http8000.localPort}/big?n=${n}`);
        const got = Buffer.from(await res.arrayBuffer());
        expect(got.length).toBe(n);
        const body = randomBytes(16 * 1024 * 1024);
        const up = await fetch(`http://127.0.0.1:${http8000.localPort}/echo`, { method: "POST", body });
        expect(await up.json()).toEqual({ bytes: body.length, sha256: createHash("sha256").update(body).digest("hex") });
      } finally {
        await http8000.close();
      }
    });

    it("the CLI's `sandbar tunnel` forwards a local port until interrupted", async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const child = spawn(process.execPath, [CLI_MAIN, "tunnel", db.name, "6379", String(port)], {
        env: { ...process.env, SANDBAR_ENDPOINT: w.t.url, SANDBAR_API_KEY: w.t.apiKey },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      for (let i = 0; i < 100 && !out.includes("forwarding"); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain(`forwarding 127.0.0.1:${port} -> ${db.name}:6379`);
      expect(await redisPing(port)).toBe("+PONG\r\n");
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      child.kill("SIGINT");
      expect(await exited).toBe(0);
      await expect(redisPing(port)).rejects.toThrow(/ECONNREFUSED/);
    });

    it("refuses tunnels to sandboxes of an unknown id and without a key", async () => {
      const ws = new WebSocket(`${w.t.url.replace(/^http/, "ws")}/dataplane/00000000-0000-0000-0000-000000000000/tunnel`, { headers: { "x-api-key": w.t.apiKey } });
      expect(await new Promise<number>((r) => ws.once("unexpected-response", (_q, res) => r(res.statusCode ?? 0)))).toBe(404);
      const ws2 = new WebSocket(`${app.dataplane_url.replace(/^http/, "ws")}/tunnel`);
      expect(await new Promise<number>((r) => ws2.once("unexpected-response", (_q, res) => r(res.statusCode ?? 0)))).toBe(401);
    });
  });
});
