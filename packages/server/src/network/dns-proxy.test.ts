import dgram from "node:dgram";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseQuestion } from "./dns-message.js";
import { DnsProxy, domainAllowed, parseUpstream, readSystemResolvers, type DnsPolicy, type ResolvedAddress } from "./dns-proxy.js";

const LOCAL = "127.0.0.1";
const log = pino({ level: "silent" });

function encodeName(qname: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of qname.split(".").filter(Boolean)) parts.push(Buffer.from([label.length]), Buffer.from(label));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function makeQuery(qname: string, id: number, qtype = 1): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2);
  h.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([h, encodeName(qname), tail]);
}

/** A NOERROR response to `query` (question copied) with A records pointing at the question name. */
function makeAResponse(query: Buffer, addrs: string[], ttl: number, idOverride?: number): Buffer {
  const q = parseQuestion(query)!;
  const h = Buffer.alloc(12);
  h.writeUInt16BE(idOverride ?? q.id, 0);
  h.writeUInt16BE(0x8180, 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(addrs.length, 6);
  const question = query.subarray(12, 12 + encodeName(q.qname).length + 4);
  const answers = addrs.map((a) => {
    const r = Buffer.alloc(16);
    r.writeUInt16BE(0xc00c, 0);
    r.writeUInt16BE(1, 2);
    r.writeUInt16BE(1, 4);
    r.writeUInt32BE(ttl, 6);
    r.writeUInt16BE(4, 10);
    Buffer.from(a.split(".").map(Number)).copy(r, 12);
    return r;
  });
  return Buffer.concat([h, question, ...answers]);
}

const rcode = (msg: Buffer) => msg.readUInt16BE(2) & 0xf;

function bindUdp(): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket("udp4");
    s.once("error", reject);
    s.bind(0, LOCAL, () => resolve(s));
  });
}

const closeUdp = (s: dgram.Socket) => new Promise<void>((resolve) => s.close(() => resolve()));

/** Fake upstream: answers A queries from `records` (other types get an empty answer), or stays silent when `silent`. */
class FakeUpstream {
  received: Buffer[] = [];
  silent = false;
  /** Send a reply with a wrong id first (must be ignored by the proxy). */
  spoofFirst = false;
  records = new Map<string, string[]>();
  responses: Buffer[] = [];
  constructor(readonly socket: dgram.Socket) {
    socket.on("message", (msg, rinfo) => {
      this.received.push(msg);
      if (this.silent) return;
      const q = parseQuestion(msg);
      if (!q) return;
      if (this.spoofFirst) socket.send(makeAResponse(msg, ["203.0.113.66"], 60, (q.id + 1) & 0xffff), rinfo.port, rinfo.address);
      const res = makeAResponse(msg, q.qtype === 1 ? (this.records.get(q.qname) ?? []) : [], 60);
      this.responses.push(res);
      socket.send(res, rinfo.port, rinfo.address);
    });
  }
  get port(): number {
    return this.socket.address().port;
  }
  static async start(): Promise<FakeUpstream> {
    return new FakeUpstream(await bindUdp());
  }
}

/** A client socket that sends a query and waits for the reply with its id. */
class Client {
  private waiters = new Map<number, (msg: Buffer) => void>();
  constructor(readonly socket: dgram.Socket) {
    socket.on("message", (msg) => {
      if (msg.length < 2) return;
      const id = msg.readUInt16BE(0);
      this.waiters.get(id)?.(msg);
      this.waiters.delete(id);
    });
  }
  send(raw: Buffer, port: number): void {
    this.socket.send(raw, port, LOCAL);
  }
  ask(raw: Buffer, port: number, waitMs = 1500): Promise<Buffer | undefined> {
    const id = raw.readUInt16BE(0);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        resolve(undefined);
      }, waitMs);
      this.waiters.set(id, (msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
      this.send(raw, port);
    });
  }
}

describe("domainAllowed", () => {
  it("matches exact names and wildcard subdomains, case-insensitively, ignoring trailing dots", () => {
    const list = ["example.com", "*.cdn.example.net.", "API.GitHub.com"];
    expect(domainAllowed("example.com", list)).toBe(true);
    expect(domainAllowed("EXAMPLE.COM.", list)).toBe(true);
    expect(domainAllowed("www.example.com", list)).toBe(false);
    expect(domainAllowed("notexample.com", list)).toBe(false);
    expect(domainAllowed("a.cdn.example.net", list)).toBe(true);
    expect(domainAllowed("a.b.cdn.example.net", list)).toBe(true);
    expect(domainAllowed("cdn.example.net", list)).toBe(false);
    expect(domainAllowed("xcdn.example.net", list)).toBe(false);
    expect(domainAllowed("api.github.com", list)).toBe(true);
    expect(domainAllowed("", list)).toBe(false);
    expect(domainAllowed("anything", ["*.", "*", ""])).toBe(false);
  });
});

