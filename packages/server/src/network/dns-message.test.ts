import { describe, expect, it } from "vitest";
import { answerAddresses, buildError, isResponseTo, parseQuestion, RCODE } from "./dns-message.js";

// ---- hand-built packets ----

function header(id: number, flags: number, qd: number, an: number, ns = 0, ar = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(flags, 2);
  b.writeUInt16BE(qd, 4);
  b.writeUInt16BE(an, 6);
  b.writeUInt16BE(ns, 8);
  b.writeUInt16BE(ar, 10);
  return b;
}

/** Uncompressed name; `tail` (e.g. a pointer) replaces the root label when given. */
function name(text: string, tail?: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (const label of text.split(".").filter(Boolean)) {
    parts.push(Buffer.from([label.length]), Buffer.from(label, "latin1"));
  }
  parts.push(tail ?? Buffer.from([0]));
  return Buffer.concat(parts);
}

function ptr(offset: number): Buffer {
  return Buffer.from([0xc0 | (offset >> 8), offset & 0xff]);
}

function u16(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16BE(v, i * 2));
  return b;
}

function rr(owner: Buffer, type: number, ttl: number, rdata: Buffer, cls = 1): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(cls, 2);
  fixed.writeUInt32BE(ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, fixed, rdata]);
}

const ip4 = (s: string) => Buffer.from(s.split(".").map(Number));

function query(qname: string, qtype = 1, id = 0x1234, flags = 0x0100): Buffer {
  return Buffer.concat([header(id, flags, 1, 0), name(qname), u16(qtype, 1)]);
}

