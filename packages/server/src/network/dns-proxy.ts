import dgram from "node:dgram";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import type { Logger } from "pino";
import { answerAddresses, buildError, isResponseTo, parseQuestion, RCODE, type DnsQuestion } from "./dns-message.js";

/**
 * DNS proxy enforcing per-sandbox egress policy by name.
 *
 * Sandboxes use the server as their resolver. For each UDP query the proxy looks up
 * the policy of the source address and:
 *  - unknown source (policyFor gives undefined): drops it silently, so the proxy is
 *    never an open resolver or a reflector;
 *  - `deny_all`: answers REFUSED;
 *  - `allow_list` and the name matches no entry: answers NXDOMAIN rather than
 *    REFUSED, so resolvers fail fast: NXDOMAIN is a final answer, whereas REFUSED
 *    makes stub resolvers retry the other nameservers (the same proxy) first;
 *  - `allow_all`, or `allow_list` and the name matches: forwards the query bytes
 *    unchanged to the upstreams in order (each attempt from a fresh, connected UDP
 *    socket, so responses are matched by upstream address, port, id and question),
 *    moving to the next upstream on timeout or socket error. For `allow_list` the
 *    response's A records are passed to `onResolved`, which is awaited *before* the
 *    response is relayed, so the firewall admits an address before the client can
 *    connect to it. If `onResolved` rejects, the client gets SERVFAIL instead.
 *    All upstreams failing gives SERVFAIL.
 *
 * Malformed queries are logged at debug and dropped. UDP only: a truncated (TC=1)
 * upstream response is relayed as is, and a client retrying over TCP finds no server.
 */

export type DnsPolicy = { mode: "deny_all" | "allow_all" | "allow_list"; domains: string[] };

export interface ResolvedAddress {
  address: string;
  ttl: number;
}

export interface DnsProxyOptions {
  /** "ip" or "ip:port" ("[v6]:port" for IPv6 with a port); the port defaults to 53. Tried in order. */
  upstreams: string[];
  log: Logger;
  /** Policy of the sandbox owning `sourceIp`, or undefined if no sandbox has it. */
  policyFor: (sourceIp: string) => DnsPolicy | undefined;
  /**
   * Called (allow_list only) with the IPv4 addresses of a response before it is
   * relayed, when there is at least one. TTLs are the records' own and may be 0.
   */
  onResolved: (sourceIp: string, addrs: ResolvedAddress[], policy: DnsPolicy) => Promise<void>;
  /** Per-upstream attempt timeout; default 2000 ms. */
  timeoutMs?: number;
  /** Queries being forwarded at once; beyond this new ones are dropped. Default 1024. */
  maxInFlight?: number;
}

export interface Upstream {
  address: string;
  port: number;
  family: "udp4" | "udp6";
}

const DEFAULT_TIMEOUT_MS = 2000;
const DEFAULT_MAX_IN_FLIGHT = 1024;

/** Parse "ip", "ip:port", "v6", "[v6]" or "[v6]:port"; throws on anything else. */
export function parseUpstream(spec: string): Upstream {
  const s = spec.trim();
  let address = s;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracketed) {
    address = bracketed[1]!;
    portText = bracketed[2];
  } else if (s.indexOf(":") !== -1 && s.indexOf(":") === s.lastIndexOf(":")) {
    const colon = s.indexOf(":");
    address = s.slice(0, colon);
    portText = s.slice(colon + 1);
  }
  const version = isIP(address);
  if (version === 0 || (bracketed && version !== 6)) throw new Error(`invalid DNS upstream ${JSON.stringify(spec)}`);
  let port = 53;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) throw new Error(`invalid port in DNS upstream ${JSON.stringify(spec)}`);
  }
  return { address, port, family: version === 6 ? "udp6" : "udp4" };
}

/** Lowercase, trimmed, trailing dots removed. */
export function normalizeDomain(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, "");
}

/**
 * Whether `qname` is allowed by `domains`: an entry `example.com` matches exactly
 * `example.com`; `*.example.com` matches any name below `example.com` at any depth
 * but not `example.com` itself. Case-insensitive; trailing dots are ignored.
 */
export function domainAllowed(qname: string, domains: readonly string[]): boolean {
  const name = normalizeDomain(qname);
  if (!name) return false;
  for (const raw of domains) {
    const entry = normalizeDomain(raw);
    if (entry.startsWith("*.")) {
      const base = entry.slice(2);
      if (base && name.length > base.length + 1 && name.endsWith(`.${base}`)) return true;
    } else if (entry && entry === name) {
      return true;
    }
  }
  return false;
}

