/**
 * Memory-snapshot figures at 64 MiB, 256 MiB and 1 GiB of resident sandbox memory: the pause a
 * sandbox sees while a capture with include_memory runs, restore -> first command, and the
 * memory image's size against the sandbox's memory in use; each against raw `runsc checkpoint`
 * / `runsc restore` of the same sandbox, measured in the same run.
 *
 *   npx tsx bench/memory-bench.ts [--sizes 64,256,1024] [--reps 3] [--out bench/results/memory.json]
 *
 * Per size M: one python sandbox (mem_bytes M + 512 MiB) holds M MiB of random bytes (random so
 * that the image's compression cannot make it look smaller than what is resident) and runs a
 * ticker that sleeps 5 ms at a time and logs every wall-clock gap over 10 ms. The pause is the
 * longest gap overlapping the operation, seen from inside, so ours and raw are measured alike.
 * Each rep, in alternating order so page-cache writeback and warm-up hit both sides alike:
 *   - ours: POST /boxes/{id}/snapshot {include_memory} until the snapshot is ready (the server
 *     pauses, tars the writable layer, checkpoints, resumes; its "paused for a capture" log line
 *     gives the host-timed pause); raw: `runsc pause`, `runsc checkpoint --leave-running`,
 *     `runsc resume` of the same container with the server's global flags, timed on the host.
 *   - ours: POST /boxes {snapshot_id} (wait_for_ready) and the first `echo hi` execute; raw:
 *     `runsc restore --detach` of the raw image (in the same unshare wrapper the server uses) and
 *     `runsc exec NEWCID /bin/echo hi`. The raw bundle is the sandbox's own config.json pointed
 *     at an overlay over its rootfs (the files the checkpoint saw), a network namespace of its
 *     own with the sandbox's address on eth0 (runsc takes the address into its netstack, so it
 *     must be there before the restore), and a cgroup of its own. The bench does not reuse the
 *     server's bundle after `runsc delete`: the server's monitor would find the container gone
 *     and release the sandbox's network and disk under the raw restore. Untimed set-up, so the
 *     raw figure leaves out what the server adds (disk, network and firewall, agent health
 *     check, HTTP). Both restores read an image just written, from a warm page cache.
 *   - image size: memory_snapshot_size_bytes against the sandbox's memory in use (`runsc events
 *     --stats`, what the checkpoint has to save) just before the capture.
 * The sandbox changes almost no files, so the tar of its writable layer is a negligible part of
 * the capture's pause here (bench/lifecycle-bench.ts measures captures against bytes changed).
 * Per-run details (hog VmRSS, capture request -> ready, raw image size, the server's boot time
 * of the restore) go to stderr. Everything the run makes is removed at the end, also after a
 * failure or Ctrl-C (a server that went down is started again on its data dir to delete its
 * sandboxes).
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import type { ServerProcess } from "../test/support/server-process.js";
import { Cleanup, cleanUpOnSignals, startBenchServer, type ApiClient, type SnapshotJson } from "./harness.js";
import { fmt, report, runMain, summarize, type Row } from "./stats.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;
/** The server's runsc global flags (oci-runtime.ts), default --root. */
const RUNSC = ["runsc", "--platform=ptrace", "--overlay2=none"];
/** The server's wrapper for run/restore: runsc refuses a netns it takes for the host's. */
const UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none /proc/sys/net && exec "$@"', "sh"];
const OWN_IP = `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.255.255.254', 9)); print(s.getsockname()[0])"`;
/** Sleeps 5 ms at a time; appends "start end" (wall clock, s) of every gap over 10 ms. */
const TICKER = `import time
last = time.time()
while True:
    time.sleep(0.005)
    now = time.time()
    if now - last > 0.01:
        with open("/tmp/gaps", "a") as f:
            f.write("%.6f %.6f\\n" % (last, now))
    last = now
`;
const hog = (mib: number): string =>
  `nohup python3 -c "import os, time; b = os.urandom(${mib} << 20); open('/tmp/hog.ready', 'w').write(str(os.getpid())); time.sleep(1e9)" >/dev/null 2>&1 &`;

interface Box {
  id: string;
  name: string;
  dataplane_url: string;
}

async function runsc(...args: string[]): Promise<string> {
  const [file, ...flags] = RUNSC as [string, ...string[]];
  return (await run(file, [...flags, ...args], { maxBuffer: 16 * MIB, timeout: 600_000 })).stdout;
}

