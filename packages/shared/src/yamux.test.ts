import { createHash, randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { YAMUX_INITIAL_WINDOW, YamuxError, YamuxSession, type YamuxSessionOptions, type YamuxStream } from "./yamux.js";

const WINDOW = YAMUX_INITIAL_WINDOW;
const T_DATA = 0;
const T_WINDOW = 1;
const T_PING = 2;
const T_GOAWAY = 3;
const SYN = 1;
const ACK = 2;
const FIN = 4;
const RST = 8;

/** How the in-memory transport hands bytes to the other session. */
type Split = "frame" | "concat" | "bytes" | "random";

interface Frame {
  type: number;
  flags: number;
  id: number;
  length: number;
}

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function encode(type: number, flags: number, id: number, length: number, payload?: Buffer): Buffer {
  const b = Buffer.alloc(12 + (payload?.length ?? 0));
  b[0] = 0;
  b[1] = type;
  b.writeUInt16BE(flags, 2);
  b.writeUInt32BE(id, 4);
  b.writeUInt32BE(length, 8);
  payload?.copy(b, 12);
  return b;
}

/** Parse the frames a session sent (each send() call is one whole frame). */
function parse(frames: Buffer[]): Frame[] {
  return frames.map((f) => ({ type: f[1]!, flags: f.readUInt16BE(2), id: f.readUInt32BE(4), length: f.readUInt32BE(8) }));
}

/**
 * Two sessions wired back to back. Bytes are delivered asynchronously, in order, cut as
 * `split` says: one receive() per frame, all pending frames concatenated, one byte at a
 * time, or random cuts (also inside headers) with random pauses between pieces.
 */
function pair(split: Split, opts: { client?: Partial<YamuxSessionOptions>; server?: Partial<YamuxSessionOptions>; seed?: number } = {}) {
  const rand = prng(opts.seed ?? 1);
  const sent = { client: [] as Buffer[], server: [] as Buffer[] };
  const link = (from: "client" | "server", to: () => YamuxSession) => {
    let pending: Buffer[] = [];
    let scheduled = false;
    const schedule = (): void => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(flush);
    };
    const flush = (): void => {
      scheduled = false;
      const target = to();
      const frames = pending;
      pending = [];
      if (split === "frame") {
        for (const f of frames) target.receive(f);
        return;
      }
      const all = Buffer.concat(frames);
      if (split === "concat") {
        target.receive(all);
      } else if (split === "bytes") {
        for (let i = 0; i < all.length; i++) target.receive(all.subarray(i, i + 1));
      } else {
        let off = 0;
        while (off < all.length) {
          const r = rand();
          const n = r < 0.3 ? 1 + Math.floor(rand() * 13) : r < 0.6 ? 1 + Math.floor(rand() * 4096) : 1 + Math.floor(rand() * 200_000);
          target.receive(all.subarray(off, off + n));
          off += n;
          if (off < all.length && rand() < 0.2) {
            // Leave the rest (maybe half a frame) for a later turn of the event loop.
            pending.unshift(all.subarray(off));
            schedule();
            return;
          }
        }
      }
    };
    return (frame: Buffer): void => {
      sent[from].push(frame);
      pending.push(frame);
      schedule();
    };
  };
  const client: YamuxSession = new YamuxSession({ ...opts.client, client: true, send: link("client", () => server) });
  const server: YamuxSession = new YamuxSession({ ...opts.server, client: false, send: link("server", () => client) });
  return { client, server, sent };
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Everything the stream yields until 'end' (rejects on 'error' or close without end). */
function readAll(stream: YamuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
    stream.once("close", () => reject(new Error("closed before end")));
  });
}

/** Write `data` in random-size pieces, then end(). */
function writeInPieces(stream: YamuxStream, data: Buffer, rand: () => number, maxPiece = 100_000): void {
  let off = 0;
  while (off < data.length) {
    const n = 1 + Math.floor(rand() * maxPiece);
    stream.write(data.subarray(off, off + n));
    off += n;
  }
  stream.end();
}

/**
 * Read in paused mode: `read(size)` on every 'readable' until it returns null, after
 * `pause()` resolves (a slow consumer); track the largest unread amount seen.
 */
