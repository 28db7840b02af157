/**
 * Resource abuse inside one sandbox, under gVisor (runsc) and runc: a fork bomb, a memory hog,
 * a disk filler and a CPU hog each end inside that sandbox's own limits, while a neighbouring
 * sandbox and the server keep answering.
 *
 * Neighbour checks compare against a baseline taken in the same test just before the abuse,
 * with generous factors (the machine has 2 cores and other test files run meanwhile): every
 * neighbour `echo hi` and server GET /healthz must succeed, each within an absolute ceiling, and
 * their medians during the abuse must stay under 10x the baseline median (at least 250 ms).
 *
 * core-limits.test.ts (runsc, CPU quota) and core-exec.test.ts (runsc, memory) cover the limits
 * alone; this file adds runc, the fork bomb, the disk filler and the neighbour's view.
 */
import { randomBytes } from "node:crypto";
import { readFile, readdir, stat } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { hostResources, hostVeths, instancePrefix, orphanFirewallRules, stillPresent } from "../support/host-resources.js";

const RUNTIMES = ["runsc", "runc"] as const;
const MIB = 1024 * 1024;
/** A single neighbour request slower than this fails the test whatever the baseline. */
const CEILING_MS = 8000;
const STOPPED_MESSAGE = /stopped unexpectedly/;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)] ?? 0;
};

interface Sample {
  echoMs: number;
  echo: string;
  healthMs: number;
  health: number;
}

/** The sandbox's cgroup (v1) file, read on the host; undefined once the cgroup is gone. */
async function cgroupFile(controller: string, cid: string, file: string): Promise<string | undefined> {
  return readFile(`/sys/fs/cgroup/${controller}/sandbar/${cid}/${file}`, "utf8").then(
    (s) => s.trim(),
    () => undefined,
  );
}

