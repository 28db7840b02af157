import { close as closeFd, open as openFd } from "node:fs";
import { readdir, rm, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { NetworkPolicy } from "@sandbar/shared";
import type { DnsPolicy } from "./dns-proxy.js";
import { run } from "../util/proc.js";
import { blockAt, parseSubnet, subnetCidr, type Block } from "./addresses.js";
import { closeAgentClients } from "../agent/agent-client.js";
import { exists } from "../util/fs.js";

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

/** Namespaces kept ready by default (veth, addresses and routes made) so a boot only names one. */
export const DEFAULT_SPARE_NETWORKS = 2;
/** A refill starts this long after the last claim, so it does not compete with that boot. */
const REFILL_DELAY_MS = 300;

/**
 * A network made ahead of a boot. Its namespace has no name: only this open file descriptor
 * holds it, so a spare never outlives the server process (the kernel frees the namespace, and
 * the veth pair with it, when the descriptor closes) and nothing about it needs reconciling
 * after a crash. (A raw descriptor, not a FileHandle, which Node would close on garbage
 * collection with a warning.)
 */
interface SpareNetwork {
  index: number;
  fd: number;
}

const openNs = promisify(openFd);
const closeNs = (fd: number): Promise<void> => new Promise((resolve) => closeFd(fd, () => resolve()));

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
  private readonly spares: SpareNetwork[] = [];
  private refilling: Promise<void> | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Spares are named only while they are being made, with this prefix (not the sandboxes'). */
  private readonly sparePrefix: string;
  /**
   * Where the next search for a free block starts. Blocks are handed out round the subnet from
   * a random start, so a block just freed is not taken again at once, and servers sharing the
   * host rarely race for the same one.
   */
  private cursor: number;
  private dnsPort = 0;
  /** Block index of each sandbox with rules, and the policy behind each sandbox address. */
  private readonly bySandbox = new Map<string, number>();
  private readonly byIp = new Map<string, { sandboxId: string; index: number; policy: NetworkPolicy; dns: DnsPolicy; learned: Map<string, number>; admitting: Promise<void> }>();

  constructor(
    private readonly subnet: string,
    /** Namespace names start with this; it is unique per server instance. */
    private readonly netnsPrefix: string,
    private readonly log: Logger,
    /** How many spare networks to keep ready (0: none; every create makes its own). */
    private readonly spareCount = DEFAULT_SPARE_NETWORKS,
  ) {
    const { blocks } = parseSubnet(subnet);
    this.sparePrefix = `spare-${netnsPrefix}`;
    this.cursor = 1 + Math.floor(Math.random() * (blocks - 1));
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
    // A spare still named is one a crash interrupted while it was being made.
    for (const name of await readdir(NETNS_DIR).catch(() => [] as string[])) {
      if (name.startsWith(this.sparePrefix)) await this.destroyNetns(name);
    }
    this.scheduleRefill(0);
  }

  /** Drop the spare networks and make no more (shutdown). Sandboxes' networks stay. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    this.refillTimer = undefined;
    await this.refilling;
    await this.dropSpares();
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
      // Nor is any address of the sandbox subnet, held or not: an unheld one would otherwise
      // follow the host's default route out under allow_all.
      `add rule ${t} f${n} ip daddr ${subnetCidr(this.subnet)} drop`,
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

  /**
   * Create the namespace and veth for a sandbox; `preferred` reuses its old block when it is
   * free. Otherwise a spare network is claimed when one is ready (naming its namespace is all
   * that is left to do), else one is made now.
   */
  async create(sandboxId: string, preferred?: number | null): Promise<SandboxNetwork> {
    const netns = this.netnsName(sandboxId);
    await this.destroyNetns(netns);
    const used = await this.usedIndexes();
    const keepBlock = !!preferred && !used.has(preferred) && !this.claiming.has(preferred);
    if (!keepBlock) {
      const spare = this.spares.shift();
      if (spare) {
        this.scheduleRefill();
        try {
          return await this.claim(spare, netns);
        } catch (e) {
          this.log.warn({ sandboxId, err: (e as Error).message }, "claiming a spare network failed; making one");
        }
      }
    }
    const candidates = keepBlock && preferred ? [preferred, ...this.freeBlocks(used, 63, preferred)] : this.freeBlocks(used, 64);
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

  /** Give a spare network the sandbox's namespace name: one bind mount. */
  private async claim(spare: SpareNetwork, netns: string): Promise<SandboxNetwork> {
    const block = blockAt(this.subnet, spare.index);
    const path = join(NETNS_DIR, netns);
    try {
      await writeFile(path, "", { flag: "wx", mode: 0 });
      // --no-canonicalize: mount(8) would resolve the descriptor's link to "net:[inode]".
      await run(["mount", "--no-canonicalize", "--bind", `/proc/${process.pid}/fd/${spare.fd}`, path]).catch(async (e: unknown) => {
        await rm(path, { force: true });
        throw e;
      });
    } finally {
      // The name holds the namespace now (or, on failure, nothing does and it goes).
      await closeNs(spare.fd);
    }
    closeAgentClients(block.sandboxIp, "the sandbox at this address is gone");
    return { ...block, netns, netnsPath: path, veth: `${VETH_PREFIX}${spare.index}` };
  }

  /** Make spares up to `spareCount`, soon, one after another, in the background. */
  private scheduleRefill(delayMs = REFILL_DELAY_MS): void {
    if (this.closed || this.spareCount <= 0) return;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      if (this.refilling) return;
      this.refilling = this.refill().finally(() => {
        this.refilling = undefined;
      });
    }, delayMs);
    this.refillTimer.unref();
  }

  private async refill(): Promise<void> {
    while (!this.closed && this.spares.length < this.spareCount) {
      try {
        const spare = await this.makeSpare();
        if (this.closed) await closeNs(spare.fd);
        else this.spares.push(spare);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, "making a spare network failed");
        return;
      }
    }
  }

  /**
   * A spare: the namespace is made under a temporary name, configured like a sandbox's, opened,
   * and unnamed again (`ip netns del` only unmounts the name; the open handle keeps it).
   */
  private async makeSpare(): Promise<SpareNetwork> {
    const name = `${this.sparePrefix}${randomBytes(4).toString("hex")}`;
    for (const index of this.freeBlocks(await this.usedIndexes(), 64)) {
      this.claiming.add(index);
      try {
        if (!(await this.tryCreate(name, name, index))) continue;
        let fd: number | undefined;
        try {
          fd = await openNs(join(NETNS_DIR, name), "r");
          await run(["ip", "netns", "del", name]);
          return { index, fd };
        } catch (e) {
          if (fd !== undefined) await closeNs(fd);
          await this.destroyNetns(name);
          throw e;
        }
      } finally {
        this.claiming.delete(index);
      }
    }
    throw new Error(`no free address block in ${this.subnet}`);
  }

  private async dropSpares(): Promise<void> {
    for (const spare of this.spares.splice(0)) await closeNs(spare.fd);
  }

  /** Up to `limit` blocks that look free, from the cursor on (`skip` left out). */
  private freeBlocks(used: Set<number>, limit: number, skip?: number): number[] {
    const { blocks } = parseSubnet(this.subnet);
    const out: number[] = [];
    for (let k = 0; k < blocks - 1 && out.length < limit; k++) {
      const i = 1 + ((this.cursor - 1 + k) % (blocks - 1));
      if (!used.has(i) && !this.claiming.has(i) && i !== skip) out.push(i);
    }
    return out;
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
    const { blocks } = parseSubnet(this.subnet);
    this.cursor = 1 + (index % (blocks - 1));
    // The address has a new owner: nothing kept from its previous life may be reused.
    closeAgentClients(block.sandboxIp, "the sandbox at this address is gone");
    return { ...block, netns, netnsPath: `${NETNS_DIR}/${netns}`, veth };
  }

  /**
   * Remove a sandbox's namespace (its veth pair goes with it) and its egress rules.
   * `index` is the block it had, when the caller knows it. Idempotent.
   */
  async destroy(sandboxId: string, index?: number | null): Promise<void> {
    const netns = this.netnsName(sandboxId);
    const known = this.bySandbox.get(sandboxId);
    const n = known ?? index ?? undefined;
    this.bySandbox.delete(sandboxId);
    // Only this sandbox's entry: a stale index may belong to another sandbox by now.
    for (const [ip, e] of this.byIp) if (e.sandboxId === sandboxId) this.byIp.delete(ip);
    if (known !== undefined && (await exists(join(NETNS_DIR, netns)))) {
      // Its rules while its veth still holds the index: once the veth is gone, a spare being
      // made (by this server or another) may take the index at once.
      await this.removeRules(known);
      await this.destroyNetns(netns);
      this.addressFreed(known);
      return;
    }
    await this.destroyNetns(netns);
    if (n === undefined) return;
    // Another sandbox may have claimed the index meanwhile; its rules are not ours to remove.
    if (this.claiming.has(n)) return;
    this.claiming.add(n);
    try {
      if (!(await this.usedIndexes()).has(n)) {
        await this.removeRules(n);
        this.addressFreed(n);
      }
    } finally {
      this.claiming.delete(n);
    }
  }

  /**
   * Connections to the address lead nowhere now (a client made while the sandbox was being
   * stopped would otherwise keep sockets that hang).
   */
  private addressFreed(index: number): void {
    closeAgentClients(blockAt(this.subnet, index).sandboxIp, "the sandbox's network was removed");
  }

  private async destroyNetns(netns: string): Promise<void> {
    if (!(await exists(join(NETNS_DIR, netns)))) return;
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

  /** Block indexes whose host-side veth exists (on this host, whoever made it). */
  private async usedIndexes(): Promise<Set<number>> {
    const used = new Set<number>();
    const re = new RegExp(`^${VETH_PREFIX}(\\d+)$`);
    for (const name of await readdir("/sys/class/net").catch(() => [] as string[])) {
      const m = re.exec(name);
      if (m) used.add(Number(m[1]));
    }
    return used;
  }
}
