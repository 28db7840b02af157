/**
 * Escape attempts from inside a sandbox, under gVisor (runsc, the default) and runc.
 *
 * Each attempt runs as a sandbox command (root inside, the spec's capabilities) through
 * test/support/escape-probe.py, which reports per attempt "ok", "ok:<detail>" or the errno it
 * failed with, so every test asserts how an attempt fails, not just that it does. Where the
 * runtimes differ the expectation is per runtime, and docs/security.md explains why.
 *
 * Tests named "KNOWN GAP" pin behaviour that is not what the isolation should give; they assert
 * what happens today so that a fix shows up as a failing test to update (docs/security.md).
 *
 * Kept apart from core-isolation.test.ts (runsc only), which already covers A<->B ports, the
 * gateway and 127.0.0.1, B's files and processes by the obvious paths, and raw ICMP sockets.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { hostResources, hostVeths, orphanFirewallRules, stillPresent } from "../support/host-resources.js";
import { buildImageFromRootfs, testImage } from "../support/images.js";
import { pushImage } from "../support/registry.js";
import { runCommand } from "../support/run-command.js";
import { waitSnapshot } from "../support/sandbar-server.js";
import { startUpstream, type Upstream } from "../support/upstream-net.js";

const RUNTIMES = ["runsc", "runc"] as const;
const PROBE = readFile(new URL("../support/escape-probe.py", import.meta.url), "utf8");
const rand = (): string => randomBytes(5).toString("hex");

type Results = Record<string, unknown>;

/** Device names that would mean a disk, memory or I/O port of the host is reachable. */
const HOST_DEVICE = /^(sd|vd|xvd|hd|nvme|mmcblk|loop|dm-|md\d|sr\d|nbd|mapper$|disk$|mem$|kmem$|port$|kvm$|vhost|vfio)/;

