import http from "node:http";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import type { ErrorCode } from "@sandbar/shared";
import { SandbarError } from "../util/errors.js";


const AGENT_ERRORS: Record<string, ErrorCode> = {
  FileNotFound: "FILE_NOT_FOUND",
  NoSpace: "NO_SPACE",
  PermissionDenied: "PERMISSION_DENIED",
  IsADirectory: "IS_A_DIRECTORY",
  NotADirectory: "FILE_NOT_FOUND",
  CommandNotFound: "COMMAND_NOT_FOUND",
  SessionExpired: "SESSION_EXPIRED",
  DialFailed: "SERVICE_UNAVAILABLE",
};

/** Result of the agent's blocking exec. */
export interface AgentExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  timed_out: boolean;
  truncated: boolean;
}

export interface AgentRequest {
  method: string;
  path: string;
  headers?: http.OutgoingHttpHeaders;
  body?: Buffer | string | Readable;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Idle keep-alive connections to sandbox ports close after this long. */
const PORT_POOL_IDLE_MS = 4000;
/** How long connecting to an agent may take before the sandbox counts as unreachable. */
const CONNECT_TIMEOUT_MS = 5000;

/** HTTP client of one sandbox's agent (see docs/agent-protocol.md). */
export class AgentClient {
  private readonly inflight = new Set<http.ClientRequest>();
  /** Raw connections to sandbox ports (tunnels, service URLs); cut when the sandbox stops. */
  private readonly dialed = new Set<Socket>();
  /** Keep-alive HTTP pools per sandbox port (service URLs), over dialed connections. */
  private readonly portPools = new Map<number, http.Agent>();
  private closedReason: string | undefined;
  /**
   * This client's own connection pool, without keep-alive: under parallel load a reused
   * socket to a restarted sandbox was seen to hang until ETIMEDOUT, while a fresh connection
   * over the veth costs about a millisecond. Destroyed with the client.
   */
  private readonly pool = new http.Agent({ keepAlive: false, maxSockets: 64 });

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly token: string,
  ) {}

  /** Send a request and return the raw response (status not checked). */
  request(req: AgentRequest): Promise<http.IncomingMessage> {
    if (this.closedReason) return Promise.reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
    return new Promise((resolve, reject) => {
      const r = http.request(
        {
          host: this.host,
          port: this.port,
          method: req.method,
          path: req.path,
          agent: this.pool,
          headers: { authorization: `Bearer ${this.token}`, ...req.headers },
          timeout: req.timeoutMs,
          signal: req.signal,
        },
        resolve,
      );
      this.inflight.add(r);
      r.on("close", () => this.inflight.delete(r));
      r.on("socket", (sock) => {
        if (!sock.connecting) return;
        const timer = setTimeout(() => r.destroy(new Error("connect timed out")), CONNECT_TIMEOUT_MS);
        sock.once("connect", () => clearTimeout(timer));
        sock.once("close", () => clearTimeout(timer));
      });
      r.on("timeout", () => r.destroy(new Error("agent request timed out")));
      r.on("error", (e) => {
        if (this.closedReason) reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
        else reject(new SandbarError("SANDBOX_CONNECTION_ERROR", `cannot reach the sandbox agent: ${e.message}`));
      });
      const body = req.body;
      if (body === undefined) r.end();
      else if (typeof body === "string" || Buffer.isBuffer(body)) r.end(body);
      else {
        body.on("error", (e) => r.destroy(e));
        body.pipe(r);
      }
    });
  }

