import type { FastifyInstance } from "fastify";
import type { WebSocket } from "ws";
import type { IncomingMessage } from "node:http";
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { ERROR_TABLE, type ErrorCode } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { AgentClient } from "../agent/agent-client.js";
import { agentError, readAll } from "../agent/agent-client.js";
import { FrameDecoder, type Frame } from "../agent/stream-frames.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";

/** Pause reading from the agent while this much is queued to a slow client. */
const HIGH_WATER = 1 << 20;
const LOW_WATER = 256 << 10;

type ClientMessage = Record<string, unknown> & { type?: unknown };

/** Sockets open now; shutdown closes them with 1001 so clients reconnect elsewhere. */
export const openSockets = new Set<WebSocket>();

/**
 * WS {dataplane}/execute/ws: the LangSmith streaming protocol, bridged to the agent's
 * session API. Sessions live in the agent, so a dropped socket or a server restart
 * loses nothing: the client reconnects with its command_id and offsets.
 */
export function wsExecuteRoutes(app: FastifyInstance, sandboxes: SandboxService, log: Logger): void {
  app.get(
    "/dataplane/:id/execute/ws",
    {
      websocket: true,
      // Refuse before the upgrade, with the usual status and body, when the sandbox is unknown or not running.
      preValidation: async (req) => {
        const { id } = parse(dataplaneParams, req.params, "params");
        await sandboxes.agentFor(req.workspaceId, id);
        // A plain request (no Upgrade) got @fastify/websocket's bare 404 without a JSON body.
        if (!req.ws) throw new SandbarError("ROUTE_NOT_FOUND", `${req.method} /dataplane/{id}/execute/ws takes a WebSocket upgrade`);
      },
    },
    async (socket, req) => {
    openSockets.add(socket);
    socket.on("close", () => openSockets.delete(socket));
    let bridge: Bridge | undefined;
    // Messages can arrive before the agent lookup resolves; queue them.
    const early: ClientMessage[] = [];
    socket.on("message", (raw: Buffer) => {
      let msg: ClientMessage;
      try {
        msg = JSON.parse(raw.toString("utf8")) as ClientMessage;
      } catch {
        sendError(socket, "CommandError", "message is not JSON");
        return;
      }
      if (bridge) bridge.handle(msg);
      else early.push(msg);
    });
    try {
      const { id } = parse(dataplaneParams, req.params, "params");
      const { agent } = await sandboxes.agentFor(req.workspaceId, id);
      bridge = new Bridge(socket, agent, log.child({ sandboxId: id }), () => sandboxes.touch(id));
      for (const m of early.splice(0)) bridge.handle(m);
    } catch (e) {
      sendError(socket, "CommandError", e instanceof Error ? e.message : String(e));
      socket.close(1000);
    }
  });
}

/** Wire error types of error frames, with the stable code sandbar clients switch on. */
const FRAME_CODES: Record<string, ErrorCode> = {
  CommandTimeout: "COMMAND_TIMEOUT",
  CommandNotFound: "COMMAND_NOT_FOUND",
  SessionExpired: "SESSION_EXPIRED",
  CommandError: "COMMAND_ERROR",
};

function sendError(socket: WebSocket, errorType: string, error: string): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: "error", error_type: errorType, error, code: FRAME_CODES[errorType] ?? "COMMAND_ERROR" }));
}