describe("parseUpstream", () => {
  it("parses addresses with and without ports", () => {
    expect(parseUpstream("1.1.1.1")).toEqual({ address: "1.1.1.1", port: 53, family: "udp4" });
    expect(parseUpstream("127.0.0.53:5353")).toEqual({ address: "127.0.0.53", port: 5353, family: "udp4" });
    expect(parseUpstream("2001:db8::1")).toEqual({ address: "2001:db8::1", port: 53, family: "udp6" });
    expect(parseUpstream("[2001:db8::1]:5300")).toEqual({ address: "2001:db8::1", port: 5300, family: "udp6" });
    expect(() => parseUpstream("dns.google")).toThrow();
    expect(() => parseUpstream("1.1.1.1:0")).toThrow();
    expect(() => parseUpstream("1.1.1.1:70000")).toThrow();
    expect(() => parseUpstream("[1.1.1.1]:53")).toThrow();
    expect(() => new DnsProxy({ upstreams: [], log, policyFor: () => undefined, onResolved: async () => {} })).toThrow();
  });
});

describe("readSystemResolvers", () => {
  it("returns every nameserver line, loopback included", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sandbar-resolv-"));
    try {
      const path = join(dir, "resolv.conf");
      await writeFile(
        path,
        "# generated\nsearch example.internal\nnameserver 127.0.0.53\n  nameserver 10.0.0.2 # office\n;nameserver 9.9.9.9\nnameserver ::1\noptions edns0 trust-ad\n",
      );
      expect(await readSystemResolvers(path)).toEqual(["127.0.0.53", "10.0.0.2", "::1"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("DnsProxy", () => {
  let upstream: FakeUpstream;
  let client: Client;
  let proxy: DnsProxy | undefined;
  let policy: DnsPolicy | undefined;
  let events: string[];
  let resolved: { source: string; addrs: ResolvedAddress[] }[];
  let onResolvedImpl: (source: string, addrs: ResolvedAddress[]) => Promise<void>;
  let nextId = 1;
  const others: dgram.Socket[] = [];

  async function start(opts: { upstreams?: string[]; timeoutMs?: number; maxInFlight?: number } = {}): Promise<number> {
    proxy = new DnsProxy({
      upstreams: opts.upstreams ?? [`${LOCAL}:${upstream.port}`],
      log,
      policyFor: (ip) => (ip === LOCAL ? policy : undefined),
      onResolved: (source, addrs) => onResolvedImpl(source, addrs),
      timeoutMs: opts.timeoutMs ?? 300,
      maxInFlight: opts.maxInFlight,
    });
    const { port } = await proxy.listen(LOCAL, 0);
    return port;
  }

  beforeEach(async () => {
    upstream = await FakeUpstream.start();
    upstream.records.set("allowed.example.com", ["192.0.2.10", "192.0.2.11"]);
    upstream.records.set("a.wild.example", ["192.0.2.20"]);
    upstream.records.set("free.example.org", ["198.51.100.1"]);
    client = new Client(await bindUdp());
    policy = { mode: "allow_list", domains: ["allowed.example.com", "*.wild.example"] };
    events = [];
    resolved = [];
    onResolvedImpl = async (source, addrs) => {
      events.push("onResolved:start");
      resolved.push({ source, addrs });
      await new Promise((r) => setTimeout(r, 50));
      events.push("onResolved:done");
    };
    client.socket.on("message", () => events.push("reply"));
  });

  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
    await closeUdp(upstream.socket);
    await closeUdp(client.socket);
    for (const s of others.splice(0)) await closeUdp(s);
  });

  it("listens on an ephemeral port and reports it", async () => {
    const port = await start();
    expect(port).toBeGreaterThan(0);
    await expect(proxy!.listen(LOCAL, 0)).rejects.toThrow(/already/);
  });

  it("relays an allowed name only after onResolved has finished", async () => {
    const port = await start();
    const q = makeQuery("Allowed.Example.COM", nextId++);
    const reply = await client.ask(q, port);
    expect(reply).toBeDefined();
    expect(upstream.received).toHaveLength(1);
    expect(upstream.received[0]).toEqual(q); // forwarded unchanged
    expect(reply).toEqual(upstream.responses[0]); // relayed unchanged
    expect(resolved).toEqual([
      {
        source: LOCAL,
        addrs: [
          { address: "192.0.2.10", ttl: 60 },
          { address: "192.0.2.11", ttl: 60 },
        ],
      },
    ]);
    expect(events).toEqual(["onResolved:start", "onResolved:done", "reply"]);
  });

  it("answers NXDOMAIN for names off the allow list without asking upstream", async () => {
    const port = await start();
    for (const name of ["evil.example.net", "wild.example", "allowed.example.com.evil.net", "x.allowed.example.com"]) {
      const reply = await client.ask(makeQuery(name, nextId++), port);
      expect(reply && rcode(reply)).toBe(3);
      expect(reply!.readUInt16BE(2) & 0x8000).toBe(0x8000);
      expect(parseQuestion(Buffer.concat([reply!.subarray(0, 2), Buffer.from([1, 0]), reply!.subarray(4)]))?.qname).toBe(name);
    }
    expect(upstream.received).toHaveLength(0);
    expect(resolved).toHaveLength(0);
  });

  it("applies wildcard entries to subdomains but not the apex", async () => {
    const port = await start();
    const sub = await client.ask(makeQuery("a.wild.example.", nextId++), port);
    expect(sub && rcode(sub)).toBe(0);
    expect(resolved.map((r) => r.addrs)).toEqual([[{ address: "192.0.2.20", ttl: 60 }]]);
    const apex = await client.ask(makeQuery("wild.example", nextId++), port);
    expect(apex && rcode(apex)).toBe(3);
  });

  it("answers REFUSED under deny_all", async () => {
    policy = { mode: "deny_all", domains: ["allowed.example.com"] };
    const port = await start();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply && rcode(reply)).toBe(5);
    expect(upstream.received).toHaveLength(0);
  });

  it("forwards anything under allow_all without calling onResolved", async () => {
    policy = { mode: "allow_all", domains: [] };
    const port = await start();
    const reply = await client.ask(makeQuery("free.example.org", nextId++), port);
    expect(reply).toEqual(upstream.responses[0]);
    expect(resolved).toHaveLength(0);
  });

  it("drops queries from unknown sources silently", async () => {
    policy = undefined;
    const port = await start();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port, 400);
    expect(reply).toBeUndefined();
    expect(upstream.received).toHaveLength(0);
  });

  it("answers SERVFAIL when the upstream stays silent", async () => {
    upstream.silent = true;
    const port = await start({ timeoutMs: 200 });
    const t0 = Date.now();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply && rcode(reply)).toBe(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(upstream.received).toHaveLength(1);
    expect(resolved).toHaveLength(0);
  });

  it("tries the next upstream when the first times out", async () => {
    const silent = await FakeUpstream.start();
    others.push(silent.socket);
    silent.silent = true;
    const port = await start({ upstreams: [`${LOCAL}:${silent.port}`, `${LOCAL}:${upstream.port}`], timeoutMs: 150 });
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply && rcode(reply)).toBe(0);
    expect(silent.received).toHaveLength(1);
    expect(upstream.received).toHaveLength(1);
    expect(resolved).toHaveLength(1);
  });

  it("ignores upstream replies with the wrong id", async () => {
    upstream.spoofFirst = true;
    const port = await start();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply).toEqual(upstream.responses[0]);
    expect(resolved.flatMap((r) => r.addrs.map((a) => a.address))).toEqual(["192.0.2.10", "192.0.2.11"]);
  });

  it("answers SERVFAIL when onResolved fails", async () => {
    onResolvedImpl = async () => {
      throw new Error("nft said no");
    };
    const port = await start();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply && rcode(reply)).toBe(2);
  });

  it("does not call onResolved for an answer without A records", async () => {
    const port = await start();
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++, 28), port);
    expect(reply && rcode(reply)).toBe(0);
    expect(resolved).toHaveLength(0);
  });

  it("ignores malformed queries and keeps answering", async () => {
    const port = await start();
    const garbage = [
      Buffer.alloc(0),
      Buffer.from([1, 2, 3]),
      Buffer.from("not a dns packet at all, just text"),
      makeAResponse(makeQuery("allowed.example.com", 0x4242), ["192.0.2.99"], 60), // a response, not a query
      Buffer.concat([makeQuery("allowed.example.com", 0x4343).subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]), // pointer loop
      makeQuery("allowed.example.com", 0x4444).subarray(0, 20), // truncated
    ];
    for (const g of garbage) client.send(g, port);
    const reply = await client.ask(makeQuery("allowed.example.com", nextId++), port);
    expect(reply && rcode(reply)).toBe(0);
    expect(upstream.received).toHaveLength(1);
    expect(events.filter((e) => e === "reply")).toHaveLength(1);
  });

  it("drops queries beyond the in-flight bound", async () => {
    upstream.silent = true;
    const port = await start({ maxInFlight: 1, timeoutMs: 300 });
    const first = client.ask(makeQuery("allowed.example.com", 500), port);
    await new Promise((r) => setTimeout(r, 50));
    const second = client.ask(makeQuery("allowed.example.com", 501), port, 600);
    const [a, b] = await Promise.all([first, second]);
    expect(a && rcode(a)).toBe(2);
    expect(b).toBeUndefined();
    expect(upstream.received).toHaveLength(1);
    // the slot is free again
    upstream.silent = false;
    const c = await client.ask(makeQuery("allowed.example.com", 502), port);
    expect(c && rcode(c)).toBe(0);
  });

  it("close() abandons queries in flight without replying", async () => {
    upstream.silent = true;
    const port = await start({ timeoutMs: 5000 });
    const pending = client.ask(makeQuery("allowed.example.com", 600), port, 400);
    await new Promise((r) => setTimeout(r, 50));
    await proxy!.close();
    expect(await pending).toBeUndefined();
    await proxy!.close(); // idempotent
  });
});
