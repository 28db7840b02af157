/**
 * Sandbox.tunnel against an in-process stand-in for the server's `/tunnel` endpoint: a `ws`
 * WebSocket server with a yamux session that answers the connect header like the real one and
 * dials 127.0.0.1 (standing in for the sandbox). Checks forwarding, half-close, status bytes,
 * one WebSocket for many connections, reopening a dropped WebSocket, and close().
 */
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { createHash, randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocket, WebSocketServer } from "ws";
import { YamuxSession } from "@sandbar/shared/yamux";
import { SandboxClient } from "../client.js";
import type { Sandbox } from "../sandbox.js";
import { SandboxClientError, SandboxConnectionError } from "../errors.js";
import { TunnelError, type Tunnel } from "../tunnel.js";
import type { WebSocketConstructor } from "../ws-stream.js";

const FORBIDDEN_PORT = 1;

interface FakeServer {
  port: number;
  /** WebSocket connections accepted so far. */
  accepted: number;
  /** Headers of the upgrade requests. */
  headers: http.IncomingHttpHeaders[];
  /** Open server-side sockets. */
  sockets: Set<WebSocket>;
  /** Connect headers the server read: [version, port]. */
  connects: [number, number][];
  /** Streams the client reset before they carried data (the real server does not expect that). */
  earlyResets: number;
  /** Wait this long before dialing (a slow dial). */
  dialDelayMs: number;
  /** The yamux sessions of the open sockets. */
  sessions: Set<YamuxSession>;
  close(): Promise<void>;
}

/** The server side of one stream, as packages/server/src/dataplane/tunnel.ts does it. */
async function serveStream(stream: Duplex, state: FakeServer): Promise<void> {
  let relaying = false;
  stream.on("error", () => {
    if (!relaying) state.earlyResets++;
  });
  const header = await new Promise<Buffer | undefined>((resolve) => {
    const onReadable = (): void => {
      const b = stream.read(3) as Buffer | null;
      if (b) {
        stream.off("readable", onReadable);
        resolve(b);
      }
    };
    stream.on("readable", onReadable);
    stream.once("end", () => resolve(undefined));
  });
  if (!header) return void stream.destroy();
  state.connects.push([header[0] as number, header.readUInt16BE(1)]);
  if (header[0] !== 1) return void stream.end(Buffer.from([3]));
  const port = header.readUInt16BE(1);
  if (port === FORBIDDEN_PORT) return void stream.end(Buffer.from([1]));
  if (state.dialDelayMs) await new Promise((r) => setTimeout(r, state.dialDelayMs));
  const target = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  const ok = await new Promise<boolean>((resolve) => {
    target.once("connect", () => resolve(true));
    target.once("error", () => resolve(false));
  });
  if (!ok) return void stream.end(Buffer.from([2]));
  stream.write(Buffer.from([0]));
  relaying = true;
  const done = (): void => {
    stream.destroy();
    target.destroy();
  };
  stream.on("error", done);
  target.on("error", done);
  stream.pipe(target);
  target.pipe(stream);
}

