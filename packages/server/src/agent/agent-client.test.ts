import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentClient, closeAgentClients, readAll } from "./agent-client.js";

/** A stand-in agent: answers JSON, counts connections, and can reset the next request. */
describe("AgentClient connection reuse", () => {
  let server: http.Server;
  let port = 0;
  const sockets = new Set<Socket>();
  let connections = 0;
  let resetNext = 0;
  let handled = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (resetNext > 0) {
        resetNext--;
        // A connection that dies under a request (as one to a vanished sandbox would).
        req.socket.resetAndDestroy();
        return;
      }
      handled++;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ path: req.url, method: req.method }));
    });
    server.on("connection", (s) => {
      connections++;
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const get = async (c: AgentClient, path = "/healthz"): Promise<string> => readAll(await c.request({ method: "GET", path }));

  it("reuses one connection for requests one after another", async () => {
    const c = new AgentClient("127.0.0.1", port, "t");
    const before = connections;
    for (let i = 0; i < 5; i++) expect(JSON.parse(await get(c))).toEqual({ path: "/healthz", method: "GET" });
    expect(connections - before).toBe(1);
    c.close("done");
  });

  it("sends an idempotent request again when its reused connection is reset, but not /exec", async () => {
    const c = new AgentClient("127.0.0.1", port, "t");
    await get(c);
    const before = handled;
    resetNext = 1;
    expect(JSON.parse(await get(c, "/sessions/x/stream"))).toEqual({ path: "/sessions/x/stream", method: "GET" });
    expect(handled - before).toBe(1);
    resetNext = 1;
    expect(JSON.parse(await readAll(await c.request({ method: "POST", path: "/sessions", body: "{}" })))).toEqual({ path: "/sessions", method: "POST" });
    resetNext = 1;
    await expect(c.json("POST", "/exec", { command: "true" })).rejects.toMatchObject({ code: "SANDBOX_CONNECTION_ERROR" });
    c.close("done");
  });

  it("has one live client per address: a new one, or the address being freed, closes the others", async () => {
    const a = new AgentClient("127.0.0.1", port, "t");
    await get(a);
    const b = new AgentClient("127.0.0.1", port, "t");
    await expect(get(a)).rejects.toMatchObject({ code: "SANDBOX_NOT_READY", message: "the sandbox at this address restarted" });
    expect(JSON.parse(await get(b)).path).toBe("/healthz");
    closeAgentClients("127.0.0.1", "the sandbox's network was removed");
    await expect(get(b)).rejects.toMatchObject({ code: "SANDBOX_NOT_READY", message: "the sandbox's network was removed" });
    // Another address is not touched.
    const other = new AgentClient("127.0.0.2", port, "t");
    closeAgentClients("127.0.0.1", "x");
    await expect(get(other)).rejects.not.toMatchObject({ code: "SANDBOX_NOT_READY" });
    other.close("done");
  });
});
