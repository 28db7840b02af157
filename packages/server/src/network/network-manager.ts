import { readdir, writeFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { NetworkPolicy } from "@sandbar/shared";
import type { DnsPolicy } from "./dns-proxy.js";
import { run } from "../util/proc.js";
import { blockAt, parseSubnet, type Block } from "./addresses.js";

/** Prefix of every host-side veth; the firewall matches on it. */
export const VETH_PREFIX = "sbx";
const NETNS_DIR = "/run/netns";
/** The host firewall table; shared by every sandbar server on the host. */
export const TABLE = "sandbar";
/**
 * Closed even under allow_all unless an allow_cidrs entry names them: "this" network,
 * loopback, link-local (cloud metadata at 169.254.169.254), multicast and reserved space.
 */
const ALWAYS_CLOSED = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "100.100.100.200", "224.0.0.0/4", "240.0.0.0/4"];

/** A sandbox's network: its namespace and addresses. */
export interface SandboxNetwork extends Block {
  netns: string;
  netnsPath: string;
  veth: string;
}

/**
 * Owner of per-sandbox network namespaces, their veth pairs, and the host firewall
 * table `inet sandbar`. A /30 is claimed host-wide by creating its veth (the kernel
 * refuses a duplicate name), so several servers on one host never share an address.
 */
export class NetworkManager {
  private readonly claiming = new Set<number>();
  private dnsPort = 0;
  /** Block index of each sandbox with rules, and the policy behind each sandbox address. */
  private readonly bySandbox = new Map<string, number>();
  private readonly byIp = new Map<string, { sandboxId: string; index: number; policy: NetworkPolicy; dns: DnsPolicy; learned: Map<string, number>; admitting: Promise<void> }>();

  constructor(
    private readonly subnet: string,
    /** Namespace names start with this; it is unique per server instance. */
    private readonly netnsPrefix: string,
    private readonly log: Logger,
  ) {
    parseSubnet(subnet);
  }

  /**
   * Install the host firewall (idempotent; several servers on one host share it): sandboxes
   * reach nothing on the host or each other, and each sandbox's egress goes through its own
   * chain `f<index>`, jumped to from a verdict map keyed by its veth. Per-sandbox chains
   * survive a server restart; `reconcile` removes those whose veth is gone.
   */
  async init(): Promise<void> {
    const base = `
table inet ${TABLE} {
  map fwdmap { type ifname : verdict; }
  map inmap { type ifname : verdict; }
  map premap { type ifname : verdict; }
  chain input { type filter hook input priority -5; policy accept; }
  chain forward { type filter hook forward priority -5; policy accept; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
flush chain inet ${TABLE} input
flush chain inet ${TABLE} forward
flush chain inet ${TABLE} prerouting
flush chain inet ${TABLE} postrouting
add rule inet ${TABLE} input iifname "${VETH_PREFIX}*" ct state established,related accept
add rule inet ${TABLE} input iifname vmap @inmap
add rule inet ${TABLE} input iifname "${VETH_PREFIX}*" counter drop
add rule inet ${TABLE} forward oifname "${VETH_PREFIX}*" ct state established,related accept
add rule inet ${TABLE} forward iifname vmap @fwdmap
add rule inet ${TABLE} forward iifname "${VETH_PREFIX}*" counter drop
add rule inet ${TABLE} forward oifname "${VETH_PREFIX}*" counter drop
add rule inet ${TABLE} prerouting iifname vmap @premap
add rule inet ${TABLE} postrouting iifname "${VETH_PREFIX}*" oifname != "${VETH_PREFIX}*" masquerade
`;
    await run(["nft", "-f", "-"], { input: base });
    // Egress needs routing; the forward chain above decides what may pass.
    await writeFile("/proc/sys/net/ipv4/ip_forward", "1\n").catch((e: unknown) => this.log.warn({ err: String(e) }, "could not enable IPv4 forwarding; sandboxes will have no egress"));
    await this.reconcile();
  }