/** One client socket attached to (at most) one agent session. */
class Bridge {
  private commandId: string | undefined;
  private stream: IncomingMessage | undefined;
  private abort = new AbortController();
  private pending = 0;
  private paused = false;
  private attached = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly agent: AgentClient,
    private readonly log: Logger,
    /** Marks the sandbox active (a streaming command counts as activity for idle_ttl). */
    private readonly touch: () => void,
  ) {
    socket.on("close", () => this.abort.abort());
  }

  handle(msg: ClientMessage): void {
    this.touch();
    void this.dispatch(msg).catch((e: unknown) => {
      const err = e instanceof SandbarError ? e : new SandbarError("COMMAND_ERROR", e instanceof Error ? e.message : String(e));
      sendError(this.socket, wireType(err), err.message);
      if (!this.attached) this.socket.close(1000);
    });
  }

  private async dispatch(msg: ClientMessage): Promise<void> {
    switch (msg.type) {
      case "execute":
        return this.execute(msg);
      case "reconnect":
        return this.reconnect(msg);
      case "input":
        return this.post("input", Buffer.from(String(msg.data ?? ""), "utf8"));
      case "close_stdin":
        return this.post("close-stdin").catch(ignoreExited);
      case "kill":
        return this.post("kill").catch(ignoreExited);
      case "resize":
        return this.post("resize", JSON.stringify({ cols: Number(msg.cols ?? 80), rows: Number(msg.rows ?? 24) }));
      default:
        throw new SandbarError("COMMAND_ERROR", `unknown message type ${String(msg.type)}`);
    }
  }

  private async execute(msg: ClientMessage): Promise<void> {
    if (this.attached) throw new SandbarError("COMMAND_ERROR", "this socket already carries a command");
    if (typeof msg.command !== "string" || msg.command === "") throw new SandbarError("COMMAND_ERROR", "execute needs a command");
    // As on POST /execute: the agent answers a NUL byte with a 500 (a ConnectionError frame).
    if (msg.command.includes("\0")) throw new SandbarError("COMMAND_ERROR", "the command must not contain NUL");
    const commandId = typeof msg.command_id === "string" && msg.command_id ? msg.command_id : randomUUID();
    const body = {
      command_id: commandId,
      command: msg.command,
      shell: typeof msg.shell === "string" ? msg.shell : "/bin/bash",
      env: isStringMap(msg.env) ? msg.env : undefined,
      cwd: typeof msg.cwd === "string" ? msg.cwd : undefined,
      timeout_seconds: num(msg.timeout_seconds, 60),
      idle_timeout_seconds: num(msg.idle_timeout_seconds, 300),
      kill_on_disconnect: msg.kill_on_disconnect === true,
      ttl_seconds: num(msg.ttl_seconds, 600),
      pty: msg.pty === true,
      cols: num(msg.cols, 80),
      rows: num(msg.rows, 24),
    };
    this.attached = true;
    this.commandId = commandId;
    let res: IncomingMessage;
    try {
      // One round trip: the agent creates the session, closes its stdin when asked and answers
      // with its stream from offset 0.
      const payload = JSON.stringify({ ...body, close_stdin: msg.close_stdin === true, stream: true });
      res = await this.agent.request({
        method: "POST",
        path: "/sessions",
        body: payload,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
        signal: this.abort.signal,
      });
      if ((res.statusCode ?? 500) >= 400) throw agentError(res.statusCode ?? 500, await readAll(res));
      if (!isFrameStream(res)) {
        // An agent from before that (a sandbox started by an older server): JSON, then the
        // separate close-stdin and stream requests.
        const created = JSON.parse((await readAll(res)) || "{}") as { created?: boolean };
        if (msg.close_stdin === true && created.created !== false) {
          // A quick command may have exited already; its stdin is closed either way.
          await this.post("close-stdin").catch(ignoreExited);
        }
        res = await this.openStream(0, 0);
      }
    } catch (e) {
      this.attached = false;
      throw e;
    }
    this.pipe(res);
  }

  private async reconnect(msg: ClientMessage): Promise<void> {
    if (this.attached) throw new SandbarError("COMMAND_ERROR", "this socket already carries a command");
    if (typeof msg.command_id !== "string" || !msg.command_id) throw new SandbarError("COMMAND_ERROR", "reconnect needs a command_id");
    this.attached = true;
    this.commandId = msg.command_id;
    this.pipe(await this.openStream(num(msg.stdout_offset, 0), num(msg.stderr_offset, 0)));
  }

  private async openStream(stdoutOffset: number, stderrOffset: number): Promise<IncomingMessage> {
    const id = encodeURIComponent(this.commandId ?? "");
    const res = await this.agent.request({
      method: "GET",
      path: `/sessions/${id}/stream?stdout_offset=${stdoutOffset}&stderr_offset=${stderrOffset}`,
      signal: this.abort.signal,
    });
    if ((res.statusCode ?? 500) !== 200) {
      const text = await readAll(res);
      if (res.statusCode === 404) throw new SandbarError("COMMAND_NOT_FOUND", `Command not found: ${this.commandId ?? ""}`);
      if (res.statusCode === 410) throw new SandbarError("SESSION_EXPIRED", `Session expired: ${this.commandId ?? ""}`);
      throw agentError(res.statusCode ?? 500, text);
    }
    return res;
  }

  /** Forward the agent's frames to the client until the stream ends. */
  private pipe(res: IncomingMessage): void {
    this.stream = res;
    const frames = res.pipe(new FrameDecoder());
    let exited = false;
    frames.on("data", (f: Frame) => {
      if (f.type === "exit") exited = true;
      this.forward(f);
    });
    frames.on("error", (e) => this.log.warn({ err: e.message }, "agent stream decode error"));
    res.on("error", () => undefined);
    frames.on("end", () => {
      if (this.socket.readyState !== this.socket.OPEN) return;
      if (exited) this.socket.close(1000);
      else this.socket.close(1011, "agent stream ended");
    });
  }

  private forward(f: Frame): void {
    this.touch();
    let out: Record<string, unknown>;
    switch (f.type) {
      case "started":
        out = { type: "started", command_id: this.commandId, pid: f.pid };
        break;
      case "stdout":
      case "stderr":
        out = { type: f.type, data: f.data.toString("utf8"), offset: f.offset };
        break;
      case "exit":
        out = { type: "exit", exit_code: f.exitCode, reason: f.info.reason };
        break;
      case "error": {
        const errorType = f.info.error ?? "CommandError";
        out = { type: "error", error_type: errorType, error: f.info.message ?? "command failed", code: FRAME_CODES[errorType] ?? "COMMAND_ERROR" };
        break;
      }
    }
    this.send(JSON.stringify(out));
  }

  /** Send with backpressure: stop reading the agent while the client lags. */
  private send(text: string): void {
    if (this.socket.readyState !== this.socket.OPEN) return;
    const size = Buffer.byteLength(text);
    this.pending += size;
    this.socket.send(text, () => {
      this.pending -= size;
      if (this.paused && this.pending < LOW_WATER) {
        this.paused = false;
        this.stream?.resume();
      }
    });
    if (!this.paused && this.pending > HIGH_WATER) {
      this.paused = true;
      this.stream?.pause();
    }
  }

  private async post(action: string, body?: Buffer | string): Promise<void> {
    if (!this.commandId) throw new SandbarError("COMMAND_ERROR", `${action} before execute or reconnect`);
    const res = await this.agent.request({ method: "POST", path: `/sessions/${encodeURIComponent(this.commandId)}/${action}`, body: body ?? "" });
    const text = await readAll(res);
    // 409: the command already exited (input, close-stdin, kill after the end are no-ops).
    if (res.statusCode === 409) throw new SandbarError("COMMAND_ERROR", "the command has already exited", undefined, { conflict: true });
    if ((res.statusCode ?? 500) >= 400) throw agentError(res.statusCode ?? 500, text);
  }
}

/** An agent answer carrying stream frames rather than JSON. */
function isFrameStream(res: IncomingMessage): boolean {
  return (res.headers["content-type"] ?? "").startsWith("application/octet-stream");
}

function wireType(e: SandbarError): string {
  const wire = ERROR_TABLE[e.code].wireType;
  return wire in FRAME_CODES ? wire : "CommandError";
}

/** Kill or close-stdin after the command ended: nothing left to do. */
function ignoreExited(e: unknown): void {
  if (!(e instanceof SandbarError && e.extra?.conflict === true)) throw e;
}

function num(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

function isStringMap(v: unknown): v is Record<string, string> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string");
}