/** Deterministic PRNG so the garbage tests are reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("parseQuestion", () => {
  it("reads id, lowercased name, type and class", () => {
    expect(parseQuestion(query("WWW.Example.COM", 28, 0xbeef))).toEqual({ id: 0xbeef, qname: "www.example.com", qtype: 28, qclass: 1 });
  });

  it("accepts the root name and trailing EDNS records", () => {
    expect(parseQuestion(query("", 2))?.qname).toBe("");
    const opt = Buffer.concat([Buffer.from([0]), u16(41, 1232), Buffer.alloc(4), u16(0)]);
    const withOpt = Buffer.concat([header(7, 0x0100, 1, 0, 0, 1), name("example.com"), u16(1, 1), opt]);
    expect(parseQuestion(withOpt)).toEqual({ id: 7, qname: "example.com", qtype: 1, qclass: 1 });
  });

  it("rejects responses, other opcodes and QDCOUNT other than 1", () => {
    expect(parseQuestion(query("example.com", 1, 1, 0x8180))).toBeUndefined();
    expect(parseQuestion(query("example.com", 1, 1, 0x2800))).toBeUndefined(); // UPDATE
    const two = Buffer.concat([header(1, 0x0100, 2, 0), name("a.com"), u16(1, 1), name("b.com"), u16(1, 1)]);
    expect(parseQuestion(two)).toBeUndefined();
    expect(parseQuestion(Buffer.concat([header(1, 0x0100, 0, 0)]))).toBeUndefined();
  });

  it("rejects truncated packets at every length", () => {
    const full = query("www.example.com");
    expect(parseQuestion(full)).toBeDefined();
    for (let len = 0; len < full.length; len++) expect(parseQuestion(full.subarray(0, len))).toBeUndefined();
  });

  it("rejects bad label types and overlong labels and names", () => {
    const ext = Buffer.concat([header(1, 0, 1, 0), Buffer.from([0x41]), Buffer.alloc(65), u16(1, 1)]);
    expect(parseQuestion(ext)).toBeUndefined();
    const reserved = Buffer.concat([header(1, 0, 1, 0), Buffer.from([0x80, 0]), u16(1, 1)]);
    expect(parseQuestion(reserved)).toBeUndefined();
    const max = Array.from({ length: 4 }, () => "a".repeat(63))
      .join(".")
      .slice(0, 253); // 255 octets on the wire
    expect(parseQuestion(query(max))?.qname).toBe(max);
    expect(parseQuestion(query(`${max}b`))).toBeUndefined();
  });

  it("rejects pointers in the question (header targets, self-loops, forward)", () => {
    expect(parseQuestion(Buffer.concat([header(1, 0, 1, 0), ptr(12), u16(1, 1)]))).toBeUndefined(); // itself
    expect(parseQuestion(Buffer.concat([header(1, 0, 1, 0), ptr(0), u16(1, 1)]))).toBeUndefined(); // header
    expect(parseQuestion(Buffer.concat([header(1, 0, 1, 0), name("a", ptr(12)), u16(1, 1)]))).toBeUndefined(); // loop
    expect(parseQuestion(Buffer.concat([header(1, 0, 1, 0), ptr(20), u16(1, 1), name("x")]))).toBeUndefined(); // forward
  });

  it("escapes dots, backslashes and unprintable bytes inside labels", () => {
    const q = Buffer.concat([
      header(1, 0, 1, 0),
      Buffer.from([11]),
      Buffer.from("example.com", "latin1"),
      Buffer.from([4, 0x61, 0x5c, 0x00, 0xff]),
      Buffer.from([0]),
      u16(1, 1),
    ]);
    expect(parseQuestion(q)?.qname).toBe("example\\.com.a\\\\\\000\\255");
  });
});

describe("answerAddresses", () => {
  const q = name("www.example.com"); // at offset 12

  it("reads A records whose owner is a pointer to the question", () => {
    const msg = Buffer.concat([header(1, 0x8180, 1, 2), q, u16(1, 1), rr(ptr(12), 1, 300, ip4("93.184.216.34")), rr(ptr(12), 1, 60, ip4("10.0.0.1"))]);
    expect(answerAddresses(msg)).toEqual([
      { address: "93.184.216.34", ttl: 300, type: "A" },
      { address: "10.0.0.1", ttl: 60, type: "A" },
    ]);
  });

  it("reads AAAA records in RFC 5952 form", () => {
    const v6 = (hex: string) => Buffer.from(hex, "hex");
    const msg = Buffer.concat([
      header(1, 0x8180, 1, 4),
      q,
      u16(28, 1),
      rr(ptr(12), 28, 30, v6("20010db8000000000000000000000001")),
      rr(ptr(12), 28, 30, v6("20010db8000000010000000000000000")),
      rr(ptr(12), 28, 30, v6("00000000000000000000000000000001")),
      rr(ptr(12), 28, 30, v6("20010db8000100000001000100010001")),
    ]);
    expect(answerAddresses(msg).map((a) => [a.address, a.type])).toEqual([
      ["2001:db8::1", "AAAA"],
      ["2001:db8:0:1::", "AAAA"],
      ["::1", "AAAA"],
      ["2001:db8:1:0:1:1:1:1", "AAAA"],
    ]);
  });

  it("skips a CNAME chain with names compressed into earlier rdata", () => {
    // www.example.com CNAME edge.cdn.example.net; edge.cdn.example.net CNAME e1.cdn.example.net; e1... A
    const qEnd = 12 + q.length + 4;
    const cname1Rdata = name("edge.cdn.example.net");
    const rr1 = rr(ptr(12), 5, 300, cname1Rdata);
    const rdata1At = qEnd + 2 + 10; // owner pointer, fixed fields
    const cdnAt = rdata1At + 5; // past "\x04edge"
    const rr2 = rr(ptr(rdata1At), 5, 300, name("e1", ptr(cdnAt)));
    const rdata2At = qEnd + rr1.length + 2 + 10;
    const rr3 = rr(ptr(rdata2At), 1, 20, ip4("192.0.2.7"));
    const msg = Buffer.concat([header(1, 0x8180, 1, 3), q, u16(1, 1), rr1, rr2, rr3]);
    expect(answerAddresses(msg)).toEqual([{ address: "192.0.2.7", ttl: 20, type: "A" }]);
  });

  it("stops at a pointer loop and keeps what came before", () => {
    const qEnd = 12 + q.length + 4;
    const first = rr(ptr(12), 1, 5, ip4("192.0.2.1"));
    const loopAt = qEnd + first.length;
    const looping = rr(ptr(loopAt), 1, 5, ip4("192.0.2.2")); // points at itself
    const after = rr(ptr(12), 1, 5, ip4("192.0.2.3"));
    const msg = Buffer.concat([header(1, 0x8180, 1, 3), q, u16(1, 1), first, looping, after]);
    expect(answerAddresses(msg).map((a) => a.address)).toEqual(["192.0.2.1"]);
    // two names pointing at each other
    const a = 12 + q.length + 4;
    const mutual = Buffer.concat([header(1, 0x8180, 1, 1), q, u16(1, 1), Buffer.from([1, 0x78]), ptr(a + 4), ptr(a), u16(1, 1, 0, 5, 4), ip4("192.0.2.9")]);
    expect(answerAddresses(mutual)).toEqual([]);
  });

  it("returns the complete records of a truncated packet", () => {
    const msg = Buffer.concat([header(1, 0x8180, 1, 2), q, u16(1, 1), rr(ptr(12), 1, 300, ip4("192.0.2.1")), rr(ptr(12), 1, 300, ip4("192.0.2.2"))]);
    expect(answerAddresses(msg)).toHaveLength(2);
    for (let len = 0; len < msg.length; len++) {
      const got = answerAddresses(msg.subarray(0, len));
      expect(got.length).toBe(len >= msg.length - 16 ? 1 : 0);
    }
  });

  it("skips records with the wrong rdlength or class, clamps huge TTLs, ignores queries", () => {
    const msg = Buffer.concat([
      header(1, 0x8180, 1, 4),
      q,
      u16(1, 1),
      rr(ptr(12), 1, 300, Buffer.from([1, 2, 3, 4, 5])),
      rr(ptr(12), 1, 300, ip4("192.0.2.1"), 3),
      rr(ptr(12), 16, 300, Buffer.from("\x03txt", "latin1")),
      rr(ptr(12), 1, 0x80000000, ip4("192.0.2.2")),
    ]);
    expect(answerAddresses(msg)).toEqual([{ address: "192.0.2.2", ttl: 0, type: "A" }]);
    const asQuery = Buffer.from(msg);
    asQuery.writeUInt16BE(0x0100, 2);
    expect(answerAddresses(asQuery)).toEqual([]);
  });

  it("handles an ANCOUNT larger than the records present", () => {
    const msg = Buffer.concat([header(1, 0x8180, 1, 65535), q, u16(1, 1), rr(ptr(12), 1, 1, ip4("192.0.2.1"))]);
    expect(answerAddresses(msg)).toEqual([{ address: "192.0.2.1", ttl: 1, type: "A" }]);
  });
});

describe("isResponseTo", () => {
  const question = { id: 9, qname: "example.com", qtype: 1, qclass: 1 };
  it("needs QR, the same id and the same question", () => {
    const resp = (id: number, flags: number, qn: string, qtype = 1) => Buffer.concat([header(id, flags, 1, 0), name(qn), u16(qtype, 1)]);
    expect(isResponseTo(resp(9, 0x8180, "EXAMPLE.com"), question)).toBe(true);
    expect(isResponseTo(resp(9, 0x0100, "example.com"), question)).toBe(false);
    expect(isResponseTo(resp(10, 0x8180, "example.com"), question)).toBe(false);
    expect(isResponseTo(resp(9, 0x8180, "example.org"), question)).toBe(false);
    expect(isResponseTo(resp(9, 0x8180, "example.com", 28), question)).toBe(false);
    expect(isResponseTo(header(9, 0x8181, 0, 0), question)).toBe(true); // FORMERR without a question
    expect(isResponseTo(header(9, 0x8180, 0, 0), question)).toBe(false);
    expect(isResponseTo(Buffer.alloc(3), question)).toBe(false);
  });
});

describe("buildError", () => {
  it("copies id and question, sets QR, RA, RD and the rcode, drops other sections", () => {
    const opt = Buffer.concat([Buffer.from([0]), u16(41, 1232), Buffer.alloc(4), u16(0)]);
    const q = Buffer.concat([header(0xabcd, 0x0110, 1, 0, 0, 1), name("Blocked.Example"), u16(1, 1), opt]);
    const r = buildError(q, RCODE.NXDOMAIN);
    expect(r.readUInt16BE(0)).toBe(0xabcd);
    expect(r.readUInt16BE(2)).toBe(0x8000 | 0x0100 | 0x0080 | 0x0010 | 3);
    expect([r.readUInt16BE(4), r.readUInt16BE(6), r.readUInt16BE(8), r.readUInt16BE(10)]).toEqual([1, 0, 0, 0]);
    expect(r.subarray(12)).toEqual(Buffer.concat([name("Blocked.Example"), u16(1, 1)]));
    expect(isResponseTo(r, { id: 0xabcd, qname: "blocked.example", qtype: 1, qclass: 1 })).toBe(true);
    expect(answerAddresses(r)).toEqual([]);
  });

  it("REFUSED keeps RD clear when the query had it clear", () => {
    const r = buildError(query("x.test", 1, 5, 0x0000), RCODE.REFUSED);
    expect(r.readUInt16BE(2)).toBe(0x8000 | 0x0080 | 5);
  });

  it("gives a bare header for unreadable queries", () => {
    expect(buildError(Buffer.from([0x12, 0x34, 0x01]), RCODE.FORMERR)).toEqual(header(0x1234, 0x8081, 0, 0));
    expect(buildError(Buffer.alloc(0), RCODE.SERVFAIL)).toEqual(header(0, 0x8082, 0, 0));
  });
});

describe("garbage", () => {
  it("never throws on random bytes or mutated packets", () => {
    const rand = prng(1035);
    const base = Buffer.concat([
      header(1, 0x8180, 1, 2),
      name("www.example.com"),
      u16(1, 1),
      rr(ptr(12), 5, 300, name("cdn", ptr(16))),
      rr(ptr(45), 1, 300, ip4("192.0.2.1")), // owner: the CNAME target
    ]);
    expect(answerAddresses(base)).toHaveLength(1);
    for (let i = 0; i < 20_000; i++) {
      let msg: Buffer;
      if (i % 2 === 0) {
        msg = Buffer.from(Array.from({ length: Math.floor(rand() * 80) }, () => Math.floor(rand() * 256)));
      } else {
        msg = Buffer.from(base);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) msg[Math.floor(rand() * msg.length)] = Math.floor(rand() * 256);
        msg = msg.subarray(0, Math.floor(rand() * (msg.length + 1)));
      }
      expect(() => {
        parseQuestion(msg);
        answerAddresses(msg);
        buildError(msg, RCODE.SERVFAIL);
        isResponseTo(msg, { id: 1, qname: "www.example.com", qtype: 1, qclass: 1 });
      }).not.toThrow();
      for (const a of answerAddresses(msg)) {
        expect(a.ttl).toBeGreaterThanOrEqual(0);
        expect(a.ttl).toBeLessThanOrEqual(0x7fffffff);
      }
    }
  });
});
