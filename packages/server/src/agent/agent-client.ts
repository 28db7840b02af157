import http from "node:http";
import type { Socket } from "node:net";
import type { Duplex, Readable } from "node:stream";
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
/**
 * Idle connections to the agent itself close after this long: far below the agent's own idle
 * timeout (5 min), so the agent never closes a connection we are about to reuse.
 */
const AGENT_POOL_IDLE_MS = 4000;
/** Connection errors on a reused socket after which an idempotent request is sent again. */
const RETRYABLE = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

/**
 * Live clients by agent address. An address (a sandbox's /30) has one owner at a time: a
 * client made for an address closes the older ones, and the network manager closes them all
 * when it frees or hands out the address. A connection kept alive from a previous life of the
 * address is therefore never reused: such a socket leads to a sandbox that no longer exists
 * and hangs, no reset ever arriving, until the kernel gives up on it (ETIMEDOUT).
 */
const live = new Map<string, Set<AgentClient>>();

/** Close every client of the agent at `host` (any port); `reason` fails their requests. */
export function closeAgentClients(host: string, reason: string): void {
  for (const [key, set] of live) {
    if (key.slice(0, key.lastIndexOf(":")) !== host) continue;
    for (const c of [...set]) c.close(reason);
  }
}

/**
 * Keep-alive pool of one client: idle sockets expire after AGENT_POOL_IDLE_MS (Node's agent
 * destroys a free socket whose timeout fires); a reused socket gets the request's own timeout
 * or none, never the idle one.
 */
class AgentPool extends http.Agent {
  constructor(opts: http.AgentOptions) {
    super(opts);
    // After Node's own 'free' listener, which has either parked the socket (and cleared its
    // timeout) or handed it to a queued request.
    this.on("free", (socket: Socket) => {
      if (Object.values(this.freeSockets).some((list) => list?.includes(socket))) socket.setTimeout(AGENT_POOL_IDLE_MS);
    });
  }

  override reuseSocket(socket: Duplex, req: http.ClientRequest): void {
    (socket as Socket).setTimeout(0);
    super.reuseSocket(socket, req);
  }
}

/** Whether sending the request again cannot run anything twice. */
function idempotent(req: AgentRequest): boolean {
  if (req.body !== undefined && typeof req.body !== "string" && !Buffer.isBuffer(req.body)) return false; // a stream cannot be replayed
  if (req.method === "GET" || req.method === "HEAD") return true;
  if (req.method !== "POST") return false;
  // Sessions are get-or-create by command_id; close-stdin, kill and resize are idempotent too.
  // /exec and /sessions/{id}/input are not.
  return req.path === "/sessions" || /^\/sessions\/[^/]+\/(close-stdin|kill|resize)$/.test(req.path);
}

/** HTTP client of one sandbox's agent (see docs/agent-protocol.md). */
export class AgentClient {
  private readonly inflight = new Set<http.ClientRequest>();
  /** Raw connections to sandbox ports (tunnels, service URLs); cut when the sandbox stops. */
  private readonly dialed = new Set<Socket>();
  /** Keep-alive HTTP pools per sandbox port (service URLs), over dialed connections. */
  private readonly portPools = new Map<number, http.Agent>();
  private closedReason: string | undefined;
  /**
   * This client's own keep-alive pool (a new connection into gVisor's netstack costs about a
   * millisecond per request). It dies with the client, and a client dies with the sandbox's
   * life at its address (see `live`), so no socket outlives the agent it was made to.
   */
  private readonly pool = new AgentPool({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: 64, maxFreeSockets: 8, scheduling: "lifo" });
  private readonly key: string;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly token: string,
  ) {
    this.key = `${host}:${port}`;
    const set = live.get(this.key) ?? new Set<AgentClient>();
    for (const older of set) older.close("the sandbox at this address restarted");
    set.add(this);
    live.set(this.key, set);
  }

  /** Send a request and return the raw response (status not checked). */
  request(req: AgentRequest): Promise<http.IncomingMessage> {
    if (this.closedReason) return Promise.reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
    return this.send(req, idempotent(req));
  }

  private send(req: AgentRequest, mayRetry: boolean): Promise<http.IncomingMessage> {
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
      r.on("error", (e: NodeJS.ErrnoException) => {
        if (this.closedReason) {
          reject(new SandbarError("SANDBOX_NOT_READY", this.closedReason));
          return;
        }
        // A kept-alive connection that died while idle: once more on a fresh one.
        if (mayRetry && r.reusedSocket && RETRYABLE.has(e.code ?? "") && !req.signal?.aborted) {
          this.send(req, false).then(resolve, reject);
          return;
        }
        reject(new SandbarError("SANDBOX_CONNECTION_ERROR", `cannot reach the sandbox agent: ${e.message}`));
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

  /**
   * Close the idle kept-alive connections to the agent, and the idle service connections it
   * dialed: gVisor refuses to checkpoint a sandbox that has open TCP connections. Requests in
   * flight are not touched; the next request opens a new connection.
   */
  dropIdleConnections(): void {
    for (const pool of [this.pool, ...this.portPools.values()]) {
      for (const list of Object.values(pool.freeSockets)) for (const sock of list ?? []) sock.destroy();
    }
  }

  /** Fail every request in flight and refuse new ones (the sandbox stopped or died). */
  close(reason: string): void {
    this.closedReason = reason;
    const set = live.get(this.key);
    set?.delete(this);
    if (set?.size === 0) live.delete(this.key);
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