function readPaused(
  stream: YamuxStream,
  size: number | (() => number),
  pause: () => Promise<unknown> = () => Promise.resolve(),
): Promise<{ data: Buffer; maxUnread: number; reads: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let maxUnread = 0;
    let busy = false;
    const drain = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      for (;;) {
        maxUnread = Math.max(maxUnread, stream.unreadLength);
        const c = stream.read(typeof size === "number" ? size : size()) as Buffer | null;
        if (!c) break;
        chunks.push(c);
        await pause();
      }
      busy = false;
    };
    stream.on("readable", () => void drain());
    stream.once("end", () => resolve({ data: Buffer.concat(chunks), maxUnread, reads: chunks.length }));
    stream.once("error", reject);
  });
}

function echoServer(server: YamuxSession): void {
  server.on("stream", (s) => {
    s.on("error", () => undefined);
    s.pipe(s);
  });
}

function errorOf(stream: YamuxStream): Promise<YamuxError> {
  return new Promise((resolve) => stream.once("error", (e) => resolve(e as YamuxError)));
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(2);
  }
}

describe("yamux session pair", () => {
  for (const split of ["frame", "concat", "bytes", "random"] as const) {
    it(`opens, accepts and echoes (${split} delivery)`, async () => {
      const { client, server, sent } = pair(split);
      echoServer(server);
      const payload = randomBytes(split === "bytes" ? 20_000 : 600_000);
      const streams = [client.open(), client.open(), client.open()];
      expect(streams.map((s) => s.id)).toEqual([1, 3, 5]);
      const results = streams.map((s) => readAll(s));
      for (const s of streams) writeInPieces(s, payload, prng(s.id), 30_000);
      for (const got of await Promise.all(results)) expect(sha256(got)).toBe(sha256(payload));
      await until(() => client.numStreams === 0 && server.numStreams === 0);
      // The first frame of an opened stream is a window update with SYN; the accept answers ACK.
      const first = parse(sent.client).find((f) => f.id === 1)!;
      expect(first).toMatchObject({ type: T_WINDOW, flags: SYN, length: 0 });
      const answer = parse(sent.server).find((f) => f.id === 1)!;
      expect(answer.flags & ACK).toBe(ACK);
      // Never more than the window in one Data frame.
      for (const f of parse([...sent.client, ...sent.server])) if (f.type === T_DATA) expect(f.length).toBeLessThanOrEqual(WINDOW);
    }, 60_000);
  }

  it("carries 50 concurrent streams of 1 MiB each, checked by sha256", async () => {
    const { client, server } = pair("random", { seed: 7 });
    echoServer(server);
    const rand = prng(42);
    const jobs = Array.from({ length: 50 }, () => {
      const data = randomBytes(1 << 20);
      const s = client.open();
      const echoed = readAll(s);
      writeInPieces(s, data, rand);
      return echoed.then((got) => ({ want: sha256(data), got: sha256(got), length: got.length }));
    });
    for (const r of await Promise.all(jobs)) {
      expect(r.length).toBe(1 << 20);
      expect(r.got).toBe(r.want);
    }
    await until(() => client.numStreams === 0 && server.numStreams === 0);
    expect(client.closed || server.closed).toBe(false);
  }, 120_000);

  it("opens streams from both sides at once (server ids even)", async () => {
    const { client, server } = pair("random", { seed: 21 });
    echoServer(server);
    echoServer(client);
    const rand = prng(8);
    const jobs = [client, server].flatMap((side) =>
      Array.from({ length: 10 }, () => {
        const data = randomBytes(300_000);
        const s = side.open();
        expect(s.id % 2).toBe(side === client ? 1 : 0);
        const echoed = readAll(s);
        writeInPieces(s, data, rand);
        return echoed.then((got) => expect(sha256(got)).toBe(sha256(data)));
      }),
    );
    await Promise.all(jobs);
    await until(() => client.numStreams === 0 && server.numStreams === 0);
  }, 60_000);

  it("half-closes: the client ends first and still receives the server's reply", async () => {
    const { client, server } = pair("random");
    const serverGot = new Promise<Buffer>((resolve) => {
      server.on("stream", (s) => {
        void readAll(s).then((got) => {
          // The client's FIN arrived; this direction still works.
          s.end(Buffer.concat([Buffer.from("reply:"), got]));
          resolve(got);
        });
      });
    });
    const s = client.open();
    const reply = readAll(s);
    s.end("question");
    expect((await serverGot).toString()).toBe("question");
    expect((await reply).toString()).toBe("reply:question");
    await until(() => client.numStreams === 0 && server.numStreams === 0);
  });

  it("half-closes: the server ends first and keeps receiving", async () => {
    const { client, server } = pair("random");
    const data = randomBytes(700_000);
    const serverGot = new Promise<Buffer>((resolve) => {
      server.on("stream", (s) => {
        s.end("hello");
        void readAll(s).then(resolve);
      });
    });
    const s = client.open();
    const hello = await readAll(s);
    expect(hello.toString()).toBe("hello");
    expect(s.writable).toBe(true);
    writeInPieces(s, data, prng(3));
    expect(sha256(await serverGot)).toBe(sha256(data));
    await until(() => client.numStreams === 0 && server.numStreams === 0);
  });

  it("propagates RST when a stream is destroyed, failing the remote's pending write", async () => {
    const { client, server, sent } = pair("concat");
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    s.write("x");
    const remote = await accepted;
    // The client does not read: this write waits for window beyond 256 KiB.
    let writeError: Error | null | undefined;
    remote.write(Buffer.alloc(WINDOW + 1000), (err) => (writeError = err));
    await until(() => s.unreadLength === WINDOW);
    const remoteError = errorOf(remote);
    s.destroy();
    const err = await remoteError;
    expect(err).toBeInstanceOf(YamuxError);
    expect(err.code).toBe("ECONNRESET");
    await until(() => writeError !== undefined);
    expect(writeError).toBeInstanceOf(Error);
    expect(parse(sent.client).some((f) => f.id === 1 && f.type === T_WINDOW && f.flags & RST)).toBe(true);
    await until(() => client.numStreams === 0 && server.numStreams === 0);
  });

  it("propagates RST from the accepting side", async () => {
    const { client, server } = pair("bytes");
    server.on("stream", (s) => s.destroy());
    const s = client.open();
    const err = await errorOf(s);
    expect(err.code).toBe("ECONNRESET");
    expect(client.numStreams).toBe(0);
  });

  it("sends no RST when a stream is destroyed after finishing both ways", async () => {
    const { client, server, sent } = pair("frame");
    echoServer(server);
    const s = client.open();
    const got = readAll(s);
    s.end("ping");
    expect((await got).toString()).toBe("ping");
    await until(() => s.destroyed);
    s.destroy();
    await sleep(10);
    expect(parse([...sent.client, ...sent.server]).some((f) => f.flags & RST)).toBe(false);
  });

  it("stops new streams after the remote's GoAway; existing streams keep working", async () => {
    const { client, server } = pair("random");
    echoServer(server);
    const existing = client.open();
    existing.write("before ");
    await sleep(5);
    const goaway = new Promise<number>((resolve) => client.on("goaway", resolve));
    server.goAway();
    expect(await goaway).toBe(0);
    expect(() => client.open()).toThrow(expect.objectContaining({ code: "ERR_YAMUX_REMOTE_GOAWAY" }));
    const got = readAll(existing);
    existing.end("after");
    expect((await got).toString()).toBe("before after");
  });

  it("refuses a SYN that crosses the local GoAway with RST", async () => {
    const { client, server } = pair("frame");
    server.on("stream", () => expect.fail("no stream after GoAway"));
    const s = client.open(); // in flight while the server goes away
    server.goAway();
    expect((await errorOf(s)).code).toBe("ECONNRESET");
  });

  it("close() sends GoAway, destroys streams and rejects pings", async () => {
    const { client, server, sent } = pair("concat");
    echoServer(server);
    const s = client.open();
    s.write("data");
    await sleep(5);
    const closed = new Promise<void>((resolve) => client.on("close", resolve));
    const streamClosed = new Promise<void>((resolve) => s.on("close", resolve));
    const remoteGoAway = new Promise<number>((resolve) => server.on("goaway", resolve));
    const pending = client.ping();
    client.close();
    await closed;
    await streamClosed;
    await expect(pending).rejects.toMatchObject({ code: "ERR_YAMUX_SESSION_CLOSED" });
    expect(await remoteGoAway).toBe(0);
    expect(parse(sent.client).at(-1)).toMatchObject({ type: T_GOAWAY, length: 0 });
    expect(client.closed).toBe(true);
    expect(() => client.open()).toThrow(expect.objectContaining({ code: "ERR_YAMUX_SESSION_CLOSED" }));
    await expect(client.ping()).rejects.toMatchObject({ code: "ERR_YAMUX_SESSION_CLOSED" });
  });

  it("close(err) destroys streams with that error", async () => {
    const { client } = pair("frame");
    const s = client.open();
    const failed = errorOf(s);
    const boom = new Error("boom");
    client.close(boom);
    expect(await failed).toBe(boom);
  });

  it("measures ping RTT both ways", async () => {
    const { client, server } = pair("random");
    const [a, b] = await Promise.all([client.ping(), server.ping()]);
    expect(a).toBeGreaterThanOrEqual(0);
    expect(b).toBeGreaterThanOrEqual(0);
    expect(a).toBeLessThan(1000);
  });
});

