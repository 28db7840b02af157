/// <reference types="node" />
/**
 * TCP tunnels (Node only): a local `net.Server` whose connections become yamux streams over
 * one WebSocket to `{dataplane}/tunnel`. Loaded by `Sandbox.tunnel` with a dynamic import, so
 * the SDK's root entry stays free of Node built-ins.
 *
 * Per stream the client writes a 3-byte connect header (version 1, the remote port as a
 * big-endian u16) and reads one status byte (0 ok, 1 port not allowed, 2 dial failed,
 * 3 unsupported version); after a 0, raw bytes flow both ways, half-closes included.
 */
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import net, { type AddressInfo } from "node:net";
import { readExactly, YamuxSession, type YamuxStream } from "@sandbar/shared/yamux";
import { SandboxClientError, ValidationError } from "../errors.js";
import { TunnelError, TunnelStatus, type Tunnel, type TunnelOptions } from "../tunnel.js";
import type { WebSocketConstructor, WebSocketLike } from "../ws-stream.js";

/** Version byte of the connect header. */
const TUNNEL_VERSION = 1;
/** Give up opening the WebSocket after this long. */
const OPEN_TIMEOUT_MS = 30_000;
/** Give up on a stream whose status byte does not come within this long. */
const STATUS_TIMEOUT_MS = 30_000;
/** Ping the server this often; a ping unanswered by the next one ends the session. */
const KEEP_ALIVE_MS = 30_000;
/** How long an abandoned stream may take to finish before it is reset. */
const ABANDON_MS = 10_000;
/** How long close() waits for the WebSocket's closing handshake before cutting it. */
const CLOSE_WAIT_MS = 3_000;

/** What {@link openTunnel} needs from the sandbox. */
export interface OpenTunnelParams extends TunnelOptions {
  ctor: WebSocketConstructor;
  /** `ws(s)://.../dataplane/{id}/tunnel` */
  url: string;
  headers: Record<string, string>;
  remotePort: number;
}

/** The WebSocket surface used here: binary messages on top of {@link WebSocketLike}. */
type BinaryWebSocket = Omit<WebSocketLike, "send"> & {
  binaryType?: string;
  send(data: string | Uint8Array): void;
  /** `ws` only: drop the connection without the closing handshake. */
  terminate?: () => void;
};

/** One WebSocket with its yamux session. */
interface Link {
  ws: BinaryWebSocket;
  session: YamuxSession;
  /** Streams of this link not yet closed. */
  streams: number;
  /** No new streams go here (the WebSocket dropped, the server sent GoAway, or the tunnel closes). */
  retired: boolean;
  /** Resolves once the WebSocket closed. */
  closed: Promise<void>;
}

/**
 * Listen on `host:localPort` and forward each connection to `remotePort` in the sandbox.
 * Resolves once listening and the WebSocket is open; rejects (closing both) otherwise.
 */
export async function openTunnel(params: OpenTunnelParams): Promise<Tunnel> {
  const tunnel = new NodeTunnel(params);
  await tunnel.start();
  return tunnel;
}

