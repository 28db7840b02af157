/**
 * Density figures: how many idle sandboxes the machine holds and the host memory each costs,
 * against raw `runsc run --detach` of the same bundle measured the same way, in one run.
 *
 *   npx tsx bench/density-bench.ts [--target 200] [--batch 10] [--raw 20] [--mem-mib 32] [--out bench/results/density.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed); busybox snapshot.
 * - ours: idle sandboxes created one after another (`POST /boxes`, wait_for_ready, the smallest
 *   memory and disk the API allows: `--mem-mib` MiB (32 is the minimum) and 64 MiB of disk;
 *   the default 1 vCPU, a CPU limit costs no memory; idle_ttl 0 so none is stopped) until
 *   `--target` are up; a failed create is recorded with its message and the run goes on (it
 *   stops after 5 failures in a row). Host memory is /proc/meminfo MemAvailable
 *   (free memory plus what the kernel can reclaim, so page cache does not count as used),
 *   read 1.5 s after the last create of each batch of `--batch` sandboxes; each batch gives one
 *   sample, (MemAvailable before the batch - after) / sandboxes in it: everything a sandbox
 *   costs the host (the gVisor sentry and gofer, its disk's loop device and ext4, the
 *   server's bookkeeping), and nothing the sandbox never touched. Then a few sandboxes spread
 *   over the run (first, middle, last) must answer `echo hi`; then all are deleted, 8 at a time.
 * - raw: `--raw` raw `runsc run --detach` of a sandbox's own bundle (bench/raw-runsc.ts: own
 *   netns and cgroup, same rootfs and agent as init), in batches of 5 measured the same way,
 *   with one server sandbox up (the bundle's owner); each raw container must still be running
 *   at the end of its batch.
 * A second, noise-free measure: the proportional set size (PSS, shared pages such as runsc's
 * code split among the processes that map them) of the processes in each sandbox's cgroup,
 * summed per sandbox, read once with all of them up (ours) and all raw ones up (raw); it leaves
 * out kernel memory (page tables, the disk's loop device and ext4, the network namespace),
 * which MemAvailable includes, and is immune to other programs on the machine.
 * Other figures (create -> ready of the first and last batch, how many sandboxes the
 * MemAvailable at the start would hold at the measured rate, delete-all time) go to the JSON's
 * details; the row's note gives the count booted and that estimate.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { busyboxBench, Cleanup, cleanUpOnSignals, mapLimit, memAvailable, rawCall } from "./harness.js";
import { RawRunsc, type RawContainer } from "./raw-runsc.js";
import { fmt, report, runMain, summarize, type Row } from "./stats.js";

const MIB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Box {
  id: string;
  dataplane_url: string;
}

/**
 * Proportional set size (shared pages split among their users) of every process in a cgroup,
 * bytes: v1's memory hierarchy, else the unified one.
 */
async function cgroupPss(cgroupsPath: string): Promise<number> {
  const procs = await readFile(`/sys/fs/cgroup/memory${cgroupsPath}/cgroup.procs`, "utf8").catch(() =>
    readFile(`/sys/fs/cgroup${cgroupsPath}/cgroup.procs`, "utf8"),
  );
  let kb = 0;
  for (const pid of procs.split("\n").filter(Boolean)) {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
    kb += Number(/^Pss:\s+(\d+) kB$/m.exec(rollup)?.[1] ?? 0);
  }
  return kb * 1024;
}