describe.each(RUNTIMES)("resource abuse (%s)", (runtime) => {
  let w: World;
  let neighbour: SandboxJson;
  const veths: { ifindex: number; name: string }[] = [];

  const cidOf = (sb: SandboxJson): string => `${instancePrefix(w.t.dataDir)}${sb.id}`;
  const status = async (sb: SandboxJson): Promise<{ status: string; status_message: string | null }> =>
    (await (await w.t.call("GET", `/boxes/${sb.id}`)).json()) as { status: string; status_message: string | null };
  const out = async (sb: SandboxJson, command: string): Promise<string> => {
    const r = await w.exec(sb, command, { timeout: 60 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.stdout;
  };
  /** Note the host-side veths of the sandboxes running now, to check later that they are gone. */
  const trackVeths = async (): Promise<void> => {
    for (const v of await hostVeths(w.t.dataDir)) if (!veths.some((x) => x.ifindex === v.ifindex)) veths.push(v);
  };
  const create = async (body: Record<string, unknown>): Promise<SandboxJson> => {
    const sb = await w.createSandbox(body);
    expect(sb.runtime).toBe(runtime);
    await trackVeths();
    return sb;
  };
  /** Delete without asserting (in finally blocks: the leak test checks that nothing is left). */
  const dispose = async (sb: SandboxJson): Promise<void> => {
    await w.t.call("DELETE", `/boxes/${sb.id}`).catch(() => undefined);
  };
  const remove = async (sb: SandboxJson): Promise<void> => {
    expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204);
  };

  const sample = async (): Promise<Sample> => {
    const t0 = Date.now();
    const echo = await w.exec(neighbour, "echo hi").then(
      (e) => (e.status === 200 ? e.body.stdout : `HTTP ${e.status} ${JSON.stringify(e.body)}`),
      (err: unknown) => String(err),
    );
    const t1 = Date.now();
    const health = await fetch(`${w.t.url}/healthz`).then(
      (r) => r.status,
      () => 0,
    );
    return { echoMs: t1 - t0, echo, healthMs: Date.now() - t1, health };
  };
  const baseline = async (): Promise<Sample[]> => {
    const samples: Sample[] = [];
    for (let i = 0; i < 7; i++) samples.push(await sample());
    return samples;
  };
  /** Sample the neighbour and the server until `abuse` settles (at least `min` samples). */
  const whileAbusing = async <T>(abuse: Promise<T>, min = 4): Promise<{ result: T; samples: Sample[] }> => {
    let done = false;
    const settled = abuse.finally(() => {
      done = true;
    });
    const samples: Sample[] = [];
    while (!done || samples.length < min) {
      samples.push(await sample());
      await sleep(200);
    }
    return { result: await settled, samples };
  };
  const expectNeighbourFine = (what: string, before: Sample[], during: Sample[]): void => {
    const b = { echo: median(before.map((s) => s.echoMs)), health: median(before.map((s) => s.healthMs)) };
    const d = { echo: median(during.map((s) => s.echoMs)), health: median(during.map((s) => s.healthMs)) };
    const max = { echo: Math.max(...during.map((s) => s.echoMs)), health: Math.max(...during.map((s) => s.healthMs)) };
    console.info(
      `[abuse ${runtime}] ${what}: neighbour echo p50 ${b.echo} -> ${d.echo} ms (max ${max.echo}), /healthz p50 ${b.health} -> ${d.health} ms (max ${max.health}), ${during.length} samples`,
    );
    for (const s of during) {
      expect(s.echo, what).toBe("hi\n");
      expect(s.health, what).toBe(200);
      expect(s.echoMs, what).toBeLessThan(CEILING_MS);
      expect(s.healthMs, what).toBeLessThan(CEILING_MS);
    }
    expect(d.echo, `${what}: neighbour echo median`).toBeLessThan(Math.max(10 * b.echo, 250));
    expect(d.health, `${what}: /healthz median`).toBeLessThan(Math.max(10 * b.health, 250));
  };
  const waitStopped = async (sb: SandboxJson): Promise<{ status: string; status_message: string | null }> => {
    let s = await status(sb);
    for (let i = 0; i < 100 && s.status !== "stopped"; i++) {
      await sleep(200);
      s = await status(sb);
    }
    return s;
  };

  beforeAll(async () => {
    w = await startWorld(["busybox", "python"], { runtime });
    neighbour = await create({ snapshot_name: "busybox", name: "neighbour" });
  });
  afterAll(async () => {
    await w?.stop();
  });

  it(
    runtime === "runc"
      ? "a fork bomb stops at the pids limit (4096) with EAGAIN; the sandbox survives and its agent serves files meanwhile"
      : "a fork bomb ends the whole sandbox (guest processes are no host pids; it runs out of memory): marked stopped, files kept, starts again",
    async () => {
      // runc: memory enough for 4096 busybox shells, so the pids limit is what stops it.
      // runsc: the Sentry's memory use grows with the guest's processes until mem_bytes.
      const bomb = await create({ snapshot_name: "busybox", name: "fork-bomb", mem_bytes: (runtime === "runc" ? 1024 : 256) * MIB });
      try {
        const cid = cidOf(bomb);
        expect(await cgroupFile("pids", cid, "pids.max")).toBe("4096");
        await out(bomb, "echo kept > /root/kept");
        const before = await baseline();
        let peakPids = 0;
        let pidsAtLimit = 0;
        let peakMem = 0;
        // A fork refused at the limit ends a non-interactive shell's script, so the command's
        // own shell makes all its forks (the sleep, the subshell the bomb runs in) before the bomb
        // starts, and then only waits and echoes (builtins). Forked from this shell, the second
        // half of `b | b &` raced the first one's children to the limit.
        const bombing = w.exec(bomb, "sleep 8 & s=$!; (b() { b | b & }; b) & wait $s; echo survived", { timeout: 60 });
        const watch = (async () => {
          let live = true;
          bombing.finally(() => {
            live = false;
          });
          while (live) {
            peakPids = Math.max(peakPids, Number((await cgroupFile("pids", cid, "pids.current")) ?? 0));
            pidsAtLimit = Math.max(pidsAtLimit, Number(/max (\d+)/.exec((await cgroupFile("pids", cid, "pids.events")) ?? "")?.[1] ?? 0));
            peakMem = Math.max(peakMem, Number((await cgroupFile("memory", cid, "memory.max_usage_in_bytes")) ?? 0));
            await sleep(100);
          }
        })();
        // runc: at the limit, the agent serves concurrent uploads and downloads. Its runtime
        // needs threads for them; before the agent made its threads at start, it aborted here
        // when it could not start one (the limit counts threads), taking the sandbox with it.
        const load =
          runtime === "runc"
            ? (async () => {
                for (let i = 0; i < 200; i++) {
                  if (Number(/max (\d+)/.exec((await cgroupFile("pids", cid, "pids.events")) ?? "")?.[1] ?? 0) > 0) break;
                  await sleep(50);
                }
                const headers = { "x-api-key": w.t.apiKey };
                return Promise.all(
                  Array.from({ length: 16 }, async (_, i) => {
                    const body = randomBytes(256 * 1024);
                    const url = (op: string): string => `${bomb.dataplane_url}/${op}?path=${encodeURIComponent(`/root/load-${i}`)}`;
                    const up = await fetch(url("upload"), { method: "POST", headers: { ...headers, "content-type": "application/octet-stream" }, body });
                    await up.arrayBuffer();
                    const down = await fetch(url("download"), { headers });
                    const back = Buffer.from(await down.arrayBuffer());
                    return `${up.status} ${down.status} ${back.equals(body)}`;
                  }),
                );
              })()
            : Promise.resolve([]);
        const { result, samples } = await whileAbusing(bombing);
        await watch;
        const loaded = await load;
        expectNeighbourFine("fork bomb", before, samples);
        console.info(
          `[abuse ${runtime}] fork bomb: exec ${result.status} ${JSON.stringify(result.body).slice(0, 120)}; cgroup pids peak ${peakPids}, refused at the limit ${pidsAtLimit}, memory peak ${Math.round(peakMem / MIB)} MiB`,
        );
        expect(peakPids).toBeLessThanOrEqual(4096);
        const endedWhole = async (): Promise<void> => {
          const s = await waitStopped(bomb);
          expect(s.status).toBe("stopped");
          expect(s.status_message).toMatch(STOPPED_MESSAGE);
          expect((await w.t.call("POST", `/boxes/${bomb.id}/start`, {})).status).toBe(200);
          await trackVeths();
          expect(await out(bomb, "cat /root/kept")).toBe("kept\n");
        };
        if (runtime === "runsc") {
          // The command's request fails with the sandbox: not ready (the monitor got there
          // first) or a broken connection to the agent.
          expect(result.status, JSON.stringify(result.body)).not.toBe(200);
          expect(["SANDBOX_NOT_READY", "SANDBOX_CONNECTION_ERROR"]).toContain(result.body.code);
          await endedWhole();
          return;
        }
        // runc: the kernel refuses forks past 4096 tasks in the sandbox's pids cgroup.
        expect(pidsAtLimit).toBeGreaterThan(0);
        expect(loaded).toEqual(Array.from({ length: 16 }, () => "200 200 true"));
        expect(result.status, JSON.stringify(result.body)).toBe(200);
        expect(result.body.stdout, `exit ${result.body.exit_code}; ${String(result.body.stderr).slice(-300)}`).toBe("survived\n");
        expect(result.body.stderr).toContain("can't fork: Resource temporarily unavailable");
        // The bomb burns out once its forks fail; what is left is killed, and the sandbox works.
        await out(bomb, "kill -9 -1 2>/dev/null; true");
        let procs = Infinity;
        for (let i = 0; i < 50 && procs > 10; i++) {
          procs = Number((await out(bomb, "ls /proc | grep -c '^[0-9]'")).trim());
          if (procs > 10) await sleep(200);
        }
        expect(procs).toBeLessThanOrEqual(10);
        expect((await status(bomb)).status).toBe("ready");
        expect(await out(bomb, "cat /root/kept")).toBe("kept\n");
      } finally {
        await dispose(bomb);
      }
    },
  );

  it(
    runtime === "runc"
      ? "a memory hog is OOM-killed inside its own mem_bytes; the sandbox stays ready"
      : "a memory hog ends its own sandbox at mem_bytes (marked stopped), nothing else",
    async () => {
      const limit = 128 * MIB;
      const hog = await create({ snapshot_name: "python", name: "mem-hog", mem_bytes: limit });
      try {
        const cid = cidOf(hog);
        expect(await cgroupFile("memory", cid, "memory.limit_in_bytes")).toBe(String(limit));
        const before = await baseline();
        let peak = 0;
        // Filled bytes, not calloc'd ones: every page is touched and charged.
        const hogging = w.exec(
          hog,
          `python3 -c "
chunks = []
while True:
    chunks.append(b'x' * (8 << 20))
    print(len(chunks) * 8, flush=True)
"; echo "exit=$?"`,
          { timeout: 60 },
        );
        const watch = (async () => {
          let live = true;
          hogging.finally(() => {
            live = false;
          });
          while (live) {
            peak = Math.max(peak, Number((await cgroupFile("memory", cid, "memory.max_usage_in_bytes")) ?? 0));
            await sleep(100);
          }
        })();
        const { result, samples } = await whileAbusing(hogging);
        await watch;
        expectNeighbourFine("memory hog", before, samples);
        const lastMib = Number(
          result.body.stdout
            ?.trim()
            .split("\n")
            .filter((l) => /^\d+$/.test(l))
            .at(-1) ?? 0,
        );
        console.info(
          `[abuse ${runtime}] memory hog: exec ${result.status} exit ${result.body.exit_code}, last allocation report ${lastMib} MiB, cgroup peak ${Math.round(peak / MIB)} MiB of ${limit / MIB}`,
        );
        // (The cgroup charges in per-CPU batches, so its high-water mark may pass the limit by a few pages.)
        expect(peak).toBeLessThanOrEqual(limit + MIB);
        expect(lastMib).toBeLessThan(limit / MIB);
        if (runtime === "runc") {
          // The kernel's OOM killer takes the hog (SIGKILL, 128 + 9 in the shell), not the agent.
          expect(result.status).toBe(200);
          expect(result.body.stdout).toMatch(/\nexit=137\n$/);
          expect(Number(/oom_kill (\d+)/.exec((await cgroupFile("memory", cid, "memory.oom_control")) ?? "")?.[1])).toBeGreaterThan(0);
          expect((await status(hog)).status).toBe("ready");
          expect(await out(hog, "echo still-here")).toBe("still-here\n");
        } else {
          expect(result.status).not.toBe(200);
          const s = await waitStopped(hog);
          expect(s.status).toBe("stopped");
          expect(s.status_message).toMatch(STOPPED_MESSAGE);
        }
      } finally {
        await dispose(hog);
      }
    },
  );

  it("a disk filler stops at fs_capacity_bytes with ENOSPC (uploads get NO_SPACE); deleting the file makes room again", async () => {
    const capacity = 128 * MIB;
    const filler = await create({ snapshot_name: "python", name: "disk-filler", fs_capacity_bytes: capacity });
    try {
      const before = await baseline();
      const filling = w.exec(
        filler,
        `python3 -c "
import errno
n = 0
try:
    with open('/root/fill', 'wb') as f:
        while True:
            f.write(b'x' * (1 << 20))
            f.flush()
            n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
"`,
        { timeout: 120 },
      );
      const { result, samples } = await whileAbusing(filling);
      expectNeighbourFine("disk filler", before, samples);
      console.info(`[abuse ${runtime}] disk filler: ${result.body.stdout?.trim()} (MiB written) of ${capacity / MIB} MiB`);
      expect(result.status).toBe(200);
      const [code, written] = result.body.stdout.trim().split(" ");
      expect(code).toBe("ENOSPC");
      expect(Number(written)).toBeGreaterThan(capacity / MIB / 2);
      expect(Number(written)).toBeLessThan(capacity / MIB);
      // The host side: the disk image is exactly the capacity, however much was written into it.
      expect((await stat(`${w.t.dataDir}/sandboxes/${filler.id}/disk.img`)).size).toBe(capacity);
      const upload = (): Promise<Response> =>
        fetch(`${filler.dataplane_url}/upload?path=/root/more`, {
          method: "POST",
          headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" },
          body: new Uint8Array(4 * MIB),
        });
      const full = await upload();
      expect(full.status).toBe(507);
      expect(((await full.json()) as { code: string }).code).toBe("NO_SPACE");
      expect((await status(filler)).status).toBe("ready");
      await out(filler, "rm -f /root/fill /root/more");
      expect(await out(filler, "head -c 16777216 /dev/zero > /root/after && wc -c < /root/after")).toBe("16777216\n");
      expect((await upload()).status).toBe(200);
    } finally {
      await dispose(filler);
    }
  });

  it("a CPU hog gets its vcpus and no more", async () => {
    const hog = await create({ snapshot_name: "busybox", name: "cpu-hog", vcpus: 0.5 });
    try {
      const cid = cidOf(hog);
      expect(await cgroupFile("cpu", cid, "cpu.cfs_quota_us")).toBe("50000");
      const usage = async (): Promise<number> => Number(await cgroupFile("cpuacct", cid, "cpuacct.usage"));
      const before = await baseline();
      const used0 = await usage();
      const t0 = Date.now();
      // Two busy loops: unlimited they would take both cores.
      const spinning = w.exec(hog, "(timeout 4 sh -c 'while :; do :; done' &) ; timeout 4 sh -c 'while :; do :; done'; echo done", { timeout: 60 });
      const { result, samples } = await whileAbusing(spinning);
      const wallS = (Date.now() - t0) / 1000;
      const usedS = ((await usage()) - used0) / 1e9;
      expectNeighbourFine("CPU hog", before, samples);
      console.info(`[abuse ${runtime}] CPU hog: ${usedS.toFixed(2)} CPU-s in ${wallS.toFixed(2)} s at vcpus 0.5`);
      expect(result.body.stdout).toContain("done");
      expect(wallS).toBeGreaterThan(3.5);
      expect(usedS).toBeLessThan(wallS * 0.5 * 1.25 + 0.3);
      expect(usedS).toBeGreaterThan(wallS * 0.5 * 0.5);
    } finally {
      await dispose(hog);
    }
  });

  it("leaves nothing on the host: containers, namespaces, veths, firewall rules, mounts, loop devices, cgroups, runtime processes", async () => {
    await remove(neighbour);
    const prefix = instancePrefix(w.t.dataDir);
    expect(await hostResources(w.t.dataDir, runtime)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    expect(veths.length).toBeGreaterThanOrEqual(5);
    expect(stillPresent(veths)).toEqual([]);
    expect(orphanFirewallRules(veths.map((v) => Number(v.name.replace(/^sbx/, ""))))).toEqual([]);
    for (const controller of ["pids", "memory", "cpu"]) {
      const left = (await readdir(`/sys/fs/cgroup/${controller}/sandbar`).catch(() => [] as string[])).filter((d) => d.startsWith(prefix));
      expect(left, controller).toEqual([]);
    }
    // runsc's sandbox and gofer processes carry the container id on their command line.
    const procs: string[] = [];
    for (const pid of (await readdir("/proc")).filter((p) => /^\d+$/.test(p))) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      if (cmd.includes(prefix)) procs.push(`${pid}: ${cmd.replace(/\0/g, " ").slice(0, 200)}`);
    }
    expect(procs).toEqual([]);
  });
});