describe("yamux flow control", () => {
  it("stops the writer at the window while the reader does not read, then delivers everything", async () => {
    const { client, server } = pair("random");
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(1 << 20);
    const piece = 64 * 1024;
    let completed = 0;
    let lastWriteOk = true;
    for (let off = 0; off < data.length; off += piece) lastWriteOk = s.write(data.subarray(off, off + piece), () => completed++);
    expect(lastWriteOk).toBe(false);
    s.end();
    const remote = await accepted;
    await until(() => remote.unreadLength === WINDOW);
    await sleep(50);
    // Exactly one window is buffered and acknowledged to the writer; the rest waits.
    expect(remote.unreadLength).toBe(WINDOW);
    expect(completed * piece).toBe(WINDOW);
    expect(s.writableLength).toBe(data.length - WINDOW);
    const got = await readAll(remote);
    expect(sha256(got)).toBe(sha256(data));
    await until(() => completed === data.length / piece);
  });

  it("bounds buffering to a larger window announced with SYN/ACK", async () => {
    const max = 1 << 20;
    const { client, server } = pair("frame", { server: { maxStreamWindow: max } });
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(3 << 20);
    s.end(data);
    const remote = await accepted;
    await until(() => remote.unreadLength === max);
    await sleep(30);
    expect(remote.unreadLength).toBe(max);
    expect(sha256(await readAll(remote))).toBe(sha256(data));
  });

  it("keeps a slow paused-mode reader fed without exceeding the window", async () => {
    const { client, server } = pair("random", { seed: 9 });
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(1_500_000);
    writeInPieces(s, data, prng(5));
    const remote = await accepted;
    const { data: got, maxUnread, reads } = await readPaused(remote, 7_777, () => tick());
    expect(sha256(got)).toBe(sha256(data));
    expect(reads).toBeGreaterThan(data.length / 7_777 - 2);
    expect(maxUnread).toBeLessThanOrEqual(WINDOW);
  });

  it("does not stall a reader that asks for more than half the window at once", async () => {
    const { client, server } = pair("frame");
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(2_000_000);
    s.end(data);
    const remote = await accepted;
    // With a full window buffered, reading 100 000 bytes frees less than half the window (no
    // update by hashicorp's rule) and the next read(200 000) cannot be satisfied from the rest.
    let i = 0;
    const { data: got, maxUnread } = await readPaused(remote, () => (i++ % 2 === 0 ? 100_000 : 200_000));
    expect(sha256(got)).toBe(sha256(data));
    expect(maxUnread).toBeLessThanOrEqual(WINDOW);
  });

  it("serves read(n) with n beyond the window by granting up to the raised high-water mark", async () => {
    const { client, server } = pair("random", { seed: 4 });
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(2_000_000);
    s.end(data);
    const remote = await accepted;
    const { data: got, maxUnread } = await readPaused(remote, 400_000);
    expect(sha256(got)).toBe(sha256(data));
    expect(maxUnread).toBeLessThanOrEqual(remote.readableHighWaterMark);
  });

  it("applies backpressure through pipe() to a slow writable", async () => {
    const { client, server } = pair("concat");
    const accepted = new Promise<YamuxStream>((resolve) => server.on("stream", resolve));
    const s = client.open();
    const data = randomBytes(2 << 20);
    writeInPieces(s, data, prng(11), 50_000);
    const remote = await accepted;
    const got: Buffer[] = [];
    let maxUnread = 0;
    await new Promise<void>((resolve, reject) => {
      const slow = new Writable({
        highWaterMark: 16 * 1024,
        write(chunk: Buffer, _enc, cb) {
          maxUnread = Math.max(maxUnread, remote.unreadLength);
          got.push(chunk);
          setTimeout(cb, 1);
        },
      });
      remote.pipe(slow).on("finish", resolve).on("error", reject);
    });
    expect(sha256(Buffer.concat(got))).toBe(sha256(data));
    expect(maxUnread).toBeLessThanOrEqual(WINDOW);
  });
});

