/**
 * Lifecycle figures: capture time against bytes changed (1 MiB, 100 MiB, 1 GiB) with the
 * baseline of copying the same bytes on the host, and stop -> start -> first command.
 *
 *   npx tsx bench/lifecycle-bench.ts [--runs 3] [--out bench/results/lifecycle.json]
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { startTestServer } from "../test/support/sandbar-server.js";
import { report, runMain, summarize, timed, type Row } from "./stats.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, out: { type: "string", default: "bench/results/lifecycle.json" } } });
  const runs = Number(values.runs);
  const registry = await startRegistry();
  const img = await testImage("busybox");
  await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
  const t = await startTestServer();
  const rows: Row[] = [];
  const scratch = await mkdtemp(join(tmpdir(), "sandbar-bench-copy-"));
  try {
    const client = new SandboxClient({ endpoint: t.url, apiKey: t.apiKey });
    const snap = await client.createSnapshot("bench", `${registry.host}/busybox:latest`);
    let n = 0;
    for (const mib of [1, 100, 1024]) {
      const ours: number[] = [];
      const base: number[] = [];
      for (let i = 0; i < runs; i++) {
        const sb = await client.createSandbox({ snapshotId: snap.id, fsCapacityBytes: 4096 * MIB });
        await sb.run(`head -c ${mib * MIB} /dev/urandom > /root/changed.bin`, { timeout: 600 });
        ours.push(await timed(() => client.captureSnapshot(sb.id, `cap-${n++}`, { timeout: 600 })));
        // Baseline: the same bytes copied into a fresh directory on the host, tar to tar.
        await run("sh", ["-c", `head -c ${mib * MIB} /dev/urandom > ${scratch}/src.bin`]);
        base.push(await timed(() => run("sh", ["-c", `tar -C ${scratch} -cf - src.bin | tar -C ${scratch} -xf - --transform s/src/dst/ && sync -f ${scratch}/dst.bin`])));
        await rm(join(scratch, "dst.bin"), { force: true });
        await sb.delete();
      }
      rows.push({ case: `capture of ${mib} MiB changed`, unit: "ms", ours: summarize(ours), baseline: summarize(base), baselineName: "tar copy of the same bytes on the host" });
    }
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
    await rm(scratch, { recursive: true, force: true });
    await t.stop();
    await registry.stop();
  }
  await report(values.out, rows);
}

runMain(main);