/** `runsc delete --force`, quiet when the container is already gone. */
async function runscDelete(cid: string): Promise<void> {
  const gone = (e: unknown): boolean => /does not exist|not found|no such/i.test(`${(e as { stderr?: string }).stderr ?? ""}${(e as Error).message}`);
  try {
    await runsc("delete", "--force", cid);
  } catch (e) {
    if (gone(e)) return;
    // A half-created container can refuse delete until killed (as the server's remove does).
    await runsc("kill", cid, "KILL").catch(() => undefined);
    await runsc("delete", "--force", cid).catch((e2: unknown) => {
      if (!gone(e2)) throw e2;
    });
  }
}

async function unmountIfMounted(target: string): Promise<void> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  if (mounts.split("\n").some((l) => l.split(" ")[1] === target)) await run("umount", [target]);
}

async function deleteNetns(name: string): Promise<void> {
  await run("ip", ["netns", "delete", name]).catch((e: { stderr?: string; message: string }) => {
    if (!/No such file|not found|does not exist/i.test(`${e.stderr ?? ""}${e.message}`)) throw e;
  });
}

/** A detaching runsc command (restore --detach) as the server runs it: wrapped, output to a file, own session. */
async function runscDetached(args: string[], logFile: string): Promise<void> {
  const log = await open(logFile, "a");
  try {
    const [file, ...rest] = [...UNSHARE, ...RUNSC, ...args] as [string, ...string[]];
    const child = spawn(file, rest, { stdio: ["ignore", log.fd, log.fd], detached: true });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`runsc ${args[0]} exited ${code}: ${(await readFile(logFile, "utf8")).slice(-2000)}`);
  } finally {
    await log.close();
  }
}

/** The control plane and data plane over raw HTTP with the key. */

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A numeric field of the server's log lines `msg` about one sandbox, in order. */
function logged(output: string, msg: string, sandboxId: string, field: string): number[] {
  const out: number[] = [];
  for (const line of output.split("\n")) {
    if (!line.includes(msg) || !line.includes(sandboxId)) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      const v = rec[field];
      if (rec.msg === msg && rec.sandboxId === sandboxId && typeof v === "number") out.push(v);
    } catch {
      // not a JSON log line
    }
  }
  return out;
}
const PAUSED = "sandbox paused for a capture";

/** Longest ticker gap (ms) overlapping [t0, t1] (host wall clock, ms); the sandbox reads the host's clock. */
async function longestGap(api: ApiClient, sb: Box, t0: number, t1: number): Promise<number> {
  const text = await api.exec(sb, "cat /tmp/gaps 2>/dev/null || true");
  let longest = 0;
  for (const line of text.split("\n")) {
    const [a, b] = line.trim().split(/\s+/).map((x) => Number(x) * 1000);
    if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b)) continue;
    if (a < t1 && b > t0) longest = Math.max(longest, b - a);
  }
  if (longest === 0) {
    console.error("[memory-bench] no ticker gap over 10 ms during the operation; counting 10 ms");
    return 10;
  }
  if (longest > t1 - t0 + 50) console.error(`[memory-bench] ticker gap ${fmt(longest)} ms exceeds the operation (${fmt(t1 - t0)} ms): clocks disagree?`);
  return longest;
}

/** The sandbox's memory in use as gVisor accounts it (everything a checkpoint saves), bytes. */
async function sandboxUsage(cid: string): Promise<number> {
  const ev = JSON.parse(await runsc("events", "--stats", cid)) as { data?: { memory?: { usage?: { usage?: number } } } };
  const usage = ev.data?.memory?.usage?.usage;
  if (typeof usage !== "number") throw new Error(`runsc events --stats ${cid}: no memory usage`);
  return usage;
}

/** Bytes of the files under a directory. */
async function dirBytes(dir: string): Promise<number> {
  const { stdout } = await run("du", ["-sb", "--apparent-size", dir]);
  return Number(stdout.split(/\s/)[0]);
}

