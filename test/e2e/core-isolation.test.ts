import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

/** Python run inside a sandbox: try a TCP connect, print "open" or "blocked". */
const probe = (ip: string, port: number): string =>
  `python3 -c "import socket; s=socket.socket(); s.settimeout(2)\ntry:\n  s.connect(('${ip}', ${port})); print('open')\nexcept Exception as e:\n  print('blocked', type(e).__name__)"`;

/** Python inside a sandbox: connect to ports 1-4096 and 8000 of `ip` at once, print the open ones. */
const sweep = (ip: string): string =>
  `python3 -c "
import socket, selectors, time
ports = list(range(1, 4097)) + [8000]
opened = []
for i in range(0, len(ports), 400):
    sel = selectors.DefaultSelector()
    socks = []
    for p in ports[i:i + 400]:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(('${ip}', p))
        sel.register(s, selectors.EVENT_WRITE, p)
        socks.append(s)
    deadline = time.time() + 1.0
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(timeout=max(0, deadline - time.time())):
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened.append(key.data)
            sel.unregister(key.fileobj)
    for s in socks:
        s.close()
print('open', ' '.join(map(str, sorted(opened))))
"`;

/** The sandbox's own address, found without sending a packet (UDP connect). */
const OWN_IP = `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.255.255.254', 9)); print(s.getsockname()[0])"`;

describe("isolation between sandboxes and from the host", () => {
  let w: World;
  let a: SandboxJson;
  let b: SandboxJson;
  let aIp = "";
  let bIp = "";
  let hostService: Server;
  let hostPort = 0;

  beforeAll(async () => {
    w = await startWorld(["python"]);
    [a, b] = await Promise.all([w.createSandbox({ snapshot_id: w.snapshots.python, name: "iso-a" }), w.createSandbox({ snapshot_id: w.snapshots.python, name: "iso-b" })]) as [SandboxJson, SandboxJson];
    aIp = (await w.exec(a, OWN_IP)).body.stdout.trim();
    bIp = (await w.exec(b, OWN_IP)).body.stdout.trim();
    // A service on every host address, as a database or dev server might be.
    hostService = createServer((s) => s.end("host-service\n"));
    await new Promise<void>((r) => hostService.listen(0, "0.0.0.0", r));
    const addr = hostService.address();
    hostPort = typeof addr === "object" && addr ? addr.port : 0;
    // B serves HTTP and marks its files and processes.
    await w.exec(b, "mkdir -p /srv && echo b-page > /srv/index.html && echo b > /root/b-marker && (cd /srv && nohup python3 -m http.server 8000 >/dev/null 2>&1 &) && (nohup sleep 4321 >/dev/null 2>&1 &)");
    for (let i = 0; i < 50; i++) {
      if ((await w.exec(b, probe("127.0.0.1", 8000))).body.stdout.startsWith("open")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  afterAll(async () => {
    hostService?.close();
    await w?.stop();
  });

  it("gives each sandbox its own address", () => {
    expect(aIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(bIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(aIp).not.toBe(bIp);
  });

  it("B's server is up (control): B reaches it, and so does the host that owns the sandbox", async () => {
    expect((await w.exec(b, probe("127.0.0.1", 8000))).body.stdout).toMatch(/^open/);
    const res = await fetch(`http://${bIp}:8000/index.html`);
    expect(await res.text()).toBe("b-page\n");
  });

  it("A cannot connect to B on any port", async () => {
    for (const port of [8000, 2024, 22]) {
      expect((await w.exec(a, probe(bIp, port))).body.stdout).toMatch(/^blocked/);
    }
  });

  it("A cannot connect to B on any port of a sweep; the same sweep inside B finds B's services (control)", async () => {
    const inside = (await w.exec(b, sweep("127.0.0.1"))).body.stdout.trim();
    expect(inside.split(" ")).toEqual(expect.arrayContaining(["2024", "8000"]));
    expect((await w.exec(a, sweep(bIp))).body.stdout.trim()).toBe("open");
  });

  it("A cannot reach the host: not its gateway address, not the server's port, not host services", async () => {
    const gateway = aIp.replace(/\d+$/, (n) => String(Number(n) - 1));
    const serverPort = Number(new URL(w.t.url).port);
    for (const [ip, port] of [
      [gateway, hostPort],
      [gateway, serverPort],
      ["127.0.0.1", serverPort],
      ["127.0.0.1", hostPort],
    ] as const) {
      expect((await w.exec(a, probe(ip, port))).body.stdout, `${ip}:${port}`).toMatch(/^blocked/);
    }
  });

  it("A sees neither B's processes nor B's files", async () => {
    const procs = await w.exec(a, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
    expect(procs.body.stdout).not.toContain("4321");
    expect(procs.body.stdout).not.toContain("http.server");
    const own = await w.exec(b, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
    expect(own.body.stdout).toContain("sleep 4321");
    expect((await w.exec(a, "test -e /root/b-marker && echo seen || echo absent")).body.stdout).toBe("absent\n");
    expect((await w.exec(b, "test -e /root/b-marker && echo seen || echo absent")).body.stdout).toBe("seen\n");
  });

  it("has no raw sockets", async () => {
    const r = await w.exec(a, `python3 -c "import socket\ntry:\n  socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw')\nexcept Exception as e:\n  print('denied', type(e).__name__)"`);
    expect(r.body.stdout).toMatch(/^denied/);
  });
});