class NodeTunnel extends EventEmitter implements Tunnel {
  readonly host: string;
  readonly remotePort: number;
  localPort: number;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly links = new Set<Link>();
  private readonly connecting = new Set<BinaryWebSocket>();
  /** The link new streams go to. */
  private currentLink: Link | undefined;
  /** The link being opened. */
  private pending: Promise<Link> | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly p: OpenTunnelParams) {
    super();
    this.host = p.host ?? "127.0.0.1";
    this.remotePort = p.remotePort;
    this.localPort = p.localPort ?? 0;
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => this.accept(sock));
  }

  async start(): Promise<void> {
    if (!Number.isInteger(this.remotePort) || this.remotePort < 1 || this.remotePort > 65535) {
      throw new ValidationError(`remote port must be an integer from 1 to 65535, not ${this.remotePort}`, undefined, undefined);
    }
    if (!Number.isInteger(this.localPort) || this.localPort < 0 || this.localPort > 65535) {
      throw new ValidationError(`local port must be an integer from 0 to 65535, not ${this.localPort}`, undefined, undefined);
    }
    const [listened, linked] = await Promise.allSettled([this.listen(), this.link()]);
    if (listened.status === "rejected" || linked.status === "rejected") {
      await this.close();
      throw listened.status === "rejected" ? listened.reason : (linked as PromiseRejectedResult).reason;
    }
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException): void => {
        this.server.off("listening", onListening);
        const where = `${this.host}:${this.localPort}`;
        const why =
          e.code === "EADDRINUSE"
            ? "the port is already in use (choose another local port, or 0 for a free one)"
            : e.code === "EACCES"
              ? "permission denied (ports below 1024 need privileges)"
              : e.code === "EADDRNOTAVAIL"
                ? "no such local address"
                : e.message;
        reject(new SandboxClientError(`cannot listen on ${where}: ${why}`, undefined, undefined));
      };
      const onListening = (): void => {
        this.server.off("error", onError);
        this.server.on("error", () => undefined);
        this.localPort = (this.server.address() as AddressInfo).port;
        resolve();
      };
      this.server.once("error", onError);
      this.server.once("listening", onListening);
      this.server.listen({ host: this.host, port: this.localPort });
    });
  }

  /** The open link, opening a WebSocket when there is none (the first, or the last one dropped). */
  private link(): Promise<Link> {
    if (this.currentLink && !this.currentLink.retired) return Promise.resolve(this.currentLink);
    this.pending ??= this.connect().then(
      (l) => {
        this.pending = undefined;
        this.currentLink = l;
        return l;
      },
      (e: unknown) => {
        this.pending = undefined;
        throw e;
      },
    );
    return this.pending;
  }

  private connect(): Promise<Link> {
    return new Promise<Link>((resolve, reject) => {
      const fail = (why: string): TunnelError => new TunnelError(`tunnel to sandbox port ${this.remotePort}: cannot open the tunnel WebSocket (${this.p.url}): ${why}`, this.remotePort, undefined);
      if (this.closing) {
        reject(fail("the tunnel is closed"));
        return;
      }
      const ws = new this.p.ctor(this.p.url, { headers: this.p.headers }) as unknown as BinaryWebSocket;
      binaryMessages(ws);
      this.connecting.add(ws);
      let markClosed!: () => void;
      const closed = new Promise<void>((r) => (markClosed = r));
      let link: Link | undefined;
      const timer = setTimeout(() => {
        reject(fail(`no answer within ${OPEN_TIMEOUT_MS / 1000}s`));
        ws.close();
      }, OPEN_TIMEOUT_MS);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        this.connecting.delete(ws);
        const session = new YamuxSession({
          client: true,
          send: (frame) => {
            if (ws.readyState !== 1) throw new Error("the tunnel WebSocket is not open");
            ws.send(frame);
          },
          keepAliveMs: KEEP_ALIVE_MS,
          // Large enough that a WebSocket round trip does not cap throughput (256 KiB did, at ~100 MB/s).
          maxStreamWindow: 4 * 1024 * 1024,
        });
        const l: Link = { ws, session, streams: 0, retired: false, closed };
        link = l;
        session.on("error", () => undefined); // 'close' follows
        session.on("close", () => this.shut(l));
        // GoAway: the server takes no new streams here; the next connection opens a new link.
        session.on("goaway", () => this.retire(l));
        if (this.closing) {
          reject(fail("the tunnel is closed"));
          this.shut(l);
          return;
        }
        this.links.add(l);
        resolve(l);
      });
      ws.addEventListener("message", (ev) => {
        const chunk = toBuffer(ev.data);
        if (!chunk || !link) return;
        try {
          link.session.receive(chunk);
        } catch {
          // A stream listener threw; the session closed itself.
        }
      });
      ws.addEventListener("error", (ev) => {
        if (link) return; // 'close' follows
        clearTimeout(timer);
        reject(fail(ev.message ?? "connection failed"));
      });
      ws.addEventListener("close", (ev) => {
        clearTimeout(timer);
        this.connecting.delete(ws);
        markClosed();
        if (!link) {
          reject(fail(`closed with code ${ev.code ?? 1006}${ev.reason ? `: ${ev.reason}` : ""}`));
          return;
        }
        this.links.delete(link);
        this.retire(link);
        link.session.close(new Error(`the tunnel WebSocket closed (${ev.code ?? 1006})`));
      });
    });
  }

  /** Send no new streams to `link`; close it once its last stream is done. */
  private retire(link: Link): void {
    link.retired = true;
    if (this.currentLink === link) this.currentLink = undefined;
    if (link.streams === 0) this.shut(link);
  }

  /** Close a link's session and WebSocket now. */
  private shut(link: Link): void {
    link.retired = true;
    link.session.close();
    if (link.ws.readyState <= 1) link.ws.close(1000, "tunnel closed");
  }

  /** A stream on the current link, opening a new link when the current one just became unusable (GoAway, closed). */
  private async openStream(): Promise<{ link: Link; stream: YamuxStream }> {
    for (let attempt = 0; ; attempt++) {
      const link = await this.link();
      try {
        return { link, stream: link.session.open() };
      } catch (e) {
        this.retire(link);
        if (attempt > 0) throw e;
      }
    }
  }

  private accept(sock: net.Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
    sock.on("error", () => undefined); // 'close' follows; forward() cuts the stream
    sock.setNoDelay(true);
    void this.forward(sock);
  }

  /** Open a stream for a local connection, check the status byte, then splice the two. */
  private async forward(sock: net.Socket): Promise<void> {
    let opened: { link: Link; stream: YamuxStream };
    try {
      opened = await this.openStream();
    } catch (e) {
      sock.destroy();
      if (!this.closing) this.report(e instanceof TunnelError ? e : new TunnelError(`tunnel to sandbox port ${this.remotePort}: ${(e as Error).message}`, this.remotePort, undefined));
      return;
    }
    const { link, stream } = opened;
    link.streams++;
    stream.once("close", () => {
      link.streams--;
      if (link.retired && link.streams === 0) this.shut(link);
    });
    stream.on("error", () => undefined);
    if (sock.destroyed || this.closing) {
      abandon(stream);
      sock.destroy();
      return;
    }
    // The local side may give up while we wait for the status: end the stream then.
    const early = (): void => abandon(stream);
    sock.once("close", early);
    const port = this.remotePort;
    stream.write(Buffer.from([TUNNEL_VERSION, port >> 8, port & 0xff]));
    const status = (await readExactly(stream, 1, STATUS_TIMEOUT_MS))?.[0];
    sock.off("close", early);
    if (sock.destroyed || this.closing) {
      abandon(stream);
      sock.destroy();
      return;
    }
    if (status !== TunnelStatus.OK) {
      abandon(stream);
      sock.destroy();
      if (status === undefined) {
        const why = link.session.closed ? "the tunnel WebSocket closed" : `no status from the server within ${STATUS_TIMEOUT_MS / 1000}s, or it closed the stream`;
        this.report(new TunnelError(`tunnel to sandbox port ${port}: ${why}`, port, undefined));
      } else {
        this.report(TunnelError.fromStatus(port, status));
      }
      return;
    }
    splice(sock, stream);
  }

  /** Emit 'error' only when someone listens (an unheard 'error' would throw). */
  private report(e: TunnelError): void {
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const listenerClosed = new Promise<void>((r) => this.server.close(() => r()));
      for (const s of this.sockets) s.destroy();
      for (const ws of this.connecting) ws.close();
      const links = [...this.links];
      for (const l of links) this.shut(l);
      await this.pending?.catch(() => undefined);
      this.currentLink = undefined;
      const wsClosed = Promise.all(links.map((l) => l.closed));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), CLOSE_WAIT_MS)));
      if ((await Promise.race([wsClosed, late])) === "late") {
        for (const l of links) l.ws.terminate?.();
      }
      clearTimeout(timer);
      await listenerClosed;
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Give up on a stream before it carries data: half-close it and drain the rest, so that it
 * closes with FIN both ways (the server answers a refusal with its status and FIN) rather
 * than a reset, which the server need not expect while it dials. A stream the server never
 * finishes is reset after a while.
 */