async function fakeServer(opts: { apiKey?: string } = {}): Promise<FakeServer> {
  const wss = new WebSocketServer({ noServer: true });
  const httpServer = http.createServer((_req, res) => res.writeHead(404).end());
  const state: FakeServer = { port: 0, accepted: 0, headers: [], sockets: new Set(), connects: [], earlyResets: 0, dialDelayMs: 0, sessions: new Set(), close: async () => undefined };
  httpServer.on("upgrade", (req, socket, head) => {
    state.headers.push(req.headers);
    if (req.url !== "/dataplane/sb-1/tunnel") return void socket.end("HTTP/1.1 404 Not Found\r\n\r\n");
    if (opts.apiKey && req.headers["x-api-key"] !== opts.apiKey) return void socket.end("HTTP/1.1 401 Unauthorized\r\n\r\n");
    wss.handleUpgrade(req, socket, head, (ws) => {
      state.accepted++;
      state.sockets.add(ws);
      const session = new YamuxSession({ client: false, send: (f) => ws.readyState === ws.OPEN && ws.send(f, { binary: true }) });
      ws.on("message", (d: Buffer) => session.receive(d));
      state.sessions.add(session);
      ws.on("close", () => {
        state.sockets.delete(ws);
        state.sessions.delete(session);
        session.close();
      });
      session.on("error", () => undefined);
      session.on("stream", (s: Duplex) => void serveStream(s, state).catch(() => s.destroy()));
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  state.port = (httpServer.address() as AddressInfo).port;
  state.close = async () => {
    for (const ws of state.sockets) ws.terminate();
    wss.close();
    httpServer.closeAllConnections();
    await new Promise((r) => httpServer.close(r));
  };
  return state;
}

/** A TCP server standing in for a service in the sandbox. */
async function service(onConnection: (s: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    onConnection(s);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return {
    port: (srv.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

const echo = (s: net.Socket): void => void s.pipe(s);

/** Connect to the tunnel, send `data`, half-close, and collect everything until the remote ends. */
function roundTrip(port: number, data: Buffer | string, opts: { end?: boolean } = {}): Promise<{ data: Buffer; ended: boolean; reset: boolean }> {
  return new Promise((resolve, reject) => {
    let reset = false;
    const chunks: Buffer[] = [];
    const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    s.on("data", (c: Buffer) => chunks.push(c));
    let ended = false;
    s.on("end", () => {
      ended = true;
      s.end();
    });
    s.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" ? (reset = true) : reject(e)));
    s.on("close", () => resolve({ data: Buffer.concat(chunks), ended, reset }));
    s.write(data);
    if (opts.end ?? true) s.end();
  });
}

let server: FakeServer;
let cleanups: (() => Promise<void>)[] = [];

beforeEach(async () => {
  server = await fakeServer({ apiKey: "k1" });
  cleanups = [() => server.close()];
});

afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function sandbox(apiKey = "k1"): Promise<Sandbox> {
  const info = { id: "sb-1", name: "box", status: "ready", dataplane_url: `http://127.0.0.1:${server.port}/dataplane/sb-1` };
  const f = (async () => new Response(JSON.stringify(info), { headers: { "content-type": "application/json" } })) as unknown as typeof fetch;
  const client = new SandboxClient({ endpoint: "http://control.test", apiKey, fetch: f, webSocket: WebSocket as unknown as WebSocketConstructor });
  return client.getSandbox("box");
}

async function open(remotePort: number, opts: { localPort?: number; host?: string } = {}): Promise<Tunnel> {
  const t = await (await sandbox()).tunnel(remotePort, opts);
  cleanups.push(() => t.close());
  return t;
}

describe("Sandbox.tunnel", () => {
  it("listens on 127.0.0.1 and a free port by default, with the API key on the WebSocket", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    expect(t.host).toBe("127.0.0.1");
    expect(t.remotePort).toBe(svc.port);
    expect(t.localPort).toBeGreaterThan(0);
    expect(server.accepted).toBe(1); // opened eagerly
    expect(server.headers[0]?.["x-api-key"]).toBe("k1");
    const r = await roundTrip(t.localPort, "hello");
    expect(r.data.toString()).toBe("hello");
    expect(server.connects).toEqual([[1, svc.port]]);
  });

  it("carries half-closes both ways and data the service sends first", async () => {
    // Greets, reads until the client's end, answers with the byte count, then ends.
    const svc = await service((s) => {
      s.write("hello\n");
      let n = 0;
      s.on("data", (c: Buffer) => (n += c.length));
      s.on("end", () => s.end(`got ${n}\n`));
    });
    cleanups.push(svc.close);
    const t = await open(svc.port);
    const r = await roundTrip(t.localPort, Buffer.alloc(1000, 1));
    expect(r.data.toString()).toBe("hello\ngot 1000\n");
    expect(r.ended).toBe(true);
    expect(r.reset).toBe(false);
  });

  it("moves megabytes intact in both directions (flow control)", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    const payload = randomBytes(5 * 1024 * 1024);
    const r = await roundTrip(t.localPort, payload);
    expect(r.data.length).toBe(payload.length);
    expect(createHash("sha256").update(r.data).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
  });

  it("multiplexes concurrent connections over one WebSocket", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => roundTrip(t.localPort, `conn-${i}`)));
    expect(results.map((r) => r.data.toString())).toEqual(Array.from({ length: 20 }, (_, i) => `conn-${i}`));
    expect(server.accepted).toBe(1);
  });

  it("closes a refused connection at once and reports the status as a TunnelError", async () => {
    const closed = await service(() => undefined);
    await closed.close(); // nothing listens on this port any more
    const t = await open(closed.port);
    const errors: TunnelError[] = [];
    t.on("error", (e) => errors.push(e));
    const r = await roundTrip(t.localPort, "x", { end: false });
    expect(r.data.length).toBe(0);
    expect(errors[0]).toBeInstanceOf(TunnelError);
    expect(errors[0]).toBeInstanceOf(SandboxConnectionError);
    expect(errors[0]?.tunnelStatus).toBe(2);
    expect(errors[0]?.code).toBe("SERVICE_UNAVAILABLE");
    expect(errors[0]?.message).toMatch(/nothing in the sandbox accepts connections on port \d+ \(status 2, dial failed\)/);

    const forbidden = await open(FORBIDDEN_PORT);
    const more: TunnelError[] = [];
    forbidden.on("error", (e) => more.push(e));
    await roundTrip(forbidden.localPort, "x", { end: false });
    expect(more[0]?.tunnelStatus).toBe(1);
    expect(more[0]?.message).toMatch(/port not allowed/);
    // The tunnel keeps working after a refusal.
    const svc = await service(echo);
    cleanups.push(svc.close);
    const again = await open(svc.port);
    expect((await roundTrip(again.localPort, "still")).data.toString()).toBe("still");
    // Refused streams were closed with FIN both ways, not reset.
    await new Promise((r) => setTimeout(r, 50));
    expect(server.earlyResets).toBe(0);
  });

  it("a local connection reset while the server dials is cut once the relay starts, never mid-handshake", async () => {
    let served = 0;
    let serviceClosed = 0;
    const svc = await service((s) => {
      served++;
      s.on("close", () => serviceClosed++);
      s.pipe(s);
    });
    cleanups.push(svc.close);
    server.dialDelayMs = 100;
    const t = await open(svc.port);
    const s = net.connect({ host: "127.0.0.1", port: t.localPort });
    s.on("error", () => undefined);
    await new Promise((r) => s.on("connect", r));
    s.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(server.connects.length).toBe(1);
    expect(server.earlyResets).toBe(0);
    expect(served).toBe(1);
    expect(serviceClosed).toBe(1);
    expect((await roundTrip(t.localPort, "after")).data.toString()).toBe("after");
  });

  it("without an 'error' listener a refusal is silent (no unhandled error)", async () => {
    const t = await open(FORBIDDEN_PORT);
    const r = await roundTrip(t.localPort, "x", { end: false });
    expect(r.data.length).toBe(0);
  });

  it("listens on the local port asked for, and rejects a taken one clearly", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const first = await open(svc.port);
    const fixed = await open(svc.port, { localPort: 0, host: "127.0.0.1" });
    expect(fixed.localPort).not.toBe(first.localPort);
    const sb = await sandbox();
    const err = await sb.tunnel(svc.port, { localPort: first.localPort }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxClientError);
    expect((err as Error).message).toBe(`cannot listen on 127.0.0.1:${first.localPort}: the port is already in use (choose another local port, or 0 for a free one)`);
    // The failed attempt left no WebSocket open.
    await new Promise((r) => setTimeout(r, 50));
    expect(server.sockets.size).toBe(2);
  });

  it("rejects when the WebSocket cannot be opened, and frees the local port", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const err = await (await sandbox("wrong-key")).tunnel(svc.port, { localPort: port }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TunnelError);
    expect((err as Error).message).toMatch(/cannot open the tunnel WebSocket .*401/);
    const t = await open(svc.port, { localPort: port }); // the port is free again
    expect(t.localPort).toBe(port);
  });

  it("rejects invalid ports", async () => {
    const sb = await sandbox();
    await expect(sb.tunnel(0)).rejects.toThrow(/remote port must be an integer from 1 to 65535/);
    await expect(sb.tunnel(70000)).rejects.toThrow(/remote port/);
    await expect(sb.tunnel(80, { localPort: -1 })).rejects.toThrow(/local port must be an integer from 0 to 65535/);
  });

  it("reopens the WebSocket for the next connection after it dropped", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    expect((await roundTrip(t.localPort, "one")).data.toString()).toBe("one");
    for (const ws of server.sockets) ws.terminate();
    await new Promise((r) => setTimeout(r, 50));
    expect((await roundTrip(t.localPort, "two")).data.toString()).toBe("two");
    expect(server.accepted).toBe(2);
  });

  it("after a GoAway from the server, new connections go to a new WebSocket and the old one is closed", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    for (const session of server.sessions) session.goAway();
    await new Promise((r) => setTimeout(r, 50));
    expect(server.sockets.size).toBe(0); // no streams were open on it
    expect((await roundTrip(t.localPort, "fresh")).data.toString()).toBe("fresh");
    expect(server.accepted).toBe(2);
  });

  it("cuts active connections when the WebSocket drops", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await open(svc.port);
    const s = net.connect({ host: "127.0.0.1", port: t.localPort });
    s.on("error", () => undefined);
    await new Promise<void>((r) => {
      s.write("ping");
      s.once("data", () => r());
    });
    const closed = new Promise((r) => s.on("close", r));
    for (const ws of server.sockets) ws.terminate();
    await closed;
  });

  it("close() stops listening, cuts connections, closes the WebSocket, and is idempotent", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    const t = await (await sandbox()).tunnel(svc.port);
    const s = net.connect({ host: "127.0.0.1", port: t.localPort });
    s.on("error", () => undefined);
    await new Promise<void>((r) => {
      s.write("ping");
      s.once("data", () => r());
    });
    const sClosed = new Promise((r) => s.on("close", r));
    await Promise.all([t.close(), t.close()]);
    await sClosed;
    await new Promise((r) => setTimeout(r, 50));
    expect(server.sockets.size).toBe(0);
    const refused = await new Promise<string>((r) => {
      const c = net.connect({ host: "127.0.0.1", port: t.localPort });
      c.on("connect", () => r("connected"));
      c.on("error", (e: NodeJS.ErrnoException) => r(e.code ?? "error"));
    });
    expect(refused).toBe("ECONNREFUSED");
  });

  it("await using closes the tunnel", async () => {
    const svc = await service(echo);
    cleanups.push(svc.close);
    let port = 0;
    {
      await using t = await (await sandbox()).tunnel(svc.port);
      port = t.localPort;
      expect((await roundTrip(port, "x")).data.toString()).toBe("x");
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(server.sockets.size).toBe(0);
  });
});