/** IPv4-mapped IPv6 ("::ffff:10.0.0.1", as a dual-stack socket reports) to plain IPv4. */
function unmapIpv4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Comparable form of an address: IPv6 compressed and lowercased, zone dropped. */
function canonicalIp(address: string): string {
  const plain = unmapIpv4(address).replace(/%.*$/, "");
  if (isIP(plain) !== 6) return plain;
  try {
    return new URL(`http://[${plain}]/`).hostname.slice(1, -1);
  } catch {
    return plain.toLowerCase();
  }
}

/** Nameserver addresses from a resolv.conf, in file order, loopback ones included (the proxy runs on the host). */
export async function readSystemResolvers(path = "/etc/resolv.conf"): Promise<string[]> {
  const text = await readFile(path, "utf8");
  const out: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*nameserver\s+([^\s#;]+)/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

export class DnsProxy {
  private readonly upstreams: (Upstream & { canonical: string })[];
  private readonly log: Logger;
  private readonly policyFor: DnsProxyOptions["policyFor"];
  private readonly onResolved: DnsProxyOptions["onResolved"];
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private socket: dgram.Socket | undefined;
  private closed = false;
  private inFlight = 0;
  /** Aborts for upstream exchanges under way, so close() leaves no sockets or timers behind. */
  private readonly exchanges = new Set<() => void>();

  /** Throws if `upstreams` is empty or an entry is not an IP address with an optional port. */
  constructor(opts: DnsProxyOptions) {
    if (opts.upstreams.length === 0) throw new Error("DNS proxy needs at least one upstream");
    this.upstreams = opts.upstreams.map((spec) => {
      const up = parseUpstream(spec);
      return { ...up, canonical: canonicalIp(up.address) };
    });
    this.log = opts.log;
    this.policyFor = opts.policyFor;
    this.onResolved = opts.onResolved;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  }

  /** Bind the UDP socket (`host` must be an IP address; port 0 picks one) and report the port bound. */
  async listen(host: string, port: number): Promise<{ port: number }> {
    if (this.closed) throw new Error("DNS proxy is closed");
    if (this.socket) throw new Error("DNS proxy is already listening");
    const version = isIP(host);
    if (version === 0) throw new Error(`DNS proxy listen address must be an IP address, got ${JSON.stringify(host)}`);
    const sock = dgram.createSocket(version === 6 ? "udp6" : "udp4");
    this.socket = sock;
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => {
          sock.off("listening", onListening);
          reject(err);
        };
        const onListening = () => {
          sock.off("error", onError);
          resolve();
        };
        sock.once("error", onError);
        sock.once("listening", onListening);
        sock.bind({ address: host, port });
      });
    } catch (err) {
      this.socket = undefined;
      try {
        sock.close();
      } catch {
        // already closed
      }
      throw err;
    }
    sock.on("error", (err) => this.log.warn({ err }, "dns proxy: socket error"));
    sock.on("message", (msg, rinfo) => {
      try {
        this.handle(msg, rinfo);
      } catch (err) {
        this.log.debug({ err, source: rinfo.address }, "dns proxy: query dropped after an error");
      }
    });
    const bound = sock.address().port;
    this.log.info({ host, port: bound, upstreams: this.upstreams.map((u) => `${u.address}:${u.port}`) }, "dns proxy listening");
    return { port: bound };
  }

  /** Stop answering; exchanges under way are abandoned without replies. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const abort of [...this.exchanges]) abort();
    const sock = this.socket;
    this.socket = undefined;
    if (!sock) return;
    await new Promise<void>((resolve) => {
      try {
        sock.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }

  private handle(msg: Buffer, client: dgram.RemoteInfo): void {
    if (this.closed) return;
    const source = unmapIpv4(client.address);
    const policy = this.policyFor(source);
    if (!policy) {
      this.log.debug({ source }, "dns proxy: query from unknown source dropped");
      return;
    }
    const question = parseQuestion(msg);
    if (!question) {
      this.log.debug({ source, bytes: msg.length }, "dns proxy: malformed query dropped");
      return;
    }
    const ctx = { source, qname: question.qname, qtype: question.qtype };
    const admit = policy.mode === "allow_list";
    if (admit) {
      if (!domainAllowed(question.qname, policy.domains)) {
        this.log.debug(ctx, "dns proxy: name not allowed, NXDOMAIN");
        this.reply(buildError(msg, RCODE.NXDOMAIN), client);
        return;
      }
    } else if (policy.mode !== "allow_all") {
      // deny_all, and any mode this code does not know
      this.log.debug(ctx, "dns proxy: egress denied, REFUSED");
      this.reply(buildError(msg, RCODE.REFUSED), client);
      return;
    }
    if (this.inFlight >= this.maxInFlight) {
      this.log.debug(ctx, "dns proxy: too many queries in flight, dropped");
      return;
    }
    this.inFlight++;
    void this.forward(msg, question, admit ? policy : undefined, client, ctx);
  }

  /** Never rejects. */
  /** `admitFor`: the allow_list policy the query was judged by (answers are admitted under it only). */
  private async forward(query: Buffer, question: DnsQuestion, admitFor: DnsPolicy | undefined, client: dgram.RemoteInfo, ctx: object): Promise<void> {
    try {
      const response = await this.resolve(query, question, ctx);
      if (this.closed) return;
      if (!response) {
        this.log.debug(ctx, "dns proxy: no upstream answered, SERVFAIL");
        this.reply(buildError(query, RCODE.SERVFAIL), client);
        return;
      }
      if (admitFor) {
        const addrs = answerAddresses(response)
          .filter((a) => a.type === "A")
          .map(({ address, ttl }) => ({ address, ttl }));
        if (addrs.length > 0) {
          try {
            await this.onResolved(unmapIpv4(client.address), addrs, admitFor);
          } catch (err) {
            this.log.warn({ ...ctx, err, addrs }, "dns proxy: admitting resolved addresses failed, SERVFAIL");
            this.reply(buildError(query, RCODE.SERVFAIL), client);
            return;
          }
        }
      }
      this.reply(response, client);
    } catch (err) {
      this.log.warn({ ...ctx, err }, "dns proxy: forwarding failed");
    } finally {
      this.inFlight--;
    }
  }

  private async resolve(query: Buffer, question: DnsQuestion, ctx: object): Promise<Buffer | undefined> {
    for (const upstream of this.upstreams) {
      if (this.closed) return undefined;
      const response = await this.exchange(upstream, query, question, ctx);
      if (response) return response;
    }
    return undefined;
  }

  /** One attempt against one upstream: the response, or undefined on timeout, error or close. */
  private exchange(upstream: Upstream & { canonical: string }, query: Buffer, question: DnsQuestion, ctx: object): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const sock = dgram.createSocket(upstream.family);
      const where = `${upstream.address}:${upstream.port}`;
      let done = false;
      const finish = (response?: Buffer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.exchanges.delete(abort);
        try {
          sock.close();
        } catch {
          // already closed
        }
        resolve(response);
      };
      const abort = () => finish();
      const timer = setTimeout(() => {
        this.log.debug({ ...ctx, upstream: where }, "dns proxy: upstream timed out");
        finish();
      }, this.timeoutMs);
      this.exchanges.add(abort);
      sock.on("error", (err) => {
        this.log.debug({ ...ctx, upstream: where, err }, "dns proxy: upstream socket error");
        finish();
      });
      sock.on("message", (msg, rinfo) => {
        if (rinfo.port !== upstream.port || canonicalIp(rinfo.address) !== upstream.canonical) return;
        if (!isResponseTo(msg, question)) {
          this.log.debug({ ...ctx, upstream: where }, "dns proxy: mismatched upstream response ignored");
          return;
        }
        finish(msg);
      });
      // Connected: the kernel drops datagrams from anyone else and reports ICMP errors.
      sock.once("connect", () => {
        if (done) return;
        sock.send(query, (err) => {
          if (err) {
            this.log.debug({ ...ctx, upstream: where, err }, "dns proxy: upstream send failed");
            finish();
          }
        });
      });
      sock.connect(upstream.port, upstream.address);
    });
  }

  private reply(msg: Buffer, client: dgram.RemoteInfo): void {
    const sock = this.socket;
    if (this.closed || !sock) return;
    try {
      sock.send(msg, client.port, client.address, (err) => {
        if (err) this.log.debug({ err, client: client.address }, "dns proxy: reply failed");
      });
    } catch (err) {
      this.log.debug({ err, client: client.address }, "dns proxy: reply failed");
    }
  }
}