function abandon(stream: YamuxStream): void {
  if (stream.destroyed) return;
  if (!stream.writableEnded) stream.end();
  stream.resume();
  const timer = setTimeout(() => stream.destroy(), ABANDON_MS);
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}

/**
 * Pipe both ways. An end on either side becomes a half-close on the other; each side closes
 * itself once both of its directions are done. An error or reset on one side cuts the other.
 */
function splice(sock: net.Socket, stream: YamuxStream): void {
  const cut = (): void => {
    sock.destroy();
    stream.destroy();
  };
  sock.on("error", cut);
  stream.on("error", cut);
  // Closed before both directions finished: a reset (or a destroy) rather than an end.
  sock.on("close", () => {
    if (!(stream.readableEnded && stream.writableEnded)) stream.destroy();
  });
  stream.on("close", () => {
    if (!(stream.readableEnded && stream.writableFinished)) sock.destroy();
  });
  sock.pipe(stream);
  stream.pipe(sock);
}


/** Ask for Buffers (`ws`) or, failing that, ArrayBuffers (WHATWG WebSockets) for binary messages. */
function binaryMessages(ws: BinaryWebSocket): void {
  try {
    ws.binaryType = "nodebuffer";
  } catch {
    // not settable to that value
  }
  if (ws.binaryType !== "nodebuffer") ws.binaryType = "arraybuffer";
}

function toBuffer(data: unknown): Buffer | undefined {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return undefined; // text frames are not part of the protocol
}