  /** The port of the DNS proxy that sandboxes' port-53 traffic is redirected to. */
  setDnsPort(port: number): void {
    this.dnsPort = port;
  }

  /**
   * Write the egress rules of a sandbox whose network exists (after create, on adoption and
   * on a policy change). One nft transaction: the old rules are replaced atomically.
   */
  async applyPolicy(sandboxId: string, block: Block, policy: NetworkPolicy): Promise<void> {
    const n = block.index;
    const veth = `${VETH_PREFIX}${n}`;
    const t = `inet ${TABLE}`;
    const lines = [
      `add chain ${t} f${n}`,
      `flush chain ${t} f${n}`,
      `add set ${t} a${n} { type ipv4_addr; flags timeout; }`,
      `flush set ${t} a${n}`,
      `add rule ${t} f${n} meta nfproto ipv6 drop`,
      // Another sandbox, whatever server made it, is never a destination.
      `add rule ${t} f${n} oifname "${VETH_PREFIX}*" drop`,
      ...policy.allow_cidrs.map((c) => `add rule ${t} f${n} ip daddr ${c} accept`),
      // Only an explicit CIDR opens these; an allowed name resolving into them does not.
      `add rule ${t} f${n} ip daddr { ${ALWAYS_CLOSED.join(", ")} } drop`,
      ...(policy.egress === "allow_list" ? [`add rule ${t} f${n} ip daddr @a${n} accept`] : []),
      `add rule ${t} f${n} ${policy.egress === "allow_all" ? "accept" : "drop"}`,
    ];
    lines.push(`add chain ${t} i${n}`, `flush chain ${t} i${n}`, `add chain ${t} p${n}`, `flush chain ${t} p${n}`);
    if (this.dnsPort) {
      lines.push(
        `add rule ${t} p${n} ip daddr ${block.hostIp} udp dport 53 redirect to :${this.dnsPort}`,
        `add rule ${t} i${n} ip daddr ${block.hostIp} udp dport ${this.dnsPort} accept`,
      );
    }
    lines.push(
      `add element ${t} fwdmap { "${veth}" : jump f${n} }`,
      `add element ${t} inmap { "${veth}" : jump i${n} }`,
      `add element ${t} premap { "${veth}" : jump p${n} }`,
    );
    await run(["nft", "-f", "-"], { input: lines.join("\n") + "\n" });
    this.bySandbox.set(sandboxId, n);
    // A new object per application: answers to queries judged under an older one are not admitted.
    this.byIp.set(block.sandboxIp, { sandboxId, index: n, policy, dns: { mode: policy.egress, domains: policy.allow_domains }, learned: new Map(), admitting: Promise.resolve() });
  }

  /** The DNS view of the policy of the sandbox at this address (DNS proxy lookups). */
  policyForIp(ip: string): DnsPolicy | undefined {
    return this.byIp.get(ip)?.dns;
  }

  /**
   * Admit addresses a sandbox resolved through the DNS proxy (allow_list mode) until their TTL
   * runs out (at least a minute, at most a day).
   */
  async admitResolved(ip: string, addrs: { address: string; ttl: number }[], judgedBy?: DnsPolicy): Promise<void> {
    const entry = this.byIp.get(ip);
    // The sandbox, its policy or its address changed while the query was out: admit nothing.
    if (!entry || entry.policy.egress !== "allow_list" || (judgedBy !== undefined && entry.dns !== judgedBy)) return;
    // One at a time per sandbox: an answer relayed while an earlier admission of the same
    // address is still running would reach the client before the address is open.
    const next = entry.admitting.then(() => this.admitNow(ip, entry, addrs));
    entry.admitting = next.catch(() => undefined);
    return next;
  }

