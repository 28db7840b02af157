/**
 * Minimal DNS wire format (RFC 1035) for the sandbox DNS proxy: read the question of a
 * query, read the A/AAAA records of a response, and build error responses. No
 * dependencies. Nothing here throws on malformed input; readers return undefined or
 * whatever was valid before the damage.
 */

export const TYPE_A = 1;
export const TYPE_CNAME = 5;
export const TYPE_AAAA = 28;
export const CLASS_IN = 1;

/** Response codes used by the proxy. */
export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export interface DnsQuestion {
  id: number;
  /** Lowercase, no trailing dot ("" for the root). Bytes outside printable ASCII, "." and "\" inside a label are escaped as in zone files (\DDD, \., \\). */
  qname: string;
  qtype: number;
  qclass: number;
}

export interface DnsAddress {
  address: string;
  ttl: number;
  type: "A" | "AAAA";
}

const HEADER_LEN = 12;
/** RFC 1035 2.3.4: 255 octets on the wire, length octets and the root label included. */
const MAX_NAME_WIRE_LEN = 255;
/** Belt and braces: pointers must also go strictly backwards, which already bounds them. */
const MAX_POINTER_HOPS = 64;

const FLAG_QR = 0x8000;
const MASK_OPCODE = 0x7800;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const FLAG_CD = 0x0010;

interface NameRead {
  labels: Buffer[];
  /** Offset just past the name where it was read (past the first pointer, if any). */
  end: number;
}

/**
 * Read a possibly compressed name at `offset`. Every pointer must point into the
 * message body (not the header) and strictly before the start of the run of labels it
 * ends, so chains always terminate; loops, forward pointers, reserved label types,
 * overlong names and truncation give undefined.
 */
function readName(msg: Buffer, offset: number): NameRead | undefined {
  const labels: Buffer[] = [];
  let pos = offset;
  let runStart = offset;
  let end = -1;
  let wireLen = 1; // the root label
  let hops = 0;
  for (;;) {
    if (pos >= msg.length) return undefined;
    const len = msg[pos]!;
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= msg.length) return undefined;
      const target = ((len & 0x3f) << 8) | msg[pos + 1]!;
      if (end < 0) end = pos + 2;
      if (target < HEADER_LEN || target >= runStart) return undefined;
      if (++hops > MAX_POINTER_HOPS) return undefined;
      pos = runStart = target;
      continue;
    }
    if (kind !== 0) return undefined; // 0x40 (extended) and 0x80 (reserved) label types
    if (len === 0) {
      if (end < 0) end = pos + 1;
      return { labels, end };
    }
    wireLen += len + 1;
    if (wireLen > MAX_NAME_WIRE_LEN) return undefined;
    if (pos + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
}

