/**
 * Lifecycle figures: capture time against bytes changed (1 MiB, 100 MiB, 1 GiB) with the
 * baseline of copying the same bytes on the host, and stop -> start -> first command.
 *
 *   npx tsx bench/lifecycle-bench.ts [--runs 3] [--sizes 1,100,1024] [--out bench/results/lifecycle.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed); busybox snapshot.
 * - capture: one sandbox (4 GiB disk); each rep puts a new file of N MiB of random
 *   (incompressible) bytes at /root/changed.bin, then times `POST /boxes/{id}/snapshot` until
 *   the snapshot is ready (the SDK's captureSnapshot: pause, tar of the writable layer, resume,
 *   hash and ingest into the layer store, the client's poll). The file is written from the host
 *   into the sandbox's root filesystem (its overlay mount), so it lands in the writable layer as
 *   the sandbox's own write would; writing 1 GiB from inside, through gVisor's ptrace platform,
 *   takes ~30 s a rep and is not what is measured. It is synced before the capture; the
 *   snapshot and the file are deleted after each rep (untimed).
 * - baseline: the same bytes (the same host file, synced) copied tar to tar into a fresh file
 *   on the host, synced.
 * - stop -> start -> first command, `runs` x 3 times, against create -> first command of a new
 *   sandbox.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { Cleanup, cleanUpOnSignals, startBenchServer } from "./harness.js";
import { report, runMain, summarize, timed, type Row } from "./stats.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: "string", default: "3" }, sizes: { type: "string", default: "1,100,1024" }, out: { type: "string", default: "bench/results/lifecycle.json" } },
  });
  const runs = Number(values.runs);
  const sizes = values.sizes.split(",").map(Number);
  const cleanup = new Cleanup("lifecycle-bench");
  const detach = cleanUpOnSignals("lifecycle-bench", cleanup);
  const rows: Row[] = [];
  try {
    const registry = await startRegistry();
    cleanup.add("registry", () => registry.stop());
    const img = await testImage("busybox");
    await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
    const scratch = await mkdtemp(join(tmpdir(), "sandbar-bench-copy-"));
    cleanup.add(`scratch ${scratch}`, () => rm(scratch, { recursive: true, force: true }));
    const bench = await startBenchServer(cleanup);
    const client = new SandboxClient({ endpoint: bench.server.url, apiKey: bench.apiKey });
    const snap = await client.createSnapshot("bench", `${registry.host}/busybox:latest`);
    let n = 0;
    const sb0 = await client.createSandbox({ snapshotId: snap.id, fsCapacityBytes: 4096 * MIB });
    // The host side of the sandbox's root: its overlay mount (RootfsManager's layout).
    const inSandbox = join(bench.dataDir, "sandboxes", sb0.id, "rootfs", "root", "changed.bin");
    for (const mib of sizes) {
      const ours: number[] = [];
      const base: number[] = [];
      for (let i = 0; i < runs; i++) {
        await run("sh", ["-c", `head -c ${mib * MIB} /dev/urandom > ${scratch}/src.bin && cp ${scratch}/src.bin ${inSandbox} && sync -f ${scratch}/src.bin && sync -f ${inSandbox}`]);
        let cap = "";
        ours.push(await timed(async () => (cap = (await client.captureSnapshot(sb0.id, `cap-${n++}`, { timeout: 600 })).id)));
        // Baseline: the same bytes copied into a fresh file on the host, tar to tar.
        base.push(await timed(() => run("sh", ["-c", `tar -C ${scratch} -cf - src.bin | tar -C ${scratch} -xf - --transform s/src/dst/ && sync -f ${scratch}/dst.bin`])));
        await rm(join(scratch, "dst.bin"), { force: true });
        await rm(inSandbox);
        await client.deleteSnapshot(cap);
      }
      rows.push({ case: `capture of ${mib} MiB changed`, unit: "ms", ours: summarize(ours), baseline: summarize(base), baselineName: "tar copy of the same bytes on the host" });
    }
    await sb0.delete();
    const cycle: number[] = [];
    const boot: number[] = [];
    const sb = await client.createSandbox({ snapshotId: snap.id });
    for (let i = 0; i < runs * 3; i++) {
      await sb.stop();
      cycle.push(await timed(async () => {
        await sb.start();
        await sb.run("echo hi");
      }));
      let fresh: Awaited<ReturnType<typeof client.createSandbox>> | undefined;
      boot.push(await timed(async () => {
        fresh = await client.createSandbox({ snapshotId: snap.id });
        await fresh.run("echo hi");
      }));
      await fresh?.delete();
    }
    rows.push({ case: "stop -> start -> first command", unit: "ms", ours: summarize(cycle), baseline: summarize(boot), baselineName: "create -> first command of a new sandbox" });
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows);
}

runMain(main);
