/**
 * An "upstream" host for egress tests: a network namespace made by the test, reached from
 * the host through a veth, with two addresses and HTTP servers on them, plus a DNS server on
 * 127.0.0.1 that the sandbar server uses as its upstream resolver. Sandboxes never reach a
 * real outside address: the cloud metadata address is routed into this namespace too, but
 * only for packets from sandboxes (policy routing), so host processes are unaffected.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";

export interface Upstream {
  /** Two addresses of the upstream namespace; HTTP on port 8080 answers "upstream <addr>". */
  ipA: string;
  ipB: string;
  /** 169.254.169.254, served by the upstream namespace on port 80 for sandbox traffic. */
  metadataIp: string;
  /**
   * An address of the sandbox subnet that no sandbox ever holds (block 0), served by the
   * upstream namespace on 8080 for sandbox traffic: what an unheld subnet address would reach
   * if the firewall let it out.
   */
  subnetIp: string;
  /** The DNS server, for SANDBAR_DNS_UPSTREAMS ("127.0.0.1:port"). */
  dns: string;
  /** Names the DNS server answers: name -> address. */
  names: Record<string, string>;
  /** Queries the DNS server received (lowercased names). */
  queries: string[];
  stop(): Promise<void>;
}

function ip(args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** Answer A queries for `names` (NXDOMAIN otherwise). */
function dnsServer(names: Record<string, string>, queries: string[]): Promise<{ sock: Socket; port: number }> {
  const sock = createSocket("udp4");
  sock.on("message", (msg, rinfo) => {
    if (msg.length < 12) return;
    let off = 12;
    const labels: string[] = [];
    while (off < msg.length && msg[off] !== 0) {
      const len = msg[off] as number;
      labels.push(msg.subarray(off + 1, off + 1 + len).toString("ascii"));
      off += len + 1;
    }
    const qEnd = off + 5;
    const name = labels.join(".").toLowerCase();
    queries.push(name);
    const qtype = msg.readUInt16BE(off + 1);
    const addr = names[name];
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2);
    const answer = addr && qtype === 1;
    header.writeUInt16BE(0x8180 | (addr ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answer ? 1 : 0, 6);
    const question = msg.subarray(12, qEnd);
    const parts = [header, question];
    if (answer) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0);
      rr.writeUInt16BE(1, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(120, 6);
      rr.writeUInt16BE(4, 10);
      addr.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
      parts.push(rr);
    }
    sock.send(Buffer.concat(parts), rinfo.port, rinfo.address);
  });
  return new Promise((resolve) => sock.bind(0, "127.0.0.1", () => resolve({ sock, port: sock.address().port })));
}

/** Create the upstream namespace; `sandboxSubnet` is the server's (for the metadata route). */
export async function startUpstream(sandboxSubnet = "10.213.0.0/16"): Promise<Upstream> {
  const tag = randomBytes(3).toString("hex");
  const ns = `sbt-up-${tag}`;
  const hostIf = `sbtu${tag}`;
  const octet = 100 + (parseInt(tag.slice(0, 2), 16) % 100);
  const hostIp = `10.99.${octet}.1`;
  const ipA = `10.99.${octet}.2`;
  const ipB = `10.99.${octet}.3`;
  const metadataIp = "169.254.169.254";
  // Block 0 of the subnet is never handed out; its ".2" would be a sandbox's address.
  const [subnetBase = "", subnetBits = "16"] = sandboxSubnet.split("/");
  const hostSpan = 2 ** (32 - Number(subnetBits));
  const n = Math.floor(subnetBase.split(".").reduce((a, o) => a * 256 + Number(o), 0) / hostSpan) * hostSpan + 2;
  const subnetIp = [24, 16, 8, 0].map((sh) => Math.floor(n / 2 ** sh) % 256).join(".");
  const table = String(20000 + (parseInt(tag, 16) % 10000));
  const servers: ChildProcess[] = [];
  const cleanup: (() => void)[] = [];
  try {
    ip(["netns", "add", ns]);
    cleanup.push(() => ip(["netns", "del", ns]));
    ip(["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    // Deleting the namespace frees the pair only lazily: delete it now.
    cleanup.push(() => ip(["link", "del", hostIf]));
    ip(["addr", "add", `${hostIp}/24`, "dev", hostIf]);
    ip(["link", "set", hostIf, "up"]);
    for (const a of [ipA, ipB]) ip(["-n", ns, "addr", "add", `${a}/24`, "dev", "eth0"]);
    ip(["-n", ns, "addr", "add", `${metadataIp}/32`, "dev", "lo"]);
    ip(["-n", ns, "addr", "add", `${subnetIp}/32`, "dev", "lo"]);
    ip(["-n", ns, "link", "set", "eth0", "up"]);
    ip(["-n", ns, "link", "set", "lo", "up"]);
    // Only sandbox traffic to the metadata address goes to the upstream namespace.
    ip(["route", "add", `${metadataIp}/32`, "via", ipA, "dev", hostIf, "table", table]);
    ip(["rule", "add", "from", sandboxSubnet, "to", `${metadataIp}/32`, "lookup", table, "priority", table]);
    cleanup.push(() => ip(["rule", "del", "priority", table]));
    ip(["route", "add", `${subnetIp}/32`, "via", ipA, "dev", hostIf, "table", table]);
    const subnetRule = String(Number(table) + 10000);
    ip(["rule", "add", "from", sandboxSubnet, "to", `${subnetIp}/32`, "lookup", table, "priority", subnetRule]);
    cleanup.push(() => ip(["rule", "del", "priority", subnetRule]));
    const code = `const http=require("http");for(const p of [8080,80]){http.createServer((q,s)=>s.end("upstream "+q.socket.localAddress+"\\n")).listen(p,"0.0.0.0")}`;
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", code], { stdio: "ignore" });
    servers.push(child);
    // Wait until the namespace answers.
    for (let i = 0; i < 100; i++) {
      try {
        execFileSync("ip", ["netns", "exec", ns, process.execPath, "-e", `require("net").connect(8080,"${ipA}").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))`], { stdio: "ignore" });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (e) {
    for (const s of servers) s.kill("SIGKILL");
    for (const c of cleanup.reverse()) {
      try {
        c();
      } catch {
        // best effort
      }
    }
    throw e;
  }
  const names: Record<string, string> = { "allowed.sandbar.test": ipA, "other.sandbar.test": ipB, "api.allowed.sandbar.test": ipB, "meta.sandbar.test": metadataIp };
  const queries: string[] = [];
  const dns = await dnsServer(names, queries);
  return {
    ipA,
    ipB,
    metadataIp,
    subnetIp,
    dns: `127.0.0.1:${dns.port}`,
    names,
    queries,
    async stop() {
      dns.sock.close();
      for (const s of servers) s.kill("SIGKILL");
      for (const c of cleanup.reverse()) {
        try {
          c();
        } catch {
          // best effort
        }
      }
    },
  };
}