  /**
   * A TCP connection to `port` inside the sandbox, made by the agent (so services bound to
   * the sandbox's loopback are reachable too): GET /dial upgraded to raw bytes.
   */
  dial(port: number, timeoutMs = 10_000): Promise<Socket> {
    if (this.closedReason) return Promise.reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
    return new Promise((resolve, reject) => {
      const r = http.request({
        host: this.host,
        port: this.port,
        method: "GET",
        path: `/dial?port=${port}`,
        agent: false,
        headers: { authorization: `Bearer ${this.token}`, connection: "Upgrade", upgrade: "tcp" },
        timeout: timeoutMs,
      });
      r.on("upgrade", (_res, socket, head) => {
        r.setTimeout(0);
        socket.setTimeout(0);
        socket.setNoDelay(true);
        if (head.length) socket.unshift(head);
        if (this.closedReason) {
          socket.destroy();
          reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
          return;
        }
        this.dialed.add(socket);
        socket.once("close", () => this.dialed.delete(socket));
        resolve(socket);
      });
      r.on("response", (res) => {
        readAll(res).then(
          (text) => reject(agentError(res.statusCode ?? 502, text)),
          (e: Error) => reject(new SandbarError("SANDBOX_CONNECTION_ERROR", e.message)),
        );
      });
      r.on("timeout", () => r.destroy(new Error("dial timed out")));
      r.on("error", (e) => {
        if (this.closedReason) reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
        else reject(new SandbarError("SANDBOX_CONNECTION_ERROR", `cannot reach the sandbox agent: ${e.message}`));
      });
      r.end();
    });
  }

  /**
   * An HTTP agent whose connections to `port` inside the sandbox are dialed by the agent and
   * kept alive between requests (a dial costs a connection to the agent and one inside the
   * sandbox). Idle connections close after a few seconds; all of them when this client closes.
   */
  portPool(port: number): http.Agent {
    let pool = this.portPools.get(port);
    if (!pool) {
      pool = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 16, timeout: PORT_POOL_IDLE_MS });
      const dial = (): Promise<Socket> => this.dial(port);
      pool.createConnection = ((_opts: unknown, cb: (err: Error | null, sock?: Socket) => void) => {
        dial().then((sock) => cb(null, sock), (e: Error) => cb(e));
        return undefined;
      }) as unknown as typeof pool.createConnection;
      this.portPools.set(port, pool);
    }
    return pool;
  }

  /** Fail every request in flight and refuse new ones (the sandbox stopped or died). */
  close(reason: string): void {
    this.closedReason = reason;
    for (const r of this.inflight) r.destroy(new Error(reason));
    this.inflight.clear();
    for (const sock of this.dialed) sock.destroy();
    this.dialed.clear();
    for (const pool of this.portPools.values()) pool.destroy();
    this.portPools.clear();
    this.pool.destroy();
  }

  /** JSON request; agent errors become SandbarErrors with stable codes. */
  async json<T>(method: string, path: string, body?: unknown, timeoutMs?: number, signal?: AbortSignal): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const res = await this.request({
      method,
      path,
      body: payload,
      headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {},
      timeoutMs,
      signal,
    });
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 400) throw agentError(res.statusCode ?? 500, text);
    return (text ? JSON.parse(text) : {}) as T;
  }

  async health(timeoutMs = 1000): Promise<boolean> {
    try {
      const res = await this.request({ method: "GET", path: "/healthz", timeoutMs });
      await readAll(res);
      return res.statusCode === 200;
    } catch {
      return false;
    }
  }

  exec(body: { command: string; shell: string; env?: Record<string, string>; cwd?: string; timeout_seconds: number; user?: string }, signal?: AbortSignal): Promise<AgentExecResult> {
    // The agent enforces the command timeout; ours only guards against a dead agent.
    const guard = body.timeout_seconds > 0 ? (body.timeout_seconds + 30) * 1000 : undefined;
    return this.json<AgentExecResult>("POST", "/exec", body, guard, signal);
  }
}

export function readAll(res: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

/** Map an agent error response to a SandbarError. */
export function agentError(status: number, text: string): SandbarError {
  let type = "";
  let message = text.slice(0, 500);
  try {
    const j = JSON.parse(text) as { error?: string; message?: string };
    type = j.error ?? "";
    message = j.message ?? message;
  } catch {
    // not JSON: keep the text
  }
  const code = AGENT_ERRORS[type];
  if (code) return new SandbarError(code, message);
  if (status === 400) return new SandbarError("COMMAND_ERROR", message || "the agent rejected the request");
  return new SandbarError("SANDBOX_CONNECTION_ERROR", `sandbox agent error (${status}): ${message}`);
}