const label = (mib: number): string => (mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`);

interface Ctx {
  api: ApiClient;
  server: () => ServerProcess;
  dataDir: string;
  /** Container ids are `sandbar-${tag}-${sandbox id}`, tag = first 8 hex of sha256(dataDir). */
  tag: string;
  scratch: string;
  python: string;
  cleanup: Cleanup;
  seq: { n: number };
  /** Runs an API clean-up step while the server is up; a downed one is restarted and cleared at the end. */
  viaServer(fn: () => Promise<unknown>): Promise<unknown>;
}

interface SizeResult {
  oursGap: number[];
  rawGap: number[];
  oursHost: number[];
  rawHost: number[];
  oursRestore: number[];
  rawRestore: number[];
  image: number[];
  usage: number[];
}

async function measureSize(ctx: Ctx, mib: number, reps: number): Promise<SizeResult> {
  const { api, cleanup } = ctx;
  const res: SizeResult = { oursGap: [], rawGap: [], oursHost: [], rawHost: [], oursRestore: [], rawRestore: [], image: [], usage: [] };
  const memBytes = (mib + 512) * MIB;
  const sb = await api.call<Box>("POST", "/boxes", { snapshot_id: ctx.python, name: `mem-${mib}`, mem_bytes: memBytes, timeout: 120 });
  const dropSource = cleanup.add(`sandbox ${sb.id}`, () => ctx.viaServer(() => api.call("DELETE", `/boxes/${sb.id}`)));
  const cid = `sandbar-${ctx.tag}-${sb.id}`;
  await runsc("state", cid); // the container id is what we think it is
  await api.exec(sb, `cat > /tmp/ticker.py <<'EOF'\n${TICKER}EOF\nnohup python3 /tmp/ticker.py >/dev/null 2>&1 &`);
  await api.exec(sb, hog(mib));
  const deadline = Date.now() + 600_000;
  let hogPid = "";
  while (!(hogPid = (await api.exec(sb, "cat /tmp/hog.ready 2>/dev/null || true")).trim())) {
    if (Date.now() > deadline) throw new Error(`the ${mib} MiB allocation did not finish within 600 s`);
    await sleep(250);
  }
  const ip = (await api.exec(sb, OWN_IP)).trim();
  const hostIp = ip.replace(/\d+$/, (x) => String(Number(x) - 1));
  const sourceBundle = join(ctx.dataDir, "sandboxes", sb.id, "bundle");
  const sourceRootfs = join(ctx.dataDir, "sandboxes", sb.id, "rootfs");
  // Let writeback of earlier steps finish outside the timed parts.
  const settle = async (): Promise<void> => {
    await run("sync", ["-f", ctx.scratch]);
    await run("sync", ["-f", ctx.dataDir]);
    await sleep(500);
  };

  for (let rep = 0; rep < reps; rep++) {
    const usage = await sandboxUsage(cid);
    const hogRss = (await api.exec(sb, `grep VmRSS /proc/${hogPid}/status`)).replace(/\s+/g, " ").trim();
    const imageDir = join(ctx.scratch, `raw-image-${mib}-${rep}`);
    await mkdir(imageDir);
    const dropImage = cleanup.add(`raw image ${imageDir}`, () => rm(imageDir, { recursive: true, force: true }));
    let snap: SnapshotJson | undefined;
    let dropSnap: () => Promise<void> = async () => undefined;
    const detail: string[] = [`${label(mib)} rep ${rep + 1}/${reps}: in use ${fmt(usage / MIB)} MiB, hog ${hogRss}`];

    const oursCapture = async (): Promise<void> => {
      await settle();
      await api.exec(sb, ": > /tmp/gaps");
      const before = logged(ctx.server().output(), PAUSED, sb.id, "pausedMs").length;
      const t0 = Date.now();
      const created = await api.call<SnapshotJson>("POST", `/boxes/${sb.id}/snapshot`, { name: `mem-${mib}-${rep}`, include_memory: true });
      dropSnap = cleanup.add(`snapshot ${created.id}`, () => ctx.viaServer(() => api.call("DELETE", `/snapshots/${created.id}`)));
      snap = await api.waitSnapshot(created.id);
      const t1 = Date.now();
      const gap = await longestGap(api, sb, t0, t1);
      // The line is written before the snapshot turns ready, but reaches us through a pipe.
      let paused = logged(ctx.server().output(), PAUSED, sb.id, "pausedMs")[before];
      for (let i = 0; i < 50 && paused === undefined; i++) {
        await sleep(20);
        paused = logged(ctx.server().output(), PAUSED, sb.id, "pausedMs")[before];
      }
      if (paused === undefined) throw new Error("the server logged no 'sandbox paused for a capture' line");
      res.oursGap.push(gap);
      res.oursHost.push(paused);
      res.image.push((snap.memory_snapshot_size_bytes ?? NaN) / MIB);
      res.usage.push(usage / MIB);
      detail.push(`ours: gap ${fmt(gap)} ms, server pausedMs ${paused}, request -> ready ${t1 - t0} ms, image ${fmt((snap.memory_snapshot_size_bytes ?? NaN) / MIB)} MiB`);
    };
    const rawCheckpoint = async (): Promise<void> => {
      await settle();
      // Not through the server: gVisor will not checkpoint with a TCP connection open, and the
      // server keeps its idle connection to the agent for 4 s (it closes it itself before its
      // own checkpoints). So: reset the gaps file with runsc exec, and let that connection expire.
      await runsc("exec", cid, "sh", "-c", ": > /tmp/gaps");
      await sleep(4500);
      const t0 = Date.now();
      const p0 = performance.now();
      await runsc("pause", cid);
      try {
        await runsc("checkpoint", "--leave-running", `--image-path=${imageDir}`, cid);
      } finally {
        await runsc("resume", cid);
      }
      const host = performance.now() - p0;
      const gap = await longestGap(api, sb, t0, Date.now());
      res.rawGap.push(gap);
      res.rawHost.push(host);
      detail.push(`raw: gap ${fmt(gap)} ms, pause+checkpoint+resume ${fmt(host)} ms, image ${fmt((await dirBytes(imageDir)) / MIB)} MiB`);
    };
    const oursRestore = async (): Promise<void> => {
      if (!snap) throw new Error("no snapshot to restore");
      await settle();
      const p0 = performance.now();
      const r = await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id, mem_bytes: memBytes, timeout: 300 });
      const dropRestored = cleanup.add(`sandbox ${r.id}`, () => ctx.viaServer(() => api.call("DELETE", `/boxes/${r.id}`)));
      const hi = await api.exec(r, "echo hi");
      const ms = performance.now() - p0;
      if (hi.trim() !== "hi") throw new Error(`restored sandbox answered ${JSON.stringify(hi)}`);
      res.oursRestore.push(ms);
      const boot = logged(ctx.server().output(), "sandbox ready", r.id, "ms")[0];
      detail.push(`ours restore -> first command ${fmt(ms)} ms (server boot incl. runsc restore ${boot ?? "?"} ms)`);
      await dropRestored();
    };
    const rawRestore = async (): Promise<void> => {
      const n = ++ctx.seq.n;
      const name = `mbench-${process.pid}-${n}`;
      const veth = `mbv${process.pid}-${n}`.slice(0, 15);
      const bundle = join(ctx.scratch, `bundle-${n}`);
      const rootfs = join(bundle, "rootfs");
      for (const d of ["upper", "work", "rootfs"]) await mkdir(join(bundle, d), { recursive: true });
      const dropBundle = cleanup.add(`bundle ${bundle}`, () => rm(bundle, { recursive: true, force: true }));
      await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${sourceRootfs},upperdir=${join(bundle, "upper")},workdir=${join(bundle, "work")}`, rootfs]);
      const dropMount = cleanup.add(`mount ${rootfs}`, () => unmountIfMounted(rootfs));
      await run("ip", ["netns", "add", name]);
      // Deleting the namespace deletes eth0 and with it its host-side peer.
      const dropNetns = cleanup.add(`netns ${name}`, () => deleteNetns(name));
      await run("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name]);
      await run("ip", ["link", "set", veth, "up"]);
      for (const args of [["link", "set", "lo", "up"], ["link", "set", "eth0", "up"], ["addr", "add", `${ip}/30`, "dev", "eth0"], ["route", "add", "default", "via", hostIp]]) {
        await run("ip", ["-n", name, ...args]);
      }
      const spec = JSON.parse(await readFile(join(sourceBundle, "config.json"), "utf8")) as {
        root: { path: string };
        linux: { cgroupsPath: string; namespaces: { type: string; path?: string }[] };
      };
      spec.root.path = rootfs;
      spec.linux.cgroupsPath = `/sandbar/${name}`;
      for (const ns of spec.linux.namespaces) if (ns.type === "network") ns.path = `/run/netns/${name}`;
      await writeFile(join(bundle, "config.json"), JSON.stringify(spec));
      const dropContainer = cleanup.add(`container ${name}`, () => runscDelete(name));
      await settle();
      const p0 = performance.now();
      await runscDetached(["restore", "--detach", `--image-path=${imageDir}`, `--bundle=${bundle}`, name], join(ctx.scratch, `${name}.log`));
      const hi = await runsc("exec", name, "/bin/echo", "hi");
      const ms = performance.now() - p0;
      if (hi.trim() !== "hi") throw new Error(`raw restore answered ${JSON.stringify(hi)}`);
      res.rawRestore.push(ms);
      detail.push(`raw restore -> first command ${fmt(ms)} ms`);
      await dropContainer();
      await dropNetns();
      await dropMount();
      await dropBundle();
    };

    const first = rep % 2 === 0;
    for (const step of first ? [oursCapture, rawCheckpoint] : [rawCheckpoint, oursCapture]) await step();
    for (const step of first ? [oursRestore, rawRestore] : [rawRestore, oursRestore]) await step();
    await dropSnap();
    await dropImage();
    console.error(`[memory-bench] ${detail.join("; ")}`);
  }
  await dropSource();
  return res;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { sizes: { type: "string", default: "64,256,1024" }, reps: { type: "string", default: "3" }, out: { type: "string", default: "bench/results/memory.json" } },
  });
  const sizes = values.sizes.split(",").map(Number);
  const reps = Number(values.reps);
  if (sizes.some((s) => !Number.isInteger(s) || s < 1) || !Number.isInteger(reps) || reps < 1) throw new Error("--sizes takes MiB like 64,256,1024; --reps a positive integer");
  const cleanup = new Cleanup("memory-bench");
  // An interrupted run still removes what it made.
  const detach = cleanUpOnSignals("memory-bench", cleanup);
  const rows: Row[] = [];
  try {
    const registry = await startRegistry();
    cleanup.add("registry", () => registry.stop());
    const img = await testImage("python");
    await pushImage(img.layoutDir, img.tag, registry.host, "python:latest");
    const scratch = await mkdtemp(join(tmpdir(), "sandbar-bench-memory-"));
    cleanup.add(`scratch ${scratch}`, () => rm(scratch, { recursive: true, force: true }));
    // Its own process, as deployed; info level for the "paused for a capture" lines.
    const bench = await startBenchServer(cleanup, { SANDBAR_LOG_LEVEL: "info" });
    const { dataDir, api } = bench;
    const created = await api.call<SnapshotJson>("POST", "/snapshots", { name: "python", docker_image: `${registry.host}/python:latest` });
    const python = (await api.waitSnapshot(created.id)).id;
    const ctx: Ctx = { api, server: () => bench.server, viaServer: async (fn) => {
        // A server going down takes no requests; the server's own step clears everything.
        if (bench.alive()) await fn().catch((e: unknown) => {
          if ((e as Error).message !== "fetch failed") throw e;
        });
      }, dataDir, tag: createHash("sha256").update(dataDir).digest("hex").slice(0, 8), scratch, python, cleanup, seq: { n: 0 } };
    const results = new Map<number, SizeResult>();
    for (const mib of sizes) results.set(mib, await measureSize(ctx, mib, reps));
    const each = (f: (mib: number, r: SizeResult) => Row): void => {
      for (const [mib, r] of results) rows.push(f(mib, r));
    };
    each((mib, r) => ({ case: `pause seen inside, capture with memory, ${label(mib)}`, unit: "ms", ours: summarize(r.oursGap), baseline: summarize(r.rawGap), baselineName: "raw runsc pause + checkpoint --leave-running + resume, same ticker" }));
    each((mib, r) => ({ case: `pause timed on the host, ${label(mib)}`, unit: "ms", ours: summarize(r.oursHost), baseline: summarize(r.rawHost), baselineName: "raw runsc pause + checkpoint + resume, timed around the commands (ours: server's pausedMs)" }));
    each((mib, r) => ({ case: `restore -> first command, ${label(mib)}`, unit: "ms", ours: summarize(r.oursRestore), baseline: summarize(r.rawRestore), baselineName: "raw runsc restore --detach + runsc exec echo hi" }));
    each((mib, r) => ({ case: `memory image size, ${label(mib)}`, unit: "MiB", ours: summarize(r.image), baseline: summarize(r.usage), baselineName: "sandbox memory in use before the capture (runsc events)" }));
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows);
}

runMain(main);