describe.each(RUNTIMES)("escape attempts from inside a sandbox (%s)", (runtime) => {
  let w: World;
  let up: Upstream;
  let a: SandboxJson;
  let b: SandboxJson;
  let aIp = "";
  let bIp = "";
  let hostDir = "";
  let hostService: Server;
  let hostPort = 0;
  let hostProc: ChildProcess | undefined;
  const hostNeedle = `sandbar-escape-host-${rand()}`;
  const bNeedle = `sandbar-escape-b-${rand()}`;
  const bFile = `/root/${bNeedle}`;
  const veths: { ifindex: number; name: string }[] = [];
  const keyDesc = `sandbar-escape-key-${rand()}`;
  let base: Results = {};

  /** Run probe checks in a sandbox; extra args go to the probe beside the defaults. */
  const probe = async (sb: SandboxJson, checks: string[], extra: Results = {}): Promise<Results> => {
    const r = await w.exec(sb, "python3 /root/probe.py", { env: { PROBE_ARGS: JSON.stringify({ ...base, ...extra, checks }) }, timeout: 60 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.exit_code, r.body.stderr).toBe(0);
    return JSON.parse(r.body.stdout) as Results;
  };
  const sh = async (sb: SandboxJson, command: string): Promise<string> => {
    const r = await w.exec(sb, command);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.stdout;
  };
  const upload = async (sb: SandboxJson, path: string, body: string): Promise<void> => {
    const res = await fetch(`${sb.dataplane_url}/upload?path=${encodeURIComponent(path)}`, {
      method: "POST",
      headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" },
      body,
    });
    expect(res.status).toBe(200);
  };
  const ownIp = async (sb: SandboxJson): Promise<string> =>
    (
      await sh(
        sb,
        `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.255.255.254', 9)); print(s.getsockname()[0])"`,
      )
    ).trim();
  const gatewayOf = (ip: string): string => ip.replace(/\d+$/, (n) => String(Number(n) - 1));

  beforeAll(async () => {
    hostDir = await mkdtemp(join(tmpdir(), "sandbar-escape-"));
    await writeFile(join(hostDir, "host-secret"), "host-secret\n");
    // A host process with a unique argument, to look for in the sandbox's /proc.
    hostProc = spawn(process.execPath, ["-e", "setInterval(() => {}, 1 << 30)", hostNeedle], { stdio: "ignore" });
    hostService = createServer((s) => s.end("host-service\n"));
    await new Promise<void>((r) => hostService.listen(0, "0.0.0.0", r));
    const addr = hostService.address();
    hostPort = typeof addr === "object" && addr ? addr.port : 0;
    up = await startUpstream();
    w = await startWorld(["python"], { runtime });
    await writeFile(join(w.t.dataDir, "host-secret"), "host-secret\n");
    [a, b] = (await Promise.all([
      w.createSandbox({ snapshot_id: w.snapshots.python, name: "esc-a" }),
      w.createSandbox({ snapshot_id: w.snapshots.python, name: "esc-b" }),
    ])) as [SandboxJson, SandboxJson];
    expect(a.runtime).toBe(runtime);
    const probeSource = await PROBE;
    await Promise.all([upload(a, "/root/probe.py", probeSource), upload(b, "/root/probe.py", probeSource)]);
    [aIp, bIp] = await Promise.all([ownIp(a), ownIp(b)]);
    // B marks a file and runs a process with a unique argument.
    await sh(b, `echo b-secret > ${bFile} && (nohup python3 -c 'import time; time.sleep(4000)' ${bNeedle} >/dev/null 2>&1 &) ; true`);
    base = {
      marker: join(hostDir, "host-secret"),
      dataMarker: join(w.t.dataDir, "host-secret"),
      dataDir: w.t.dataDir,
      hostPid: hostProc.pid ?? process.pid,
      hostNeedle,
      bNeedle,
      bFile,
      bHostPath: join(w.t.dataDir, "sandboxes", b.id, "rootfs", bFile),
      keyDesc,
    };
    veths.push(...(await hostVeths(w.t.dataDir)));
  });

  afterAll(async () => {
    hostProc?.kill("SIGKILL");
    hostService?.close();
    try {
      await w?.stop();
    } finally {
      await up?.stop();
      if (hostDir) await rm(hostDir, { recursive: true, force: true });
    }
  });

  it("B's marks are there (control): B sees its file and its process, and its probe works", async () => {
    const r = await probe(b, ["b_needle", "b_file_via_proc_roots"]);
    expect((r.b_needle as number[]).length).toBeGreaterThan(0);
    expect((r.b_file_via_proc_roots as string[]).length).toBeGreaterThan(0);
  });

  it("cannot read a host file: by its path, through /proc/1/root, up from the agent mount, by chroot break-out, by file handle", async () => {
    const r = await probe(a, [
      "marker",
      "marker_in_data_dir",
      "data_dir",
      "marker_proc1_root",
      "marker_dotdot_agent",
      "agent_parent_is_root",
      "chroot_escape",
      "open_by_handle",
    ]);
    expect(r.marker).toBe("ENOENT");
    expect(r.marker_in_data_dir).toBe("ENOENT");
    expect(r.data_dir).toBe("ENOENT");
    // /proc/1/root is the agent's root, which is the sandbox's own; gVisor refuses it outright.
    expect(r.marker_proc1_root).toBe(runtime === "runsc" ? "EACCES" : "ENOENT");
    // ".." from the agent's bind mount stops at the sandbox's root.
    expect(r.marker_dotdot_agent).toBe("ENOENT");
    expect(r.agent_parent_is_root).toBe(true);
    // CAP_SYS_CHROOT is granted, so the chroot trick itself works under runc, but it ends at the
    // sandbox's root (pivot_root, not chroot); gVisor keeps the process in the jail.
    const chroot = r.chroot_escape as { marker: string; root: string[] };
    expect(chroot.marker).toBe("ENOENT");
    if (runtime === "runsc") expect(chroot.root).toEqual([]);
    else expect(chroot.root).toEqual(expect.arrayContaining([".sandbar", "etc", "root"]));
    // "Shocker" (open_by_handle_at) needs CAP_DAC_READ_SEARCH, which is not granted.
    expect(r.open_by_handle).toBe(runtime === "runsc" ? "name_to_handle_at:ENOTSUP" : "open_by_handle_at:EPERM");
  });

  it("host paths named in /proc/self/mountinfo (runc shows them; gVisor does not) lead nowhere", async () => {
    const roots = (await probe(a, ["mount_roots"])).mount_roots as Record<string, string>;
    const hostPaths = Object.entries(roots).filter(([root]) => root.startsWith(w.t.dataDir));
    if (runtime === "runsc") {
      expect(hostPaths).toEqual([]);
      expect(Object.keys(roots)).toEqual(["/"]);
    } else {
      // The agent directory and the hostname/hosts/resolv.conf files, by their host paths.
      expect(hostPaths.length).toBeGreaterThanOrEqual(4);
      for (const [path, result] of hostPaths) expect(result, path).toBe("ENOENT");
    }
  });

  it("an image whose /etc and /.sandbar are symlinks to a host directory gets its mounts inside its own root", async () => {
    // A hostile image: the runtime mounts the agent and /etc/{hostname,hosts,resolv.conf} through
    // these symlinks; resolved on the host they would land in hostDir.
    const work = await mkdtemp(join(tmpdir(), "sandbar-hostile-"));
    try {
      const rootfs = join(work, "rootfs");
      await mkdir(join(rootfs, "bin"), { recursive: true });
      const bb = await testImage("busybox");
      const blob = join(bb.layoutDir, "blobs", "sha256", (bb.layerDigests[0] as string).replace(/^sha256:/, ""));
      await runCommand("tar", ["-xzf", blob, "-C", rootfs, "bin/busybox"]);
      await symlink("busybox", join(rootfs, "bin", "sh"));
      for (const d of ["proc", "sys", "dev", "root", "tmp"]) await mkdir(join(rootfs, d));
      const up12 = "/..".repeat(12);
      await symlink(`${up12}${hostDir}/etc`, join(rootfs, "etc"));
      await symlink(`${up12}${hostDir}/agent`, join(rootfs, ".sandbar"));
      await buildImageFromRootfs(rootfs, join(work, "layout"), { env: ["PATH=/bin"], cmd: ["/bin/sh"] });
      await pushImage(join(work, "layout"), "latest", w.registry.host, "hostile:latest");
      const snap = await w.t.call("POST", "/snapshots", {
        name: "hostile",
        docker_image: `${w.registry.host}/hostile:latest`,
        fs_capacity_bytes: 64 * 1024 ** 2,
      });
      expect(snap.status).toBe(201);
      const s = await waitSnapshot(w.t, ((await snap.json()) as { id: string }).id);
      expect(s.status).toBe("ready");
      const sb = await w.createSandbox({ snapshot_id: s.id, name: "esc-hostile" });
      // Mounted where the symlinks lead inside the sandbox (on its /tmp); the agent runs from there.
      const mounts = await sh(sb, "cat /proc/self/mountinfo; cat /etc/hostname");
      expect(mounts).toContain(`${hostDir}/agent`);
      expect(mounts).toContain(`${hostDir}/etc/hostname`);
      expect(mounts.trim().split("\n").at(-1)).toBe("esc-hostile");
      // Nothing appeared in the real host directory.
      expect(await readdir(hostDir)).toEqual(["host-secret"]);
      expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204);
      expect((await w.t.call("DELETE", `/snapshots/${s.id}`)).status).toBe(204);
      expect(await readdir(hostDir)).toEqual(["host-secret"]);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("sees no host process: not the test's marker process, not its pid; its own pids are small", async () => {
    expect(hostProc?.pid).toBeGreaterThan(0);
    const r = await probe(a, ["host_pid", "host_needle", "max_pid", "ptrace_host_pid"]);
    expect(r.host_pid).toBe("ENOENT");
    expect(r.host_needle).toEqual([]);
    expect(r.max_pid as number).toBeLessThan(1000);
    expect(r.ptrace_host_pid).toBe("ESRCH");
  });

  it("sees neither B's files nor B's processes: not by name, not through /proc/*/root, not by B's host path", async () => {
    const r = await probe(a, ["b_needle", "b_file_via_proc_roots", "b_file_by_host_path"]);
    expect(r.b_needle).toEqual([]);
    expect(r.b_file_via_proc_roots).toEqual([]);
    expect(r.b_file_by_host_path).toBe("ENOENT");
    expect(await sh(a, `find / \\( -path /proc -o -path /sys \\) -prune -o -name ${bNeedle} -print 2>/dev/null; echo end`)).toBe("end\n");
  });

  it("reaches no host address, not the server, not B (not even B's agent), not the metadata address; the upstream answers (control)", async () => {
    // The host's own addresses; veths of other sandboxes and upstreams (parallel test files)
    // come and go, and once gone their address is no longer the host's, so only ours are used.
    const hostAddrs = Object.entries(networkInterfaces())
      .filter(([name]) => !/^(sbx|sbtu)/.test(name))
      .flatMap(([, addrs]) => (addrs ?? []).filter((i) => i.family === "IPv4").map((i) => i.address));
    expect(hostAddrs).toContain("127.0.0.1");
    const serverPort = Number(new URL(w.t.url).port);
    const targets = [
      ...hostAddrs.flatMap((ip) => [`${ip}:${hostPort}`, `${ip}:${serverPort}`]),
      `${gatewayOf(aIp)}:${hostPort}`,
      `${gatewayOf(aIp)}:${serverPort}`,
      `${gatewayOf(bIp)}:${hostPort}`,
      `${bIp}:2024`,
      `${up.metadataIp}:80`,
      `${up.ipA}:8080`,
    ];
    const r = (await probe(a, ["connect"], { targets: [...new Set(targets)] })).connect as Record<string, string>;
    expect(r[`${up.ipA}:8080`]).toBe("open");
    for (const [target, result] of Object.entries(r)) {
      if (target === `${up.ipA}:8080`) continue;
      // Inside, 127.0.0.1 is the sandbox's own loopback; everything else is dropped on the host.
      expect(result, target).toBe(target.startsWith("127.") ? "refused" : "timeout");
    }
  });

  it("the metadata address is closed by policy, not by a missing route (control: an explicit allow_cidrs opens it)", async () => {
    const meta = `${up.metadataIp}:80`;
    const patch = (policy: Record<string, unknown>): Promise<Response> => w.t.call("PATCH", `/boxes/${a.name}`, { network_policy: policy });
    try {
      expect((await patch({ egress: "allow_all", allow_cidrs: [`${up.metadataIp}/32`] })).status).toBe(200);
      expect(((await probe(a, ["connect"], { targets: [meta] })).connect as Record<string, string>)[meta]).toBe("open");
    } finally {
      expect((await patch({ egress: "allow_all" })).status).toBe(200);
    }
    expect(((await probe(a, ["connect"], { targets: [meta] })).connect as Record<string, string>)[meta]).toBe("timeout");
  });

  it("has no raw or packet sockets (no CAP_NET_RAW)", async () => {
    const r = await probe(a, ["raw_inet", "raw_ip_hdrincl", "packet_raw", "packet_dgram"]);
    expect(r).toEqual({ raw_inet: "EPERM", raw_ip_hdrincl: "EPERM", packet_raw: "EPERM", packet_dgram: "EPERM" });
  });

  it("cannot mount, remount the agent read-write, unmount it, write into it, or unmask a masked path", async () => {
    const r = await probe(a, [
      "mount_tmpfs",
      "mount_proc",
      "mount_cgroup",
      "mount_bind_root",
      "remount_agent_rw",
      "umount_agent",
      "write_agent_dir",
      "umount_sys_firmware",
    ]);
    expect(r).toEqual({
      mount_tmpfs: "EPERM",
      mount_proc: "EPERM",
      mount_cgroup: "EPERM",
      mount_bind_root: "EPERM",
      remount_agent_rw: "EPERM",
      umount_agent: "EPERM",
      write_agent_dir: "EROFS",
      umount_sys_firmware: "EPERM",
    });
    expect(await sh(a, "ls /.sandbar")).toBe("sandbar-agent\n");
  });

  it("ptrace: no outside process is visible; PID 1 (the agent) is refused by gVisor, traceable under runc (same uid and caps), and keeps working", async () => {
    const r = await probe(a, ["ptrace_agent", "ptrace_host_pid", "agent_environ_has_token"]);
    expect(r.ptrace_host_pid).toBe("ESRCH");
    // runc: no CAP_SYS_PTRACE is needed to trace a process of the same uid whose capabilities
    // are a subset of ours (the agent's are the same), and there is no Yama or seccomp here.
    // gVisor applies Yama's ptrace_scope=1 (only descendants), and the agent is our ancestor.
    expect(r.ptrace_agent).toBe(runtime === "runsc" ? "EPERM" : "ok");
    // Both: the agent's environment is readable to commands (same uid); its token only
    // authenticates the host to this sandbox's own agent.
    expect(r.agent_environ_has_token).toBe("ok:True");
    // PTRACE_SEIZE does not stop the tracee, and the tracer's exit detached it.
    expect(await sh(a, "echo alive")).toBe("alive\n");
  });

  it("cannot make device nodes that reach anything, and /dev has no host disk, memory or port device", async () => {
    const r = await probe(a, ["mknod_rootfs", "mknod_tmpfs", "dev"]);
    expect(r.mknod_rootfs).toBe("mknod:EPERM open:-");
    // gVisor lets root make a node on its own tmpfs, but there is no device behind it.
    expect(r.mknod_tmpfs).toBe(runtime === "runsc" ? "mknod:ok open:ENXIO" : "mknod:EPERM open:-");
    const dev = r.dev as string[];
    expect(dev).toEqual(expect.arrayContaining(["null", "zero", "urandom", "pts", "shm"]));
    expect(dev.filter((d) => HOST_DEVICE.test(d))).toEqual([]);
  });

  it("cannot load kernel modules, reboot, swapon or read the host's kernel log", async () => {
    const r = await probe(a, ["init_module", "finit_module", "proc_modules", "reboot_cad_off", "swapon", "syslog"]);
    const dmesgRestrict = (await readFile("/proc/sys/kernel/dmesg_restrict", "utf8")).trim();
    if (runtime === "runsc") {
      expect(r).toEqual({
        init_module: "EPERM",
        finit_module: "EPERM",
        proc_modules: "ENOENT",
        reboot_cad_off: "EPERM",
        swapon: "EPERM",
        // The Sentry's own, made-up kernel log.
        syslog: expect.stringMatching(/^ok:.*Starting gVisor/),
      });
    } else {
      // No CAP_SYS_MODULE: EPERM; a host kernel built without module support says ENOSYS first.
      expect(["EPERM", "ENOSYS"]).toContain(r.init_module);
      expect(["EPERM", "ENOSYS"]).toContain(r.finit_module);
      expect(r.reboot_cad_off).toBe("EPERM");
      expect(r.swapon).toBe("EPERM");
      // The host kernel's log: refused only because this host sets kernel.dmesg_restrict=1.
      expect(r.syslog).toBe(dmesgRestrict === "1" ? "EPERM" : expect.stringMatching(/^ok/));
    }
  });

  it("cannot reach cgroup files (none mounted, release_agent absent), write /sys or /proc/sys", async () => {
    const r = await probe(a, ["sys_fs_cgroup", "mount_cgroup", "release_agent", "sys_create", "core_pattern"]);
    expect(r.sys_fs_cgroup).toBe("ok:[]");
    expect(r.mount_cgroup).toBe("EPERM");
    expect(r.release_agent).toEqual(["ENOENT", "ENOENT"]);
    expect(r.sys_create).toBe("EROFS");
    // runc: /proc/sys is a read-only bind mount; gVisor's /proc/sys has no core_pattern at all.
    expect(r.core_pattern).toBe(runtime === "runsc" ? "ENOENT" : "EROFS");
  });

  it("cannot set the hostname or the clock", async () => {
    const r = await probe(a, ["sethostname", "clock_settime", "settimeofday"]);
    expect(r).toEqual({ sethostname: "EPERM", clock_settime: "EPERM", settimeofday: "EPERM" });
    expect(await sh(a, "hostname; date +%Y")).toMatch(/^esc-a\n20\d\d\n$/);
  });

  it("masked paths: /sys/firmware is empty, /proc/kcore and /proc/keys give nothing", async () => {
    const r = await probe(a, ["sys_firmware", "proc_kcore", "proc_keys"]);
    expect(r.sys_firmware).toBe("ok:[]");
    if (runtime === "runsc") {
      expect(r).toMatchObject({ proc_kcore: "ENOENT", proc_keys: "ENOENT" });
    } else {
      // Masked by binding /dev/null over them (a path this kernel lacks stays absent).
      expect(["ENOENT", "ok:"]).toContain(r.proc_kcore);
      expect(r.proc_keys).toBe("ok:");
    }
  });

  it("kernel keyring: refused by the seccomp filter (under runc it would be host root's keyring, shared by every sandbox)", async () => {
    const r = await probe(a, ["keyring_user", "add_key"]);
    expect(r).toEqual({ keyring_user: "EPERM", add_key: "EPERM" });
    expect(await readFile("/proc/keys", "utf8")).not.toContain(keyDesc);
  });

  it("user namespaces are refused by the seccomp filter (in one, gVisor would give back raw and packet sockets)", async () => {
    const ns = (await probe(a, ["userns"], { usernsChecks: ["raw_inet", "packet_raw"] })).userns as Results;
    expect(ns).toEqual({ unshare: "EPERM" });
    // Without the namespace: no raw sockets (CAP_NET_RAW is dropped).
    expect(await probe(a, ["raw_inet", "packet_raw"])).toEqual({ raw_inet: "EPERM", packet_raw: "EPERM" });
  });

  it("the seccomp filter leaves threads and processes alone (clone without CLONE_NEWUSER)", async () => {
    const r = await w.exec(a, "python3 -c \"import threading, subprocess; t = threading.Thread(target=lambda: None); t.start(); t.join(); print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip(), threading.active_count())\"");
    expect(r.body.stdout).toBe("child 1\n");
  });

  it("leaves nothing on the host once its sandboxes are deleted", async () => {
    for (const sb of [a, b]) expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204);
    expect(veths.length).toBe(2);
    expect(stillPresent(veths)).toEqual([]);
    expect(orphanFirewallRules(veths.map((v) => Number(v.name.replace(/^sbx/, ""))))).toEqual([]);
    expect(await hostResources(w.t.dataDir, runtime)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    expect(await readFile("/proc/keys", "utf8")).not.toContain(keyDesc);
  });
});