/** MemAvailable once things settled (the last boot's transient allocations freed). */
async function settledMemAvailable(): Promise<number> {
  await sleep(1500);
  return memAvailable();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "200" },
      batch: { type: "string", default: "10" },
      raw: { type: "string", default: "20" },
      "mem-mib": { type: "string", default: "32" },
      out: { type: "string", default: "bench/results/density.json" },
    },
  });
  const target = Number(values.target);
  const batch = Number(values.batch);
  const rawCount = Number(values.raw);
  const memMib = Number(values["mem-mib"]);
  if (![target, batch, rawCount, memMib].every((n) => Number.isInteger(n) && n >= 1))
    throw new Error("--target, --batch, --raw and --mem-mib take positive integers");
  const cleanup = new Cleanup("density-bench");
  const detach = cleanUpOnSignals("density-bench", cleanup);
  const rows: Row[] = [];
  let details: Record<string, unknown> = {};
  try {
    const { bench, snap } = await busyboxBench(cleanup);
    const { api, dataDir } = bench;
    const settings = { snapshot_id: snap.id, wait_for_ready: true, timeout: 120, mem_bytes: memMib * MIB, fs_capacity_bytes: 64 * MIB, idle_ttl_seconds: 0 };

    // --- ours: idle sandboxes, one after another, MemAvailable per batch
    const boxes: Box[] = [];
    const createMs: number[] = [];
    const failures: { index: number; ms: number; error: string }[] = [];
    const perSandbox: number[] = [];
    const start = await settledMemAvailable();
    let before = start;
    let inBatch = 0;
    let failedInARow = 0;
    const t0 = performance.now();
    for (let i = 0; i < target && failedInARow < 5; i++) {
      const s = performance.now();
      const r = await rawCall(bench.server.url, bench.apiKey, "POST", "/boxes", settings).catch((e: unknown) => ({
        status: 0,
        text: (e as Error).message,
        json: undefined,
      }));
      const ms = performance.now() - s;
      const box = r.json as (Box & { status?: string }) | undefined;
      if (r.status === 201 && box?.status === "ready") {
        boxes.push(box);
        createMs.push(ms);
        inBatch++;
        failedInARow = 0;
      } else {
        failures.push({ index: i, ms, error: `${r.status} ${r.text.slice(0, 500)}` });
        console.error(`[density-bench] create ${i + 1} failed after ${fmt(ms)} ms: ${r.status} ${r.text.slice(0, 300)}`);
        failedInARow++;
      }
      if (inBatch === batch || (i === target - 1 && inBatch > 0)) {
        const after = await settledMemAvailable();
        perSandbox.push((before - after) / inBatch / MIB);
        console.error(
          `[density-bench] ${boxes.length} up: ${fmt((before - after) / inBatch / MIB)} MiB each in this batch, MemAvailable ${fmt(after / MIB / 1024, 2)} GiB`,
        );
        before = after;
        inBatch = 0;
      }
    }
    const bootAllMs = performance.now() - t0;
    const end = await memAvailable();
    const overall = (start - end) / Math.max(1, boxes.length) / MIB;
    // PSS of each sandbox's processes, all up at once (shared pages split among them all).
    const pss: number[] = [];
    for (const b of boxes) {
      const spec = JSON.parse(await readFile(join(dataDir, "sandboxes", b.id, "bundle", "config.json"), "utf8")) as { linux: { cgroupsPath: string } };
      pss.push((await cgroupPss(spec.linux.cgroupsPath)) / MIB);
    }
    // A few, spread over the run, still answer.
    const check = [...new Set([0, Math.floor(boxes.length / 2), boxes.length - 1])].flatMap((i) => (boxes[i] ? [boxes[i]] : []));
    const answered: string[] = [];
    for (const b of check) {
      const out = await api.exec(b, "echo hi");
      if (out !== "hi\n") throw new Error(`sandbox ${b.id} answered ${JSON.stringify(out)}`);
      answered.push(b.id);
    }
    const d0 = performance.now();
    for (;;) {
      const listed = await api.call<{ sandboxes: { id: string }[] }>("GET", "/boxes?limit=500");
      if (listed.sandboxes.length === 0) break;
      const deletes = await mapLimit(listed.sandboxes, 8, (b) => api.call("DELETE", `/boxes/${b.id}`));
      const deleteFailures = deletes.flatMap((d) => (d.status === "rejected" ? [(d.reason as Error).message] : []));
      if (deleteFailures.length) throw new Error(`deletes failed: ${deleteFailures.join("; ")}`);
    }
    const deleteAllMs = performance.now() - d0;

    // --- raw: runsc run --detach of a probe sandbox's bundle, in batches of 5
    const probe = await api.call<Box>("POST", "/boxes", settings);
    const raw = await RawRunsc.fromSandbox(cleanup, dataDir, probe.id);
    const rawPer: number[] = [];
    const rawContainers: RawContainer[] = [];
    let rawBefore = await settledMemAvailable();
    for (let done = 0; done < rawCount;) {
      const n = Math.min(5, rawCount - done);
      const these: RawContainer[] = [];
      for (let k = 0; k < n; k++) these.push((await raw.timedRun()).container);
      rawContainers.push(...these);
      const after = await settledMemAvailable();
      for (const c of these) {
        const st = await raw.status(c.id);
        if (st !== "running") throw new Error(`raw container ${c.id} is ${st}, not running: its memory would not count`);
      }
      rawPer.push((rawBefore - after) / n / MIB);
      rawBefore = after;
      done += n;
    }
    const rawPss: number[] = [];
    for (const c of rawContainers) rawPss.push((await cgroupPss(c.cgroupsPath)) / MIB);
    await mapLimit(rawContainers, 8, (c) => c.remove());
    await api.call("DELETE", `/boxes/${probe.id}`);

    // Other load can swamp a small run's figure (even make it negative): no estimate then.
    const fits = overall > 0 ? Math.floor(start / MIB / overall) : NaN;
    rows.push({
      case: `density: host memory per idle sandbox (busybox, ${memMib} MiB limit)`,
      unit: "MiB",
      ours: summarize(perSandbox),
      baseline: summarize(rawPer),
      baselineName: "raw `runsc run --detach` of the same bundle, same measure",
      note: `${boxes.length}/${target} booted, ${failures.length} failed; ${fmt(overall)} MiB each over the whole run, ${Number.isFinite(fits) ? `so ~${fits} would fit in the ${fmt(start / MIB / 1024, 1)} GiB available at the start` : "no estimate (other load swamped the figure)"}`,
    });
    rows.push({
      case: "density: PSS of each idle sandbox's processes (sentry, gofer, agent)",
      unit: "MiB",
      ours: summarize(pss),
      baseline: summarize(rawPss),
      baselineName: "the same of each raw container, all up at once",
      note: `${boxes.length} sandboxes up together (raw: ${rawContainers.length})`,
    });
    const k = Math.min(batch, createMs.length);
    rows.push({
      case: `density: create -> ready of the last ${k} (${boxes.length - k}+ idle sandboxes up)`,
      unit: "ms",
      ours: summarize(createMs.slice(-k)),
      baseline: summarize(createMs.slice(0, k)),
      baselineName: `create -> ready of the first ${k} (0-${k - 1} up), same run`,
    });
    details = {
      target,
      booted: boxes.length,
      failures,
      memAvailableStartMiB: start / MIB,
      memAvailableEndMiB: end / MIB,
      perSandboxOverallMiB: overall,
      estimatedFit: fits,
      bootAllMs,
      createMs: summarize(createMs),
      answered,
      deleteAllMs,
      rawPerBatchMiB: rawPer,
    };
    console.error(
      `[density-bench] ${boxes.length}/${target} booted in ${fmt(bootAllMs / 1000)} s, ${fmt(overall)} MiB each; deleting all took ${fmt(deleteAllMs / 1000)} s`,
    );
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows, details);
}

runMain(main);
