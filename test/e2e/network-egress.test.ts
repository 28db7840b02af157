import { execFileSync } from "node:child_process";
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { startUpstream, type Upstream } from "../support/upstream-net.js";
import { startTestServer } from "../support/sandbar-server.js";
import { rm } from "node:fs/promises";

/** Python inside a sandbox: connect, send an HTTP request, print the first line or "blocked". */
const fetchCmd = (host: string, port: number): string =>
  `python3 -c "
import socket
try:
  s = socket.create_connection(('${host}', ${port}), timeout=2)
  s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
  print('open', s.recv(400).decode().splitlines()[-1])
except Exception as e:
  print('blocked', type(e).__name__)
"`;

const resolveCmd = (name: string): string =>
  `python3 -c "
import socket
try:
  print('resolved', socket.gethostbyname('${name}'))
except Exception as e:
  print('unresolved', type(e).__name__)
"`;

function nftChains(): string[] {
  const out = execFileSync("nft", ["list", "table", "inet", "sandbar"], { encoding: "utf8" });
  return [...out.matchAll(/^\s*chain (\w+)/gm)].map((m) => m[1] as string);
}

describe("egress policy per sandbox", () => {
  let w: World;
  let up: Upstream;
  let hostService: Server;
  let hostPort = 0;
  const made: SandboxJson[] = [];

  const sandbox = async (name: string, policy?: Record<string, unknown>): Promise<SandboxJson> => {
    const sb = await w.createSandbox({ snapshot_id: w.snapshots.python, name, ...(policy ? { network_policy: policy } : {}) });
    made.push(sb);
    return sb;
  };
  const out = async (sb: SandboxJson, cmd: string): Promise<string> => {
    const r = await w.exec(sb, cmd);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.stdout.trim();
  };
  /** The sandbox's gateway: the host side of its veth. */
  const gateway = async (sb: SandboxJson): Promise<string> => (await out(sb, "awk '/^nameserver/{print $2}' /etc/resolv.conf")).trim();

  beforeAll(async () => {
    up = await startUpstream();
    w = await startWorld(["python"], { config: { dnsUpstreams: [up.dns] } });
    hostService = createServer((s) => s.end("host-service\n"));
    await new Promise<void>((r) => hostService.listen(0, "0.0.0.0", r));
    const addr = hostService.address();
    hostPort = typeof addr === "object" && addr ? addr.port : 0;
  });
  let restartedDir: string | undefined;
  afterAll(async () => {
    hostService?.close();
    try {
      if (restartedDir) {
        // World.stop would stop the first server; the restarted one holds the sandboxes now.
        await w.t.stop();
        await w.registry.stop();
      } else await w?.stop();
    } finally {
      // The upstream namespace, its server and the policy route go whatever happened above.
      await up?.stop();
      if (restartedDir) await rm(restartedDir, { recursive: true, force: true });
    }
  });

  it("the upstream answers the host directly (control)", async () => {
    const res = await fetch(`http://${up.ipA}:8080/`);
    expect(await res.text()).toBe(`upstream ${up.ipA}\n`);
  });

  it("deny_all blocks every destination and DNS", async () => {
    const sb = await sandbox("eg-deny", { egress: "deny_all" });
    expect(sb.network_policy).toEqual({ egress: "deny_all", allow_cidrs: [], allow_domains: [] });
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toMatch(/^blocked/);
    expect(await out(sb, resolveCmd("allowed.sandbar.test"))).toMatch(/^unresolved/);
  });

  it("allow_list with a CIDR reaches that address only", async () => {
    const sb = await sandbox("eg-cidr", { egress: "allow_list", allow_cidrs: [`${up.ipA}/32`] });
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toBe(`open upstream ${up.ipA}`);
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toMatch(/^blocked/);
  });

  it("allow_list with a domain admits the allowed name only", async () => {
    const sb = await sandbox("eg-domain", { egress: "allow_list", allow_domains: ["allowed.sandbar.test"] });
    // Before any lookup the address is closed: admission comes from the DNS answer.
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toMatch(/^blocked/);
    expect(await out(sb, resolveCmd("allowed.sandbar.test"))).toBe(`resolved ${up.ipA}`);
    expect(await out(sb, fetchCmd("allowed.sandbar.test", 8080))).toBe(`open upstream ${up.ipA}`);
    // Another name is not answered, and its address stays closed.
    expect(await out(sb, resolveCmd("other.sandbar.test"))).toMatch(/^unresolved/);
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toMatch(/^blocked/);
    // A subdomain is not the apex.
    expect(await out(sb, resolveCmd("api.allowed.sandbar.test"))).toMatch(/^unresolved/);
    expect(up.queries).toContain("allowed.sandbar.test");
    expect(up.queries).not.toContain("other.sandbar.test");
  });

  it("a wildcard admits subdomains", async () => {
    const sb = await sandbox("eg-wild", { egress: "allow_list", allow_domains: ["*.allowed.sandbar.test"] });
    expect(await out(sb, resolveCmd("api.allowed.sandbar.test"))).toBe(`resolved ${up.ipB}`);
    expect(await out(sb, fetchCmd("api.allowed.sandbar.test", 8080))).toBe(`open upstream ${up.ipB}`);
    expect(await out(sb, resolveCmd("allowed.sandbar.test"))).toMatch(/^unresolved/);
  });

  it("allow_all reaches outside addresses with working DNS, but never metadata, the host or the server", async () => {
    const sb = await sandbox("eg-all", { egress: "allow_all" });
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toBe(`open upstream ${up.ipA}`);
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toBe(`open upstream ${up.ipB}`);
    expect(await out(sb, resolveCmd("other.sandbar.test"))).toBe(`resolved ${up.ipB}`);
    expect(await out(sb, fetchCmd(up.metadataIp, 80))).toMatch(/^blocked/);
    expect(await out(sb, fetchCmd(up.subnetIp, 8080))).toMatch(/^blocked/);
    const gw = await gateway(sb);
    expect(await out(sb, fetchCmd(gw, hostPort))).toMatch(/^blocked/);
    const serverPort = Number(new URL(w.t.url).port);
    expect(await out(sb, fetchCmd(gw, serverPort))).toMatch(/^blocked/);
  });

  it("the metadata address, host services and the server stay closed in every mode", async () => {
    for (const name of ["eg-deny", "eg-cidr", "eg-domain", "eg-wild"]) {
      const sb = made.find((s) => s.name === name) as SandboxJson;
      const gw = await gateway(sb);
      expect(await out(sb, fetchCmd(up.metadataIp, 80)), name).toMatch(/^blocked/);
      expect(await out(sb, fetchCmd(gw, hostPort)), name).toMatch(/^blocked/);
      expect(await out(sb, fetchCmd(gw, Number(new URL(w.t.url).port))), name).toMatch(/^blocked/);
    }
  });

  it("an allowed name that resolves to the metadata address does not open it", async () => {
    const sb = await sandbox("eg-meta-name", { egress: "allow_list", allow_domains: ["meta.sandbar.test"] });
    expect(await out(sb, resolveCmd("meta.sandbar.test"))).toBe(`resolved ${up.metadataIp}`);
    expect(await out(sb, fetchCmd("meta.sandbar.test", 80))).toMatch(/^blocked/);
  });

  it("an explicit allow_cidrs entry opens the metadata address (control: the route exists)", async () => {
    const sb = await sandbox("eg-meta", { egress: "allow_all", allow_cidrs: [`${up.metadataIp}/32`] });
    expect(await out(sb, fetchCmd(up.metadataIp, 80))).toBe(`open upstream ${up.metadataIp}`);
  });

  it("no address of the sandbox subnet is a destination, held or not, even when allow_cidrs names it", async () => {
    // The upstream serves one unheld subnet address for sandbox traffic: open, it would answer.
    const sb = await sandbox("eg-subnet", { egress: "allow_all", allow_cidrs: [`${up.subnetIp}/32`] });
    expect(await out(sb, fetchCmd(up.subnetIp, 8080))).toMatch(/^blocked/);
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toBe(`open upstream ${up.ipA}`);
  });

  it("sandboxes get the server default when they name no policy", async () => {
    const sb = await sandbox("eg-default");
    expect((sb.network_policy as { egress: string }).egress).toBe("allow_all");
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toBe(`open upstream ${up.ipA}`);
  });

  it("PATCH changes a running sandbox's policy at once", async () => {
    const sb = made.find((s) => s.name === "eg-deny") as SandboxJson;
    const res = await w.t.call("PATCH", `/boxes/${sb.name}`, { network_policy: { egress: "allow_list", allow_cidrs: [`${up.ipB}/32`] } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as SandboxJson).network_policy).toEqual({ egress: "allow_list", allow_cidrs: [`${up.ipB}/32`], allow_domains: [] });
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toBe(`open upstream ${up.ipB}`);
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toMatch(/^blocked/);
  });

  it("the policy survives stop and start", async () => {
    const sb = made.find((s) => s.name === "eg-cidr") as SandboxJson;
    expect((await w.t.call("POST", `/boxes/${sb.name}/stop`)).status).toBeLessThan(300);
    expect((await w.t.call("POST", `/boxes/${sb.name}/start`, {})).status).toBeLessThan(300);
    expect(await out(sb, fetchCmd(up.ipA, 8080))).toBe(`open upstream ${up.ipA}`);
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toMatch(/^blocked/);
  });

  it("rejects bad policies with a validation error", async () => {
    for (const policy of [
      { egress: "sometimes" },
      { egress: "allow_list", allow_cidrs: ["10.0.0.0/33"] },
      { egress: "allow_list", allow_cidrs: ["not-an-ip"] },
      { egress: "allow_list", allow_domains: ["bad domain"] },
      { egress: "deny_all", allow_cidrs: ["10.0.0.0/8"] },
      { egress: "allow_all", allow_domains: ["example.com"] },
      { egress: "allow_all", extra: 1 },
    ]) {
      const res = await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, network_policy: policy });
      expect(res.status, JSON.stringify(policy)).toBe(422);
      expect(((await res.json()) as { code: string }).code).toBe("VALIDATION_ERROR");
    }
  });

  it("a restarted server adopts running sandboxes with their policy, and their DNS keeps working", async () => {
    const sb = await sandbox("eg-restart", { egress: "allow_list", allow_domains: ["allowed.sandbar.test"] });
    expect(await out(sb, fetchCmd("allowed.sandbar.test", 8080))).toBe(`open upstream ${up.ipA}`);
    const { dataDir, apiKey } = w.t;
    await w.t.server.close();
    // The new server's DNS proxy listens on another port: the adopted sandbox's rules must follow.
    w.t = await startTestServer({ dataDir, apiKey, config: { dnsUpstreams: [up.dns] } });
    restartedDir = dataDir;
    const again = (await (await w.t.call("GET", `/boxes/${sb.name}`)).json()) as SandboxJson;
    expect(again.status).toBe("ready");
    for (const s of made) s.dataplane_url = s.dataplane_url.replace(/^http:\/\/[^/]+/, w.t.url);
    expect(await out(sb, fetchCmd("allowed.sandbar.test", 8080))).toBe(`open upstream ${up.ipA}`);
    expect(await out(sb, resolveCmd("other.sandbar.test"))).toMatch(/^unresolved/);
    expect(await out(sb, fetchCmd(up.ipB, 8080))).toMatch(/^blocked/);
  });

  it("deleting sandboxes removes their firewall chains", async () => {
    const before = nftChains();
    const indexes: number[] = [];
    for (const sb of made) {
      const gw = await gateway(sb);
      const line = execFileSync("ip", ["-o", "-4", "addr", "show", "to", gw], { encoding: "utf8" });
      const m = /^\d+: sbx(\d+)\s/.exec(line);
      if (m) indexes.push(Number(m[1]));
    }
    expect(indexes.length).toBe(made.length);
    for (const n of indexes) expect(before).toContain(`f${n}`);
    for (const sb of made.splice(0)) expect((await w.t.call("DELETE", `/boxes/${sb.name}`)).status).toBeLessThan(300);
    const after = nftChains();
    for (const n of indexes) {
      expect(after).not.toContain(`f${n}`);
      expect(after).not.toContain(`p${n}`);
    }
  });
});
