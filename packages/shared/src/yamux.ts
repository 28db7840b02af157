/**
 * A HashiCorp yamux implementation (https://github.com/hashicorp/yamux/blob/master/spec.md)
 * over any reliable, ordered byte transport (a TCP socket, binary WebSocket messages, ...).
 *
 * Imported as `@sandbar/shared/yamux`, never from the package root: it needs Node built-ins.
 *
 * Framing: every frame is a 12-byte big-endian header (version 0, type, flags, stream id,
 * length) followed, for Data frames only, by `length` payload bytes.
 *
 * Flow control follows hashicorp/yamux: every stream starts with a 256 KiB window in each
 * direction. A sender never has more unacknowledged Data bytes in flight than the window the
 * receiver granted; the receiver grants more only as its consumer actually reads, so a reader
 * that stops reading stops the writer after at most one window of buffered data.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import { Duplex } from "node:stream";

const PROTO_VERSION = 0;
const HEADER_SIZE = 12;

const TYPE_DATA = 0;
const TYPE_WINDOW_UPDATE = 1;
const TYPE_PING = 2;
const TYPE_GO_AWAY = 3;

const FLAG_SYN = 0x1;
const FLAG_ACK = 0x2;
const FLAG_FIN = 0x4;
const FLAG_RST = 0x8;

const GO_AWAY_NORMAL = 0;
const GO_AWAY_PROTOCOL_ERROR = 1;
const GO_AWAY_INTERNAL_ERROR = 2;

/** The window every stream starts with, in both directions (fixed by the spec). */
export const YAMUX_INITIAL_WINDOW = 256 * 1024;

/** The length field is a u32. */
const MAX_FRAME_PAYLOAD = 0xffffffff;

/** Stream ids are u32; like hashicorp, stop before the last two. */
const MAX_STREAM_ID = 0xffffffff - 1;

/**
 * Readable/writable high-water mark of a stream. It must stay below half the smallest window
 * (see {@link StreamCore.sendWindowUpdate}), which {@link YamuxSession} guarantees.
 */
const STREAM_HIGH_WATER_MARK = 64 * 1024;

/** Stable codes of {@link YamuxError}. */
export type YamuxErrorCode =
  /** The remote broke the protocol (bad version/type, window exceeded, duplicate SYN, ...). */
  | "ERR_YAMUX_PROTOCOL"
  /** The remote sent GoAway: no new streams (normal), or it ended the session with an error. */
  | "ERR_YAMUX_REMOTE_GOAWAY"
  /** The session is closed. */
  | "ERR_YAMUX_SESSION_CLOSED"
  /** All stream ids of this side are used up. */
  | "ERR_YAMUX_STREAMS_EXHAUSTED"
  /** A keep-alive ping was not answered within `keepAliveMs`. */
  | "ERR_YAMUX_KEEPALIVE_TIMEOUT"
  /** The `send` callback threw. */
  | "ERR_YAMUX_TRANSPORT"
  /** The remote reset the stream (RST), e.g. because it was destroyed or rejected. */
  | "ECONNRESET";

