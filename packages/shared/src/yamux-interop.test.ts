/**
 * Interop with the reference implementation: the TypeScript client talks to a hashicorp/yamux
 * server (packages/shared/test/yamux-interop/main.go) over TCP. Needs Debian's Go and
 * golang-github-hashicorp-yamux-dev; the test fails (does not skip) without them.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { YamuxSession, type YamuxSessionOptions, type YamuxStream } from "./yamux.js";

const GOPATH = "/usr/share/gocode";
const YAMUX_SOURCE = join(GOPATH, "src/github.com/hashicorp/yamux");
const FIXTURE = fileURLToPath(new URL("../test/yamux-interop", import.meta.url));

let dir: string | undefined;
let server: ChildProcess | undefined;
/** The fixture's stdout lines so far, and its stderr (hashicorp's log). */
const lines: string[] = [];
let stderr = "";

/** The first stdout line of the fixture that matches, waiting for it if need be. */
async function line(match: (line: string) => boolean, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = lines.find(match);
    if (found !== undefined) return found;
    const exited = !server || server.exitCode !== null || server.signalCode !== null;
    if (Date.now() > deadline || exited) {
      throw new Error(`fixture printed no matching line; stdout:\n${lines.join("\n")}\nstderr:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Build and start the fixture once; every test awaits this, so a missing toolchain or yamux
 * package fails the tests instead of skipping them.
 */
let started: Promise<number> | undefined;
function fixturePort(): Promise<number> {
  started ??= startFixture();
  return started;
}

async function startFixture(): Promise<number> {
  if (!existsSync(join(YAMUX_SOURCE, "session.go"))) {
    throw new Error(`hashicorp/yamux source missing at ${YAMUX_SOURCE}: apt-get install golang-github-hashicorp-yamux-dev`);
  }
  dir = mkdtempSync(join(tmpdir(), "yamux-interop-"));
  const bin = join(dir, "yamux-interop");
  try {
    await promisify(execFile)("go", ["build", "-o", bin, "."], {
      cwd: FIXTURE,
      env: { ...process.env, GOPATH, GO111MODULE: "off", GOFLAGS: "", GOCACHE: process.env.GOCACHE ?? join(tmpdir(), "sandbar-yamux-interop-gocache") },
    });
  } catch (err) {
    throw new Error(`building the Go fixture failed (is Debian's golang-go installed?): ${(err as Error).message}`);
  }
  server = spawn(bin, [], { stdio: ["pipe", "pipe", "pipe"] });
  createInterface({ input: server.stdout! }).on("line", (l) => lines.push(l));
  server.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const listen = await line((l) => l.startsWith("LISTEN "));
  return Number(listen.split(":").at(-1));
}

beforeAll(async () => {
  // Start building early; failures surface in the tests themselves.
  await fixturePort().catch(() => undefined);
}, 180_000);

afterAll(() => {
  server?.stdin?.end(); // the fixture exits when stdin closes
  server?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** A client session over a fresh TCP connection to the fixture. */
async function dial(opts: Partial<YamuxSessionOptions> = {}): Promise<{ session: YamuxSession; socket: Socket }> {
  const socket = connect(await fixturePort(), "127.0.0.1");
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  socket.setNoDelay(true);
  const session = new YamuxSession({ ...opts, client: true, send: (frame) => void socket.write(frame) });
  socket.on("data", (d: Buffer) => session.receive(d));
  socket.on("close", () => session.close());
  socket.on("error", () => undefined);
  session.on("error", () => undefined);
  return { session, socket };
}

function readAll(stream: YamuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
    stream.once("close", () => reject(new Error("closed before end")));
  });
}

/**
 * The fixture's own stream: read the length-prefixed payload, answer its sha256 and FIN
 * (half-close), then read the verdict until the server's FIN.
 */
function answerServerStream(stream: YamuxStream): Promise<{ size: number; verdict: string }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    let expected = -1;
    let answered = false;
    stream.on("data", (c: Buffer) => {
      chunks.push(c);
      have += c.length;
      if (expected < 0 && have >= 8) expected = Number(Buffer.concat(chunks).readBigUInt64BE(0));
      if (!answered && expected >= 0 && have >= 8 + expected) {
        answered = true;
        stream.end(sha256(Buffer.concat(chunks).subarray(8, 8 + expected)));
      }
    });
    stream.once("end", () =>
      resolve({
        size: expected,
        verdict: Buffer.concat(chunks)
          .subarray(8 + expected)
          .toString(),
      }),
    );
    stream.once("error", reject);
  });
}

describe("yamux interop with hashicorp/yamux", () => {
  for (const maxStreamWindow of [undefined, 1 << 20]) {
    it(`echoes 20 concurrent streams of 2 MiB with half-close, takes a server-opened stream, answers pings (window ${maxStreamWindow ?? "default"})`, async () => {
      const { session, socket } = await dial({ maxStreamWindow, keepAliveMs: 1000 });
      const serverStream = new Promise<{ size: number; verdict: string }>((resolve, reject) => {
        session.once("stream", (s) => {
          expect(s.id % 2).toBe(0);
          answerServerStream(s).then(resolve, reject);
        });
      });

      const jobs = Array.from({ length: 20 }, () => {
        const data = randomBytes(2 << 20);
        const s = session.open();
        const echoed = readAll(s);
        let off = 0;
        while (off < data.length) {
          const n = 1 + Math.floor(Math.random() * 200_000);
          s.write(data.subarray(off, off + n));
          off += n;
        }
        s.end(); // half-close: the server keeps echoing until its own FIN
        return echoed.then((got) => ({ id: s.id, ok: got.length === data.length && sha256(got) === sha256(data) }));
      });
      const rtt = await session.ping();
      expect(rtt).toBeGreaterThanOrEqual(0);

      const results = await Promise.all(jobs);
      expect(results.filter((r) => !r.ok)).toEqual([]);
      for (const r of results) await line((l) => l === `ECHO-DONE ${r.id} ${2 << 20}`);

      const own = await serverStream;
      expect(own).toEqual({ size: (1 << 20) + 12345, verdict: "OK" });
      await line((l) => l === "SERVER-STREAM OK");

      // Go pings every 100 ms; the session must still be healthy.
      await new Promise((r) => setTimeout(r, 300));
      expect(session.closed).toBe(false);
      await expect(session.ping()).resolves.toBeGreaterThanOrEqual(0);
      expect(session.numStreams).toBe(0);

      // Close: GoAway, then the connection ends and so does the server's session.
      const ends = (): string[] => lines.filter((l) => l.startsWith("SESSION-END"));
      const before = ends().length;
      session.close();
      socket.end();
      await line(() => ends().length > before);
      expect(ends().at(-1)).toBe("SESSION-END EOF");
      expect(lines.filter((l) => l.startsWith("ECHO-ERR") || l.includes("keepalive"))).toEqual([]);
    }, 120_000);
  }
});