  private async admitNow(ip: string, entry: { index: number; learned: Map<string, number> }, addrs: { address: string; ttl: number }[]): Promise<void> {
    const now = Date.now();
    const fresh: string[] = [];
    const renew: string[] = [];
    for (const a of addrs) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(a.address)) continue;
      const ttl = Math.min(86_400, Math.max(60, Math.round(a.ttl)));
      const until = entry.learned.get(a.address);
      // An element's timeout cannot be extended in place: renew by delete + add once half used.
      const line = `${a.address} timeout ${ttl}s`;
      if (until === undefined || until <= now) fresh.push(line);
      else if (until - now < (ttl * 1000) / 2) renew.push(line);
      else continue;
      entry.learned.set(a.address, now + ttl * 1000);
    }
    const set = `inet ${TABLE} a${entry.index}`;
    if (renew.length) await run(["nft", `delete element ${set} { ${renew.map((l) => l.split(" ")[0]).join(", ")} }`], { check: false });
    const all = [...fresh, ...renew];
    if (all.length) {
      const r = await run(["nft", `add element ${set} { ${all.join(", ")} }`], { check: false });
      if (r.code !== 0) {
        for (const line of all) entry.learned.delete(line.split(" ")[0] as string);
        this.log.warn({ ip, err: r.stderr.trim() }, "could not admit resolved addresses");
        // The DNS proxy answers SERVFAIL: the client retries rather than meeting a closed address.
        throw new Error(`nft: ${r.stderr.trim()}`);
      }
    }
  }

  /** Remove a sandbox's egress chains and map entries. Idempotent. */
  private async removeRules(index: number): Promise<void> {
    const t = `inet ${TABLE}`;
    const veth = `${VETH_PREFIX}${index}`;
    const steps = [
      `delete element ${t} fwdmap { "${veth}" }`,
      `delete element ${t} inmap { "${veth}" }`,
      `delete element ${t} premap { "${veth}" }`,
      ...["f", "i", "p"].flatMap((c) => [`flush chain ${t} ${c}${index}`, `delete chain ${t} ${c}${index}`]),
      `delete set ${t} a${index}`,
    ];
    const r = await run(["nft", "-f", "-"], { input: steps.join("\n") + "\n", check: false });
    if (r.code === 0) return;
    // Some part was already gone (another server's reconcile, a half-made sandbox): one by one.
    for (const step of steps) await run(["nft", step], { check: false });
  }

  /** Remove per-sandbox rules whose veth no longer exists (a crash between the two). */
  async reconcile(): Promise<void> {
    const r = await run(["nft", "-j", "list", "table", "inet", TABLE], { check: false });
    if (r.code !== 0) return;
    const indexes = new Set<number>();
    try {
      const doc = JSON.parse(r.stdout) as { nftables: Record<string, { name?: string }>[] };
      for (const item of doc.nftables) {
        const name = (item.chain ?? item.set)?.name ?? "";
        const m = /^[fipa](\d+)$/.exec(name);
        if (m) indexes.add(Number(m[1]));
      }
    } catch {
      return;
    }
    if (indexes.size === 0) return;
    const used = await this.usedIndexes();
    for (const index of indexes) {
      if (used.has(index) || this.claiming.has(index)) continue;
      this.log.warn({ index }, "removing egress rules of a sandbox network that no longer exists");
      await this.removeRules(index);
    }
  }

  netnsName(sandboxId: string): string {
    return `${this.netnsPrefix}${sandboxId}`;
  }

  /** Create the namespace and veth for a sandbox; `preferred` reuses its old block. */
  async create(sandboxId: string, preferred?: number | null): Promise<SandboxNetwork> {
    const netns = this.netnsName(sandboxId);
    await this.destroyNetns(netns);
    const { blocks } = parseSubnet(this.subnet);
    const used = await this.usedIndexes();
    const candidates: number[] = [];
    if (preferred && !used.has(preferred) && !this.claiming.has(preferred)) candidates.push(preferred);
    for (let i = 1; i < blocks && candidates.length < 64; i++) {
      if (!used.has(i) && !this.claiming.has(i) && i !== preferred) candidates.push(i);
    }
    for (const index of candidates) {
      this.claiming.add(index);
      try {
        const net = await this.tryCreate(sandboxId, netns, index);
        if (net) return net;
      } finally {
        this.claiming.delete(index);
      }
    }
    throw new Error(`no free address block in ${this.subnet}`);
  }

  private async tryCreate(sandboxId: string, netns: string, index: number): Promise<SandboxNetwork | undefined> {
    const block = blockAt(this.subnet, index);
    const veth = `${VETH_PREFIX}${index}`;
    const host = [`netns add ${netns}`, `link add ${veth} type veth peer name eth0 netns ${netns}`, `addr add ${block.hostIp}/30 dev ${veth}`, `link set ${veth} up`];
    const r = await run(["ip", "-batch", "-"], { input: host.join("\n") + "\n", check: false });
    if (r.code !== 0) {
      await this.destroyNetns(netns);
      if (/exists/i.test(r.stderr)) return undefined; // another sandbox or server took it
      throw new Error(`network setup for ${sandboxId} failed: ${r.stderr.trim()}`);
    }
    const inner = [`addr add ${block.sandboxIp}/30 dev eth0`, "link set eth0 up", "link set lo up", `route add default via ${block.hostIp}`];
    const r2 = await run(["ip", "-n", netns, "-batch", "-"], { input: inner.join("\n") + "\n", check: false });
    if (r2.code !== 0) {
      await this.destroyNetns(netns);
      throw new Error(`network setup inside ${netns} failed: ${r2.stderr.trim()}`);
    }
    return { ...block, netns, netnsPath: `${NETNS_DIR}/${netns}`, veth };
  }

  /**
   * Remove a sandbox's namespace (its veth pair goes with it) and its egress rules.
   * `index` is the block it had, when the caller knows it. Idempotent.
   */
  async destroy(sandboxId: string, index?: number | null): Promise<void> {
    await this.destroyNetns(this.netnsName(sandboxId));
    const n = this.bySandbox.get(sandboxId) ?? index ?? undefined;
    this.bySandbox.delete(sandboxId);
    if (n === undefined) return;
    // Only this sandbox's entry: a stale index may belong to another sandbox by now.
    for (const [ip, e] of this.byIp) if (e.sandboxId === sandboxId) this.byIp.delete(ip);
    // Another sandbox may have claimed the index meanwhile; its rules are not ours to remove.
    if (this.claiming.has(n)) return;
    this.claiming.add(n);
    try {
      if (!(await this.usedIndexes()).has(n)) await this.removeRules(n);
    } finally {
      this.claiming.delete(n);
    }
  }

  private async destroyNetns(netns: string): Promise<void> {
    // The kernel frees a namespace (and so the veth pair) lazily, on a work queue; deleting
    // the pair from inside is immediate, so the block's index is free when this returns.
    await run(["ip", "-n", netns, "link", "del", "eth0"], { check: false });
    const r = await run(["ip", "netns", "del", netns], { check: false });
    if (r.code !== 0 && !/No such file|not found|does not exist/i.test(r.stderr)) {
      this.log.warn({ netns, err: r.stderr.trim() }, "netns delete failed");
    }
  }

  /** Sandbox ids that have a namespace of this server instance. */
  async listSandboxIds(): Promise<string[]> {
    let names: string[] = [];
    try {
      names = await readdir(NETNS_DIR);
    } catch {
      return [];
    }
    return names.filter((n) => n.startsWith(this.netnsPrefix)).map((n) => n.slice(this.netnsPrefix.length));
  }

  private async usedIndexes(): Promise<Set<number>> {
    const r = await run(["ip", "-o", "link", "show", "type", "veth"], { check: false });
    const used = new Set<number>();
    for (const m of r.stdout.matchAll(new RegExp(`^\\d+: ${VETH_PREFIX}(\\d+)[@:]`, "gm"))) used.add(Number(m[1]));
    return used;
  }
}