/** Errors raised by {@link YamuxSession} and {@link YamuxStream}. */
export class YamuxError extends Error {
  override name = "YamuxError";
  constructor(
    readonly code: YamuxErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Options of {@link YamuxSession}. */
export interface YamuxSessionOptions {
  /** True for the client side (opens odd stream ids), false for the server side (even ids). */
  client: boolean;
  /**
   * Writes one encoded frame (header and payload in one buffer) to the transport, e.g. as one
   * binary WebSocket message. The buffer is not reused afterwards. Frames must reach the remote
   * in order; the transport may concatenate or split them freely. A throw closes the session.
   */
  send: (frame: Buffer) => void;
  /** Ping the remote this often and close the session if a ping is not answered before the next one. 0 (the default) disables keep-alive. */
  keepAliveMs?: number;
  /**
   * The most unread data this side buffers per stream, i.e. the largest receive window it grants
   * (default and minimum 256 KiB). Above 256 KiB, the extra is granted with the SYN/ACK.
   */
  maxStreamWindow?: number;
  /**
   * How many inbound streams may wait for a `'stream'` listener (default 256). Inbound streams are
   * accepted by emitting `'stream'`; while the session has no such listener they queue, and a SYN
   * beyond this backlog is refused with RST, as hashicorp does when Accept is not called.
   */
  acceptBacklog?: number;
}

/** Events of {@link YamuxSession}. */
export interface YamuxSessionEvents {
  /** An inbound stream (the remote sent SYN). It is acknowledged right after the listeners ran. */
  stream: [stream: YamuxStream];
  /** The remote sent GoAway with this code (0 normal, 1 protocol error, 2 internal error). */
  goaway: [code: number];
  /**
   * An error the session detected itself (protocol error, keep-alive timeout, failed `send`, remote
   * GoAway with an error code); the session already sent GoAway and destroyed its streams with the
   * same error, and `'close'` follows. As with any EventEmitter, an unhandled `'error'` throws.
   */
  error: [err: Error];
  /** The session is closed: every stream has been destroyed. Emitted once. */
  close: [];
}

/**
 * One yamux session over a transport. Feed it the transport's bytes with {@link receive}; it
 * writes frames with the `send` option. Call {@link close} when the transport ends.
 *
 * Streams are destroyed with an error when the remote resets them or the session fails, so give
 * each stream an `'error'` listener.
 *
 * ```ts
 * const session = new YamuxSession({ client: true, send: (f) => socket.write(f) });
 * socket.on("data", (d) => session.receive(d));
 * socket.on("close", () => session.close());
 * const stream = session.open();
 * ```
 */
export class YamuxSession extends EventEmitter<YamuxSessionEvents> {
  private readonly mux: Mux;

  constructor(opts: YamuxSessionOptions) {
    super();
    this.mux = new Mux(this, opts);
    // Streams queued while nobody listened are delivered to the first listener.
    (this as EventEmitter).on("newListener", (event: string | symbol) => {
      if (event === "stream") process.nextTick(() => this.mux.drainAccept());
    });
  }

  /**
   * Feed bytes read from the transport. Chunks may split frames anywhere or hold many frames.
   * The session keeps references to slices of `chunk` (no copy): do not modify it afterwards.
   * Ignored once the session is closed.
   */
  receive(chunk: Buffer | Uint8Array): void {
    this.mux.receive(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }

  /**
   * Open a stream: sends SYN at once (a window update, like hashicorp); data may follow before
   * the remote's ACK. Throws {@link YamuxError} `ERR_YAMUX_SESSION_CLOSED`,
   * `ERR_YAMUX_REMOTE_GOAWAY` (the remote sent GoAway) or `ERR_YAMUX_STREAMS_EXHAUSTED`.
   * If the remote refuses the stream it is destroyed with `ECONNRESET`.
   */
  open(): YamuxStream {
    return this.mux.open();
  }

  /**
   * Close the session: sends GoAway (normal termination), destroys every open stream (with
   * `err` if given; `err` is not emitted as `'error'`), rejects pending pings and emits
   * `'close'`. Idempotent. Send failures are ignored, so it is safe after the transport died.
   */
  close(err?: Error): void {
    this.mux.terminate(err, GO_AWAY_NORMAL, false);
  }

  /** Send GoAway (normal): the remote may open no more streams; inbound SYNs are answered with RST. Existing streams keep working. */
  goAway(): void {
    this.mux.goAway();
  }

  /** Measure the round-trip time in milliseconds with a Ping. Rejects if the session closes first. */
  ping(): Promise<number> {
    return this.mux.ping();
  }

  /** Whether {@link close} ran (or the session failed). */
  get closed(): boolean {
    return this.mux.closed;
  }

  /** Streams known to the session: not yet closed in both directions and not reset. */
  get numStreams(): number {
    return this.mux.streams.size;
  }
}

/** Created by the static block of YamuxStream: the only way to construct one. */
let newYamuxStream: (core: StreamCore) => YamuxStream;

/**
 * One yamux stream: a Duplex with yamux flow control.
 *
 * - `write()` callbacks complete only once the data went out as Data frames within the window
 *   the remote granted; a write larger than the window is split, and the rest waits (no polling)
 *   for a window update. So `write()` returning false / `'drain'` reflect the remote reader.
 * - `end()` sends FIN (half-close): the other direction keeps working. A FIN from the remote
 *   ends the readable side (`'end'`).
 * - `destroy()` before both directions finished sends RST; a RST from the remote destroys the
 *   stream with a {@link YamuxError} whose code is `ECONNRESET`.
 *
 * Obtained from {@link YamuxSession.open} or the session's `'stream'` event.
 */
export class YamuxStream extends Duplex {
  static {
    newYamuxStream = (core) => new YamuxStream(core);
  }

  /** The stream id (odd when opened by the client, even when opened by the server). */
  readonly id: number;
  /** The session the stream belongs to. */
  readonly session: YamuxSession;
  private readonly core: StreamCore;

  private constructor(core: StreamCore) {
    super({ allowHalfOpen: true, readableHighWaterMark: STREAM_HIGH_WATER_MARK, writableHighWaterMark: STREAM_HIGH_WATER_MARK });
    this.core = core;
    this.id = core.id;
    this.session = core.mux.session;
  }

  /**
   * Bytes received from the remote and not yet read by the consumer (yamux queue and readable
   * buffer). Never more than the max receive window, unless the consumer calls `read(n)` with an
   * n beyond it (then at most Node's raised `readableHighWaterMark`).
   */
  get unreadLength(): number {
    return this.core.queuedBytes + this.readableLength;
  }

  override _read(): void {
    this.core.onRead();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.core.write(chunk, callback);
  }

  /** Writes queued while waiting for window go out together, in as few frames as the window allows. */
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.core.write(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.core.finish(callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.core.onDestroy(err);
    callback(err);
  }
}

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

interface PendingPing {
  start: number;
  resolve: (rttMs: number) => void;
  reject: (err: Error) => void;
}

/** The protocol state of one stream; the Duplex only delegates here. */
class StreamCore {
  readonly stream: YamuxStream;
  /** Bytes the remote may still send us (what we granted minus what it announced). */
  recvWindow = YAMUX_INITIAL_WINDOW;
  /** Bytes we may still send. */
  sendWindow = YAMUX_INITIAL_WINDOW;
  /** Payload bytes of the Data frame being received that have not arrived yet. */
  incomingRemaining = 0;
  /** SYN (opened here) or ACK (accepted) until the first frame carries it. */
  private pendingFlags: number;
  /** We sent FIN. */
  localFin = false;
  /** The remote sent FIN. */
  remoteFin = false;
  /** The remote sent RST. */
  private reset = false;
  /** No longer in the session's stream map. */
  removed = false;
  /** Received bytes not yet pushed into the readable side: queue[queueHead..]. */
  private readonly queue: Buffer[] = [];
  private queueHead = 0;
  queuedBytes = 0;
  /** The readable side asked for data and push() has not said stop since. */
  private readWanted = false;
  private eofPushed = false;
  private pendingWrite: PendingWrite | null = null;
  private windowCheckScheduled = false;

  constructor(
    readonly mux: Mux,
    readonly id: number,
    initialFlag: number,
  ) {
    this.pendingFlags = initialFlag;
    this.stream = newYamuxStream(this);
  }

  private takeFlags(): number {
    const flags = this.pendingFlags;
    this.pendingFlags = 0;
    return flags;
  }

  /**
   * hashicorp's rule: grant the remote `max - unread - window` more bytes once that delta
   * reaches half the max window (or to carry a pending SYN/ACK). "Unread" counts what the
   * consumer has not taken from the readable side yet, plus bytes of a frame still arriving,
   * so buffered data never exceeds the max window.
   *
   * Liveness: this runs after every `_read`. Node calls `_read` once the readable buffer falls
   * below the high-water mark (when nothing is queued here), so usually unread < hwm < max/2 and
   * either the delta reaches max/2 or the remote still has credit, and its next Data frame leads
   * to another push and `_read`. But `read(n)` raises the high-water mark to n, and Node's
   * `read(n)` returns nothing until n bytes are buffered: a reader asking for more than is
   * buffered while more than max/2 (or all of max) is buffered would wait forever for a remote
   * that has no credit. So a starved reader (it asked, nothing is queued, the remote has no credit
   * and nothing is in flight) gets whatever delta there is, counted against the larger of the max
   * window and the high-water mark its read(n) set.
   */
  sendWindowUpdate(force: boolean): void {
    if (this.removed || this.stream.destroyed) return;
    const max = this.mux.maxWindow;
    const starved = this.readWanted && this.queueHead === this.queue.length && this.recvWindow === 0 && this.incomingRemaining === 0;
    let delta = 0;
    if (!this.remoteFin) {
      const unread = this.queuedBytes + this.stream.readableLength + this.incomingRemaining;
      const limit = starved ? Math.max(max, this.stream.readableHighWaterMark) : max;
      delta = Math.max(0, limit - unread - this.recvWindow);
    }
    if (delta < max / 2 && !(starved && delta > 0) && !(force && this.pendingFlags !== 0)) return;
    this.recvWindow += delta;
    this.mux.sendFrame(TYPE_WINDOW_UPDATE, this.takeFlags(), this.id, delta);
  }

  private scheduleWindowCheck(): void {
    if (this.windowCheckScheduled) return;
    this.windowCheckScheduled = true;
    // After the read() that called _read has taken its bytes out of the readable buffer.
    process.nextTick(() => {
      this.windowCheckScheduled = false;
      this.sendWindowUpdate(false);
    });
  }

  onRead(): void {
    this.readWanted = true;
    this.flushReadable();
    this.scheduleWindowCheck();
  }

  private flushReadable(): void {
    while (this.readWanted && this.queueHead < this.queue.length && !this.stream.destroyed) {
      const chunk = this.dequeue();
      this.queuedBytes -= chunk.length;
      if (!this.stream.push(chunk)) this.readWanted = false;
    }
    if (this.remoteFin && this.queueHead === this.queue.length && !this.eofPushed && !this.stream.destroyed) {
      this.eofPushed = true;
      this.stream.push(null);
    }
  }

  /** The next queued chunk, small ones (a finely split transport) merged up to the high-water mark. */
  private dequeue(): Buffer {
    const q = this.queue;
    let chunk = q[this.queueHead++]!;
    if (chunk.length < STREAM_HIGH_WATER_MARK && this.queueHead < q.length) {
      const parts = [chunk];
      let size = chunk.length;
      while (this.queueHead < q.length && size + q[this.queueHead]!.length <= STREAM_HIGH_WATER_MARK) {
        const next = q[this.queueHead++]!;
        parts.push(next);
        size += next.length;
      }
      if (parts.length > 1) chunk = Buffer.concat(parts, size);
    }
    if (this.queueHead === q.length) {
      q.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead >= 1024) {
      q.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return chunk;
  }

  /** Part of a Data frame's payload arrived. */
  onPayload(slice: Buffer): void {
    this.incomingRemaining -= slice.length;
    if (this.stream.destroyed) return;
    this.queue.push(slice);
    this.queuedBytes += slice.length;
    if (this.readWanted) {
      this.flushReadable();
      this.scheduleWindowCheck();
    }
  }

  onRemoteFin(): void {
    this.remoteFin = true;
    this.flushReadable();
    if (this.localFin) this.mux.remove(this);
  }

  onRemoteReset(): void {
    this.reset = true;
    this.mux.remove(this);
    this.stream.destroy(new YamuxError("ECONNRESET", `yamux stream ${this.id} was reset by the remote`));
  }

  onSendCredit(delta: number): void {
    this.sendWindow += delta;
    this.flushWrite();
  }

  /** Called once the 'stream' listeners ran: ACK unless the first frame already carried it. */
  acknowledge(): void {
    this.sendWindowUpdate(true);
  }

  write(chunk: Buffer, callback: (error?: Error | null) => void): void {
    this.pendingWrite = { chunk, offset: 0, callback };
    this.flushWrite();
  }

  /** Send as much of the pending write as the window allows; complete it once all is sent. */
  private flushWrite(): void {
    const w = this.pendingWrite;
    if (!w) return;
    while (w.offset < w.chunk.length) {
      if (this.sendWindow <= 0) return; // the callback waits for a window update
      const n = Math.min(this.sendWindow, w.chunk.length - w.offset, MAX_FRAME_PAYLOAD);
      const payload = w.chunk.subarray(w.offset, w.offset + n);
      if (!this.mux.sendFrame(TYPE_DATA, this.takeFlags(), this.id, n, payload)) {
        // The session closed (and destroyed this stream, which may already have failed the write).
        if (this.pendingWrite === w) {
          this.pendingWrite = null;
          w.callback(sessionClosed());
        }
        return;
      }
      this.sendWindow -= n;
      w.offset += n;
    }
    this.pendingWrite = null;
    w.callback();
  }

  /** end(): all writes are out; send FIN. */
  finish(callback: (error?: Error | null) => void): void {
    if (!this.mux.sendFrame(TYPE_WINDOW_UPDATE, this.takeFlags() | FLAG_FIN, this.id, 0)) {
      callback(sessionClosed());
      return;
    }
    this.localFin = true;
    if (this.remoteFin) this.mux.remove(this);
    callback();
  }

  onDestroy(err: Error | null): void {
    this.queue.length = 0;
    this.queueHead = 0;
    this.queuedBytes = 0;
    if (!this.removed) {
      this.mux.remove(this);
      // Abort unless the stream already finished both ways (then destroy is just cleanup).
      if (!this.reset && !(this.localFin && this.remoteFin)) {
        this.mux.sendFrame(TYPE_WINDOW_UPDATE, this.takeFlags() | FLAG_RST, this.id, 0);
      }
    }
    const w = this.pendingWrite;
    if (w) {
      this.pendingWrite = null;
      w.callback(err ?? (this.mux.closed ? sessionClosed() : new YamuxError("ECONNRESET", `yamux stream ${this.id} was destroyed with a write pending`)));
    }
  }
}

function encodeFrame(type: number, flags: number, id: number, length: number, payload?: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + (payload ? payload.length : 0));
  frame[0] = PROTO_VERSION;
  frame[1] = type;
  frame.writeUInt16BE(flags, 2);
  frame.writeUInt32BE(id, 4);
  frame.writeUInt32BE(length, 8);
  if (payload) payload.copy(frame, HEADER_SIZE);
  return frame;
}

function sessionClosed(): YamuxError {
  return new YamuxError("ERR_YAMUX_SESSION_CLOSED", "yamux session is closed");
}

/** The session's protocol machinery, behind the small public {@link YamuxSession} surface. */
class Mux {
  readonly maxWindow: number;
  readonly streams = new Map<number, StreamCore>();
  closed = false;
  private readonly client: boolean;
  private readonly sendFn: (frame: Buffer) => void;
  private readonly acceptBacklog: number;
  private nextStreamId: number;
  private localGoAway = false;
  private remoteGoAway = false;
  private readonly acceptQueue: StreamCore[] = [];
  private draining = false;
  private readonly pings = new Map<number, PendingPing>();
  private nextPingId = 0;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private keepAliveOutstanding = false;

  // Frame parser state.
  private readonly header = Buffer.alloc(HEADER_SIZE);
  private headerFill = 0;
  /** Payload bytes of the current Data frame still to come, and who gets them (null: discard). */
  private payloadRemaining = 0;
  private payloadTarget: StreamCore | null = null;
  private payloadFin = false;
  private receiving = false;
  private readonly receiveBacklog: Buffer[] = [];

  constructor(
    readonly session: YamuxSession,
    opts: YamuxSessionOptions,
  ) {
    this.client = opts.client;
    this.sendFn = opts.send;
    this.nextStreamId = opts.client ? 1 : 2;
    this.maxWindow = opts.maxStreamWindow ?? YAMUX_INITIAL_WINDOW;
    if (!Number.isInteger(this.maxWindow) || this.maxWindow < YAMUX_INITIAL_WINDOW || this.maxWindow > 0xffffffff) {
      throw new RangeError(`maxStreamWindow must be an integer between ${YAMUX_INITIAL_WINDOW} and 2^32-1`);
    }
    this.acceptBacklog = opts.acceptBacklog ?? 256;
    if (!Number.isInteger(this.acceptBacklog) || this.acceptBacklog <= 0) throw new RangeError("acceptBacklog must be a positive integer");
    const keepAliveMs = opts.keepAliveMs ?? 0;
    if (keepAliveMs > 0) {
      this.keepAliveTimer = setInterval(() => this.keepAlive(), keepAliveMs);
      this.keepAliveTimer.unref();
    }
  }

  /** Encode and send one frame; false if the session is (or just became) closed. */
  sendFrame(type: number, flags: number, id: number, length: number, payload?: Buffer): boolean {
    if (this.closed) return false;
    try {
      this.sendFn(encodeFrame(type, flags, id, length, payload));
    } catch (err) {
      this.terminate(new YamuxError("ERR_YAMUX_TRANSPORT", "yamux transport send failed", { cause: err }), GO_AWAY_INTERNAL_ERROR, true);
      return false;
    }
    return true;
  }

  open(): YamuxStream {
    if (this.closed) throw sessionClosed();
    if (this.remoteGoAway) throw new YamuxError("ERR_YAMUX_REMOTE_GOAWAY", "the remote sent GoAway: no new streams");
    const id = this.nextStreamId;
    if (id >= MAX_STREAM_ID) throw new YamuxError("ERR_YAMUX_STREAMS_EXHAUSTED", "yamux stream ids exhausted");
    this.nextStreamId += 2;
    const core = new StreamCore(this, id, FLAG_SYN);
    this.streams.set(id, core);
    core.sendWindowUpdate(true); // SYN, plus any window beyond the initial one
    return core.stream;
  }

  remove(core: StreamCore): void {
    core.removed = true;
    if (this.streams.get(core.id) === core) this.streams.delete(core.id);
  }

  goAway(): void {
    this.localGoAway = true;
    this.sendFrame(TYPE_GO_AWAY, 0, 0, GO_AWAY_NORMAL);
  }

  ping(): Promise<number> {
    if (this.closed) return Promise.reject(sessionClosed());
    const id = this.nextPingId;
    this.nextPingId = (this.nextPingId + 1) >>> 0;
    return new Promise<number>((resolve, reject) => {
      this.pings.set(id, { start: performance.now(), resolve, reject });
      this.sendFrame(TYPE_PING, FLAG_SYN, 0, id);
    });
  }

  private keepAlive(): void {
    if (this.keepAliveOutstanding) {
      this.terminate(new YamuxError("ERR_YAMUX_KEEPALIVE_TIMEOUT", "yamux keep-alive ping was not answered"), GO_AWAY_NORMAL, true);
      return;
    }
    this.keepAliveOutstanding = true;
    this.ping().then(
      () => {
        this.keepAliveOutstanding = false;
      },
      () => undefined,
    );
  }

  /** Close the session; `emitError` for errors the session found itself. */
  terminate(err: Error | undefined, goAwayCode: number, emitError: boolean): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.sendFn(encodeFrame(TYPE_GO_AWAY, 0, 0, goAwayCode));
    } catch {
      // The transport is gone; closing is all that is left to do.
    }
    clearInterval(this.keepAliveTimer);
    this.acceptQueue.length = 0;
    this.payloadTarget = null;
    for (const p of this.pings.values()) p.reject(err ?? sessionClosed());
    this.pings.clear();
    const cores = [...this.streams.values()];
    this.streams.clear();
    for (const core of cores) {
      core.removed = true;
      core.stream.destroy(err);
    }
    process.nextTick(() => {
      if (emitError && err) this.session.emit("error", err);
      this.session.emit("close");
    });
  }

  private protocolError(message: string): void {
    this.terminate(new YamuxError("ERR_YAMUX_PROTOCOL", `yamux protocol error: ${message}`), GO_AWAY_PROTOCOL_ERROR, true);
  }

  receive(chunk: Buffer): void {
    if (this.closed) return;
    // A listener may make the remote answer synchronously (in-memory transports): queue.
    if (this.receiving) {
      this.receiveBacklog.push(chunk);
      return;
    }
    this.receiving = true;
    try {
      this.consume(chunk);
      while (this.receiveBacklog.length > 0 && !this.closed) this.consume(this.receiveBacklog.shift()!);
    } catch (err) {
      // A listener threw mid-chunk: the framing cannot be resumed.
      this.terminate(undefined, GO_AWAY_INTERNAL_ERROR, false);
      throw err;
    } finally {
      this.receiving = false;
      this.receiveBacklog.length = 0;
    }
  }

  private consume(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.closed) {
      if (this.payloadRemaining > 0) {
        const n = Math.min(this.payloadRemaining, chunk.length - offset);
        const slice = chunk.subarray(offset, offset + n);
        offset += n;
        this.payloadRemaining -= n;
        const target = this.payloadTarget;
        if (this.payloadRemaining === 0) this.payloadTarget = null;
        if (target) {
          target.onPayload(slice);
          if (this.payloadRemaining === 0 && this.payloadFin) this.remoteFin(target);
        }
        continue;
      }
      const n = Math.min(HEADER_SIZE - this.headerFill, chunk.length - offset);
      chunk.copy(this.header, this.headerFill, offset, offset + n);
      offset += n;
      this.headerFill += n;
      if (this.headerFill < HEADER_SIZE) return;
      this.headerFill = 0;
      this.handleHeader();
    }
  }

  private handleHeader(): void {
    const h = this.header;
    const version = h[0]!;
    const type = h[1]!;
    const flags = h.readUInt16BE(2);
    const id = h.readUInt32BE(4);
    const length = h.readUInt32BE(8);
    if (version !== PROTO_VERSION) return this.protocolError(`unsupported version ${version}`);
    switch (type) {
      case TYPE_DATA:
      case TYPE_WINDOW_UPDATE:
        return this.handleStreamFrame(type, flags, id, length);
      case TYPE_PING:
        return this.handlePing(flags, length);
      case TYPE_GO_AWAY:
        return this.handleGoAway(length);
      default:
        return this.protocolError(`unknown frame type ${type}`);
    }
  }

  private handleStreamFrame(type: number, flags: number, id: number, length: number): void {
    this.applyStreamFrame(type, flags, id, length);
    // A SYN queued a stream: hand it out once its header is processed, before its payload.
    if (flags & FLAG_SYN) this.drainAccept();
  }

  private applyStreamFrame(type: number, flags: number, id: number, length: number): void {
    const isData = type === TYPE_DATA;
    let core: StreamCore | undefined;
    if (flags & FLAG_SYN) {
      core = this.incomingStream(id);
      if (this.closed) return;
    } else {
      core = this.streams.get(id);
    }
    if (!core || core.removed) {
      // Most likely a stream we reset, or one whose SYN we refused: drop the frame.
      if (isData) this.skipPayload(length);
      return;
    }
    if (flags & FLAG_RST) {
      if (isData) this.skipPayload(length);
      core.onRemoteReset();
      return;
    }
    // ACK needs no action: data may flow before it (the spec), and a refusal comes as RST.
    const fin = (flags & FLAG_FIN) !== 0;
    if (!isData) {
      if (fin) {
        this.remoteFin(core);
        if (this.closed) return;
      }
      core.onSendCredit(length);
      return;
    }
    if (core.remoteFin && (length > 0 || fin)) return this.protocolError(`data after FIN on stream ${id}`);
    if (length > core.recvWindow) return this.protocolError(`stream ${id} sent ${length} bytes with a window of ${core.recvWindow}`);
    core.recvWindow -= length;
    if (length === 0) {
      if (fin) this.remoteFin(core);
      return;
    }
    core.incomingRemaining = length;
    this.payloadRemaining = length;
    this.payloadTarget = core;
    this.payloadFin = fin;
  }

  private remoteFin(core: StreamCore): void {
    if (core.remoteFin) return this.protocolError(`second FIN on stream ${core.id}`);
    core.onRemoteFin();
  }

  private skipPayload(length: number): void {
    this.payloadRemaining = length;
    this.payloadTarget = null;
    this.payloadFin = false;
  }

  /** A SYN arrived: register the stream and queue it for the 'stream' listeners, or refuse it. */
  private incomingStream(id: number): StreamCore | undefined {
    if (id === 0 || (id % 2 === 1) === this.client) {
      this.protocolError(`SYN with stream id ${id} from the wrong side`);
      return undefined;
    }
    if (this.streams.has(id)) {
      this.protocolError(`duplicate SYN for stream ${id}`);
      return undefined;
    }
    if (this.localGoAway || this.acceptQueue.length >= this.acceptBacklog) {
      this.sendFrame(TYPE_WINDOW_UPDATE, FLAG_RST, id, 0);
      return undefined;
    }
    const core = new StreamCore(this, id, FLAG_ACK);
    this.streams.set(id, core);
    this.acceptQueue.push(core);
    return core;
  }

  /** Hand queued inbound streams to the 'stream' listeners, acknowledging each. */
  drainAccept(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.acceptQueue.length > 0 && !this.closed && this.session.listenerCount("stream") > 0) {
        const core = this.acceptQueue.shift()!;
        if (core.stream.destroyed) continue;
        this.session.emit("stream", core.stream);
        core.acknowledge();
      }
    } finally {
      this.draining = false;
    }
  }

  private handlePing(flags: number, value: number): void {
    if (flags & FLAG_SYN) {
      this.sendFrame(TYPE_PING, FLAG_ACK, 0, value);
      return;
    }
    if (flags & FLAG_ACK) {
      const pending = this.pings.get(value);
      if (!pending) return;
      this.pings.delete(value);
      pending.resolve(performance.now() - pending.start);
    }
  }

  private handleGoAway(code: number): void {
    this.session.emit("goaway", code);
    if (code === GO_AWAY_NORMAL) {
      this.remoteGoAway = true;
      return;
    }
    const reason = code === GO_AWAY_PROTOCOL_ERROR ? "protocol error" : code === GO_AWAY_INTERNAL_ERROR ? "internal error" : `unknown code ${code}`;
    this.terminate(new YamuxError("ERR_YAMUX_REMOTE_GOAWAY", `the remote ended the yamux session: ${reason}`), GO_AWAY_NORMAL, true);
  }
}

/**
 * The first `n` bytes of a stream (the rest stays readable), or undefined on end, close or
 * timeout: the tunnel protocol's connect header and status byte.
 */
export function readExactly(stream: Duplex, n: number, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const finish = (v: Buffer | undefined): void => {
      clearTimeout(timer);
      stream.off("readable", onReadable);
      stream.off("end", onEnd);
      stream.off("close", onEnd);
      resolve(v);
    };
    const onEnd = (): void => finish(undefined);
    const onReadable = (): void => {
      let c: Buffer | null;
      while (have < n && (c = stream.read() as Buffer | null) !== null) {
        chunks.push(c);
        have += c.length;
      }
      if (have >= n) {
        const all = Buffer.concat(chunks);
        finish(all.subarray(0, n));
        if (all.length > n) stream.unshift(all.subarray(n));
      }
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    stream.on("readable", onReadable);
    stream.once("end", onEnd);
    stream.once("close", onEnd);
    onReadable();
  });
}