/** Presentation form of a label: ASCII lowercased, anything ambiguous escaped. */
function labelText(label: Buffer): string {
  let s = "";
  for (const b of label) {
    if (b >= 0x41 && b <= 0x5a) s += String.fromCharCode(b + 0x20);
    else if (b === 0x2e || b === 0x5c) s += "\\" + String.fromCharCode(b);
    else if (b > 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += "\\" + String(b).padStart(3, "0");
  }
  return s;
}

function nameText(labels: Buffer[]): string {
  return labels.map(labelText).join(".");
}

interface RawQuestion extends DnsQuestion {
  flags: number;
  labels: Buffer[];
}

/** Header plus the single question, whatever the QR bit and opcode say. */
function readQuestion(msg: Buffer): RawQuestion | undefined {
  if (msg.length < HEADER_LEN) return undefined;
  if (msg.readUInt16BE(4) !== 1) return undefined;
  const name = readName(msg, HEADER_LEN);
  if (!name || name.end + 4 > msg.length) return undefined;
  return {
    id: msg.readUInt16BE(0),
    flags: msg.readUInt16BE(2),
    qname: nameText(name.labels),
    qtype: msg.readUInt16BE(name.end),
    qclass: msg.readUInt16BE(name.end + 2),
    labels: name.labels,
  };
}

/**
 * The question of a standard query (QR=0, OPCODE=QUERY, QDCOUNT=1), or undefined if
 * `msg` is anything else or malformed. Trailing sections (e.g. an EDNS OPT record)
 * are allowed and not inspected.
 */
export function parseQuestion(msg: Buffer): DnsQuestion | undefined {
  try {
    const q = readQuestion(msg);
    if (!q || q.flags & FLAG_QR || (q.flags & MASK_OPCODE) !== 0) return undefined;
    return { id: q.id, qname: q.qname, qtype: q.qtype, qclass: q.qclass };
  } catch {
    return undefined;
  }
}

/**
 * Whether `response` answers `query`: QR=1, same id, and the same question (name
 * compared case-insensitively, so 0x20-randomised upstream echoes still match). A
 * response without a question is accepted only with a nonzero RCODE (some servers
 * send FORMERR/NOTIMP that way); it carries no answers.
 */
export function isResponseTo(response: Buffer, query: DnsQuestion): boolean {
  try {
    if (response.length < HEADER_LEN) return false;
    const flags = response.readUInt16BE(2);
    if (!(flags & FLAG_QR) || response.readUInt16BE(0) !== query.id) return false;
    if (response.readUInt16BE(4) === 0) return (flags & 0xf) !== 0;
    const q = readQuestion(response);
    return !!q && q.qname === query.qname && q.qtype === query.qtype && q.qclass === query.qclass;
  } catch {
    return false;
  }
}

function formatIpv6(b: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: the longest run (>= 2) of zero groups becomes "::", the first on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/**
 * The A and AAAA records (class IN) of a response's answer section, in order. CNAMEs
 * and other types are skipped; a record with a wrong RDLENGTH for its type is skipped;
 * the walk stops at the first record that cannot be read (truncation, bad name), and
 * what was valid before it is returned. TTLs with the top bit set count as 0 (RFC 2181
 * 8). Not a response (QR=0) or no header: [].
 */
export function answerAddresses(msg: Buffer): DnsAddress[] {
  const out: DnsAddress[] = [];
  try {
    if (msg.length < HEADER_LEN || !(msg.readUInt16BE(2) & FLAG_QR)) return out;
    const qdcount = msg.readUInt16BE(4);
    const ancount = msg.readUInt16BE(6);
    let pos = HEADER_LEN;
    for (let i = 0; i < qdcount; i++) {
      const name = readName(msg, pos);
      if (!name) return out;
      pos = name.end + 4;
      if (pos > msg.length) return out;
    }
    for (let i = 0; i < ancount; i++) {
      const name = readName(msg, pos);
      if (!name || name.end + 10 > msg.length) return out;
      pos = name.end;
      const type = msg.readUInt16BE(pos);
      const cls = msg.readUInt16BE(pos + 2);
      const rawTtl = msg.readUInt32BE(pos + 4);
      const rdlength = msg.readUInt16BE(pos + 8);
      pos += 10;
      if (pos + rdlength > msg.length) return out;
      const ttl = rawTtl > 0x7fffffff ? 0 : rawTtl;
      if (cls === CLASS_IN && type === TYPE_A && rdlength === 4) {
        out.push({ address: `${msg[pos]}.${msg[pos + 1]}.${msg[pos + 2]}.${msg[pos + 3]}`, ttl, type: "A" });
      } else if (cls === CLASS_IN && type === TYPE_AAAA && rdlength === 16) {
        out.push({ address: formatIpv6(msg.subarray(pos, pos + 16)), ttl, type: "AAAA" });
      }
      pos += rdlength;
    }
  } catch {
    // unreachable with the bounds checks above; never let a packet throw
  }
  return out;
}

/**
 * An error response to `query`: same id, opcode, RD and CD; QR=1, RA=1, RCODE=`rcode`;
 * the question copied (uncompressed) and no other records (any EDNS OPT is dropped).
 * A query whose question cannot be read gets a bare header with QDCOUNT=0 (id 0 if
 * even the id is missing).
 */
export function buildError(query: Buffer, rcode: number): Buffer {
  let id = 0;
  let qflags = 0;
  let question: RawQuestion | undefined;
  try {
    if (query.length >= 2) id = query.readUInt16BE(0);
    if (query.length >= 4) qflags = query.readUInt16BE(2);
    question = readQuestion(query);
  } catch {
    question = undefined;
  }
  const flags = FLAG_QR | (qflags & (MASK_OPCODE | FLAG_RD | FLAG_CD)) | FLAG_RA | (rcode & 0xf);
  const header = Buffer.alloc(HEADER_LEN);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(flags, 2);
  if (!question) return header;
  header.writeUInt16BE(1, 4);
  const parts: Buffer[] = [header];
  for (const label of question.labels) parts.push(Buffer.from([label.length]), label);
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(question.qtype, 1);
  tail.writeUInt16BE(question.qclass, 3);
  parts.push(tail);
  return Buffer.concat(parts);
}
