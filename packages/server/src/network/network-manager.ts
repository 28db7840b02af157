import { readdir } from "node:fs/promises";
import type { Logger } from "pino";
import { run } from "../util/proc.js";
import { blockAt, parseSubnet, type Block } from "./addresses.js";

/** Prefix of every host-side veth; the firewall matches on it. */
export const VETH_PREFIX = "sbx";
const NETNS_DIR = "/run/netns";

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

  constructor(
    private readonly subnet: string,
    /** Namespace names start with this; it is unique per server instance. */
    private readonly netnsPrefix: string,
    private readonly log: Logger,
  ) {
    parseSubnet(subnet);
  }

  /** Install the firewall: sandboxes reach nothing on the host or each other. */
  async init(): Promise<void> {
    const rules = `
table inet sandbar {}
flush table inet sandbar
table inet sandbar {
  chain input {
    type filter hook input priority -5; policy accept;
    iifname "${VETH_PREFIX}*" ct state established,related accept
    iifname "${VETH_PREFIX}*" counter drop
  }
  chain forward {
    type filter hook forward priority -5; policy accept;
    iifname "${VETH_PREFIX}*" counter drop
    oifname "${VETH_PREFIX}*" counter drop
  }
}
`;
    await run(["nft", "-f", "-"], { input: rules });
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

  /** Remove a sandbox's namespace; its veth pair goes with it. Idempotent. */
  async destroy(sandboxId: string): Promise<void> {
    await this.destroyNetns(this.netnsName(sandboxId));
  }

  private async destroyNetns(netns: string): Promise<void> {
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