describe("yamux wire handling", () => {
  /** A session whose peer is the test: frames sent are recorded, frames received are crafted. */
  function raw(opts: Partial<YamuxSessionOptions> & { client: boolean }) {
    const out: Buffer[] = [];
    const session = new YamuxSession({ ...opts, send: (f) => out.push(f) });
    const errors: YamuxError[] = [];
    session.on("error", (e) => errors.push(e as YamuxError));
    const closed = new Promise<void>((resolve) => session.on("close", resolve));
    const feed = (...frames: Buffer[]): void => {
      // One byte at a time: every frame boundary and field is split.
      const all = Buffer.concat(frames);
      for (let i = 0; i < all.length; i++) session.receive(all.subarray(i, i + 1));
    };
    return { session, out, errors, closed, feed, frames: () => parse(out) };
  }

  it("answers Ping SYN with ACK echoing the opaque value", () => {
    const r = raw({ client: true });
    r.feed(encode(T_PING, SYN, 0, 0xdeadbeef));
    expect(r.frames()).toEqual([{ type: T_PING, flags: ACK, id: 0, length: 0xdeadbeef }]);
  });

  it("accepts SYN, data and FIN riding on one Data frame; the first frame back carries ACK", async () => {
    const r = raw({ client: true });
    const got = new Promise<string>((resolve) => {
      r.session.on("stream", (s) => {
        s.write("yo");
        void readAll(s).then((b) => resolve(b.toString()));
      });
    });
    r.feed(encode(T_DATA, SYN | FIN, 2, 5, Buffer.from("hello")));
    expect(await got).toBe("hello");
    expect(r.frames()[0]).toMatchObject({ type: T_DATA, flags: ACK, id: 2, length: 2 });
  });

  it("acknowledges an accepted stream with a window update when the listener writes nothing", () => {
    const r = raw({ client: false, maxStreamWindow: 512 * 1024 });
    r.session.on("stream", () => undefined);
    r.feed(encode(T_WINDOW, SYN, 1, 0));
    expect(r.frames()).toEqual([{ type: T_WINDOW, flags: ACK, id: 1, length: 256 * 1024 }]);
  });

  it("opens with a window update carrying SYN (and the extra window)", () => {
    const r = raw({ client: false, maxStreamWindow: 1 << 20 });
    const s = r.session.open();
    expect(s.id).toBe(2);
    expect(r.frames()).toEqual([{ type: T_WINDOW, flags: SYN, id: 2, length: (1 << 20) - WINDOW }]);
  });

  it("processes FIN on a window update and RST on a Data frame", async () => {
    const r = raw({ client: false });
    const streams: YamuxStream[] = [];
    r.session.on("stream", (s) => streams.push(s));
    r.feed(encode(T_WINDOW, SYN, 1, 0), encode(T_DATA, SYN, 3, 3, Buffer.from("abc")));
    const [a, b] = streams as [YamuxStream, YamuxStream];
    const ended = readAll(a);
    const reset = errorOf(b);
    r.feed(encode(T_DATA, 0, 1, 2, Buffer.from("xy")), encode(T_WINDOW, FIN, 1, 0), encode(T_DATA, RST, 3, 4, Buffer.from("junk")));
    expect((await ended).toString()).toBe("xy");
    expect((await reset).code).toBe("ECONNRESET");
    // Stream 1 is still open in our direction.
    expect(r.session.numStreams).toBe(1);
    a.end();
    await until(() => r.session.numStreams === 0);
    expect(r.frames().at(-1)).toMatchObject({ type: T_WINDOW, flags: FIN, id: 1 });
  });

  it("waits for a window update before sending beyond the window", async () => {
    const r = raw({ client: true });
    const s = r.session.open();
    let done = false;
    s.write(Buffer.alloc(WINDOW + 10), () => (done = true));
    await sleep(10);
    expect(done).toBe(false);
    const data = () => r.frames().filter((f) => f.type === T_DATA);
    expect(data().reduce((n, f) => n + f.length, 0)).toBe(WINDOW);
    r.feed(encode(T_WINDOW, ACK, 1, 4));
    expect(data().at(-1)!.length).toBe(4);
    expect(done).toBe(false);
    r.feed(encode(T_WINDOW, 0, 1, 100));
    expect(data().at(-1)!.length).toBe(6);
    await until(() => done);
  });

  const protocolErrors: [string, () => Buffer[]][] = [
    ["an unknown version", () => [encode(T_PING, SYN, 0, 1).fill(1, 0, 1)]],
    ["an unknown type", () => [encode(4, 0, 0, 0)]],
    ["data beyond the receive window", () => [encode(T_WINDOW, SYN, 2, 0), encode(T_DATA, 0, 2, WINDOW + 1)]],
    ["a duplicate SYN", () => [encode(T_WINDOW, SYN, 2, 0), encode(T_WINDOW, SYN, 2, 0)]],
    ["a SYN with the wrong parity", () => [encode(T_WINDOW, SYN, 1, 0)]],
    ["data after FIN", () => [encode(T_WINDOW, SYN | FIN, 2, 0), encode(T_DATA, 0, 2, 1, Buffer.from("!"))]],
  ];
  for (const [what, frames] of protocolErrors) {
    it(`fails the session with GoAway(protocol error) on ${what}`, async () => {
      const r = raw({ client: true });
      r.session.on("stream", (s) => s.on("error", () => undefined));
      const s = r.session.open();
      const streamErr = errorOf(s);
      r.feed(...frames());
      await r.closed;
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]!.code).toBe("ERR_YAMUX_PROTOCOL");
      expect(r.frames().at(-1)).toEqual({ type: T_GOAWAY, flags: 0, id: 0, length: 1 });
      expect((await streamErr).code).toBe("ERR_YAMUX_PROTOCOL");
      expect(r.session.closed).toBe(true);
    });
  }

  it("ends the session when the remote sends GoAway with an error code", async () => {
    const r = raw({ client: true });
    r.feed(encode(T_GOAWAY, 0, 0, 2));
    await r.closed;
    expect(r.errors[0]!.code).toBe("ERR_YAMUX_REMOTE_GOAWAY");
  });

  it("discards frames for unknown streams", () => {
    const r = raw({ client: true });
    r.feed(encode(T_DATA, 0, 9, 3, Buffer.from("abc")), encode(T_WINDOW, 0, 9, 10), encode(T_PING, SYN, 0, 5));
    expect(r.errors).toEqual([]);
    expect(r.frames()).toEqual([{ type: T_PING, flags: ACK, id: 0, length: 5 }]);
  });

  it("queues inbound streams until a 'stream' listener exists, refusing those beyond the backlog", async () => {
    const r = raw({ client: false, acceptBacklog: 2 });
    r.feed(encode(T_DATA, SYN, 1, 1, Buffer.from("a")), encode(T_DATA, SYN, 3, 1, Buffer.from("b")), encode(T_DATA, SYN, 5, 1, Buffer.from("c")));
    expect(r.frames()).toEqual([{ type: T_WINDOW, flags: RST, id: 5, length: 0 }]);
    const got: string[] = [];
    r.session.on("stream", (s) => {
      s.on("data", (d: Buffer) => got.push(`${s.id}:${d.toString()}`));
    });
    await until(() => got.length === 2);
    expect(got).toEqual(["1:a", "3:b"]);
    expect(r.frames().slice(1)).toEqual([
      { type: T_WINDOW, flags: ACK, id: 1, length: 0 },
      { type: T_WINDOW, flags: ACK, id: 3, length: 0 },
    ]);
  });

  it("fails the session when a keep-alive ping goes unanswered", async () => {
    const r = raw({ client: true, keepAliveMs: 20 });
    await r.closed;
    expect(r.errors[0]!.code).toBe("ERR_YAMUX_KEEPALIVE_TIMEOUT");
    expect(r.frames()[0]).toMatchObject({ type: T_PING, flags: SYN });
  });

  it("stays up with keep-alive when the remote answers", async () => {
    const { client, server } = pair("frame", { client: { keepAliveMs: 10 }, server: { keepAliveMs: 10 } });
    await sleep(100);
    expect(client.closed || server.closed).toBe(false);
    client.close();
    server.close();
  });

  it("closes with ERR_YAMUX_TRANSPORT when send throws", async () => {
    let fail = false;
    const session = new YamuxSession({
      client: true,
      send: () => {
        if (fail) throw new Error("socket gone");
      },
    });
    const error = new Promise<YamuxError>((resolve) => session.on("error", (e) => resolve(e as YamuxError)));
    const s = session.open();
    s.on("error", () => undefined);
    fail = true;
    s.write("x");
    expect((await error).code).toBe("ERR_YAMUX_TRANSPORT");
    expect(session.closed).toBe(true);
  });
});
