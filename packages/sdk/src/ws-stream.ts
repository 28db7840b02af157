/**
 * A WebSocket to a sandbox's `execute/ws` endpoint as an async queue of JSON messages, with
 * read backpressure (the socket is paused while the consumer lags) where the implementation
 * allows it.
 */

/** The WebSocket surface the SDK needs; `ws` and WHATWG WebSockets both have it. @example `const ws: WebSocketLike = new (await import("ws")).WebSocket(url)` */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (ev: { data?: unknown; code?: number; reason?: string; message?: string }) => void): void;
  /** `ws` only: stop reading from the socket (TCP backpressure). */
  pause?: () => void;
  resume?: () => void;
}

/** A constructor taking `(url, { headers })`, as `ws` and Node's undici WebSocket do. @example `new SandboxClient({ webSocket: (await import("ws")).WebSocket })` */
export type WebSocketConstructor = new (url: string, opts?: { headers?: Record<string, string> }) => WebSocketLike;

let cached: Promise<WebSocketConstructor | undefined> | undefined;

/** `ws` when it can be imported (Node), else a global WebSocket, else none. */
export function defaultWebSocket(): Promise<WebSocketConstructor | undefined> {
  cached ??= (async () => {
    try {
      const name = "ws";
      const mod = (await import(/* @vite-ignore */ name)) as { default?: unknown; WebSocket?: unknown };
      const ctor = (mod.WebSocket ?? mod.default) as WebSocketConstructor | undefined;
      if (typeof ctor === "function") return ctor;
    } catch {
      // not installed: fall through
    }
    const g = (globalThis as { WebSocket?: unknown }).WebSocket;
    return typeof g === "function" ? (g as WebSocketConstructor) : undefined;
  })();
  return cached;
}

/** Why a stream ended without an exit message. */
export class StreamClosed extends Error {
  constructor(
    readonly code: number,
    reason: string,
  ) {
    super(`WebSocket closed (${code}${reason ? `: ${reason}` : ""})`);
  }
}

/** Bytes of messages the consumer may lag behind by before the socket is paused. */
const HIGH_WATER = 1 << 20;

export type Message = Record<string, unknown> & { type?: string };

/** An open stream: iterate messages, send control messages, close. */
export class MessageStream implements AsyncIterable<Message> {
  private readonly queue: { msg: Message; size: number }[] = [];
  private queued = 0;
  private waiter: (() => void) | undefined;
  private ended: StreamClosed | undefined;
  private paused = false;

  private constructor(private readonly ws: WebSocketLike) {
    ws.addEventListener("message", (ev) => {
      const raw = typeof ev.data === "string" ? ev.data : String(ev.data);
      try {
        this.queue.push({ msg: JSON.parse(raw) as Message, size: raw.length });
        this.queued += raw.length;
      } catch {
        return;
      }
      if (this.queued > HIGH_WATER && ws.pause && !this.paused) {
        this.paused = true;
        ws.pause();
      }
      this.wake();
    });
    ws.addEventListener("close", (ev) => {
      this.ended = new StreamClosed(ev.code ?? 1006, ev.reason ?? "");
      this.wake();
    });
    ws.addEventListener("error", () => undefined);
  }

  /** Open `url`, wait for the socket, send `first`. */
  static open(Ctor: WebSocketConstructor, url: string, headers: Record<string, string>, first: Message, timeoutMs = 30_000): Promise<MessageStream> {
    return new Promise((resolve, reject) => {
      const ws = new Ctor(url, { headers });
      const stream = new MessageStream(ws);
      const timer = setTimeout(() => {
        reject(new StreamClosed(1006, "timed out opening the WebSocket"));
        ws.close();
      }, timeoutMs);
      let opened = false;
      ws.addEventListener("open", () => {
        opened = true;
        clearTimeout(timer);
        ws.send(JSON.stringify(first));
        resolve(stream);
      });
      const fail = (ev: { code?: number; reason?: string; message?: string }): void => {
        if (opened) return;
        clearTimeout(timer);
        reject(new StreamClosed(ev.code ?? 1006, ev.reason ?? ev.message ?? "could not open the WebSocket"));
      };
      ws.addEventListener("error", fail);
      ws.addEventListener("close", fail);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  send(msg: Message): boolean {
    if (this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close(code = 1000): void {
    if (this.ws.readyState <= 1) this.ws.close(code);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Message> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        this.queued -= next.size;
        if (this.paused && this.queued < HIGH_WATER / 4) {
          this.paused = false;
          this.ws.resume?.();
        }
        yield next.msg;
        continue;
      }
      if (this.ended) throw this.ended;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }
}
