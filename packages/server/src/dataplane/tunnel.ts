import type { FastifyInstance } from "fastify";
import type { WebSocket } from "ws";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { readExactly, YamuxSession } from "@sandbar/shared/yamux";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { AgentClient } from "../agent/agent-client.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";
import { openSockets } from "./ws-execute.js";

/** Connect header: version byte, then the port as a big-endian u16. */
export const TUNNEL_VERSION = 1;
/** Status byte answered on each stream before any data. */
export const TunnelStatus = { OK: 0, PORT_NOT_ALLOWED: 1, DIAL_FAILED: 2, UNSUPPORTED_VERSION: 3 } as const;

/** Receive window per tunnel stream: what one slow consumer may have buffered. */
const TUNNEL_STREAM_WINDOW = 4 * 1024 * 1024;
/** Bytes one tunnel socket may have queued towards a client that does not read. */
const MAX_QUEUED_BYTES = 128 * 1024 * 1024;
/** A client that sends no connect header within this time loses the stream. */
const HEADER_TIMEOUT_MS = 10_000;

/**
 * WS {dataplane}/tunnel: TCP tunnels as yamux streams over binary WebSocket messages
 * (the LangSmith protocol). Each stream starts with a 3-byte connect header; the server
 * answers one status byte and then relays raw bytes to the port inside the sandbox, dialed
 * by the agent. Many streams share one socket; each has its own flow control.
 */
export function tunnelRoutes(app: FastifyInstance, sandboxes: SandboxService, log: Logger, agentPort: number): void {
  app.get(
    "/dataplane/:id/tunnel",
    {
      websocket: true,
      preValidation: async (req) => {
        const { id } = parse(dataplaneParams, req.params, "params");
        await sandboxes.agentFor(req.workspaceId, id);
        // A plain request (no Upgrade) got @fastify/websocket's bare 404 without a JSON body.
        if (!req.ws) throw new SandbarError("ROUTE_NOT_FOUND", `${req.method} /dataplane/{id}/tunnel takes a WebSocket upgrade`);
      },
    },
    (socket: WebSocket, req) => {
      openSockets.add(socket);
      const { id } = parse(dataplaneParams, req.params, "params");
      const slog = log.child({ sandboxId: id, component: "tunnel" });
      const session = new YamuxSession({
        client: false,
        send: (frame) => {
          if (socket.readyState !== socket.OPEN) return;
          // Honest clients keep this under their windows; one that grants endless windows and
          // reads nothing must not grow the server's memory without bound.
          if (socket.bufferedAmount > MAX_QUEUED_BYTES) {
            slog.warn({ queued: socket.bufferedAmount }, "tunnel client is not reading; closing the tunnel");
            socket.terminate();
            return;
          }
          socket.send(frame, { binary: true });
        },
        keepAliveMs: 30_000,
        // A 256 KiB window over a WebSocket round trip caps a stream near 100 MB/s.
        maxStreamWindow: TUNNEL_STREAM_WINDOW,
      });
      socket.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
        const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
        session.receive(chunk);
      });
      socket.on("close", () => {
        openSockets.delete(socket);
        session.close();
      });
      socket.on("error", () => socket.terminate());
      session.on("error", (e: Error) => slog.debug({ err: e.message }, "tunnel session error"));
      session.on("close", () => {
        if (socket.readyState === socket.OPEN) socket.close(1000, "tunnel closed");
      });
      session.on("stream", (stream: Duplex) => {
        // A client may reset a stream at any moment (even before it is relayed).
        stream.on("error", () => stream.destroy());
        serveStream(stream, () => sandboxes.agentFor(req.workspaceId, id).then((r) => r.agent), agentPort, () => sandboxes.touch(id)).catch((e: unknown) => {
          slog.debug({ err: (e as Error).message }, "tunnel stream failed");
          stream.destroy();
        });
      });
    },
  );
}

/** Read the connect header, dial, answer the status byte, then relay. */
async function serveStream(stream: Duplex, agentOf: () => Promise<AgentClient>, agentPort: number, touch: () => void): Promise<void> {
  const header = await readExactly(stream, 3, HEADER_TIMEOUT_MS);
  if (!header) {
    stream.destroy();
    return;
  }
  if (header[0] !== TUNNEL_VERSION) {
    stream.end(Buffer.from([TunnelStatus.UNSUPPORTED_VERSION]));
    return;
  }
  const port = header.readUInt16BE(1);
  // The agent's own port is not a service: its API is for the server only.
  if (port === 0 || port === agentPort) {
    stream.end(Buffer.from([TunnelStatus.PORT_NOT_ALLOWED]));
    return;
  }
  let target;
  try {
    target = await (await agentOf()).dial(port);
  } catch (e) {
    if (!(e instanceof SandbarError)) throw e;
    if (!stream.destroyed) stream.end(Buffer.from([TunnelStatus.DIAL_FAILED]));
    return;
  }
  if (stream.destroyed) {
    target.destroy(); // reset by the client while the port was dialed
    return;
  }
  // Bytes moving are activity (keep-alive pings are not): the idle timer must not fire.
  stream.on("data", touch);
  target.on("data", touch);
  stream.write(Buffer.from([TunnelStatus.OK]));
  const done = (): void => {
    stream.destroy();
    target.destroy();
  };
  stream.on("error", done);
  target.on("error", done);
  // Half-close travels both ways (pipe ends the other side on end); each side closes
  // itself once both directions are done. A reset or a dead session cuts the target.
  stream.pipe(target);
  target.pipe(stream);
  // A reset (not a clean end) cuts the target; a clean end lets its last writes drain.
  stream.on("close", () => {
    if (!stream.readableEnded) target.destroy();
  });
  target.on("close", () => {
    if (!stream.writableEnded) stream.end();
  });
}
