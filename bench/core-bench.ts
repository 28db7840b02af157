/**
 * Core figures: create->ready against raw `runsc run` of the same kind of bundle, and the
 * `echo hi` round trip through the server against raw `runsc exec`, measured in one run.
 *
 *   npx tsx bench/core-bench.ts [--creates 20] [--execs 200] [--out bench/results/core.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed) on a fresh data dir;
 * busybox snapshot from a throwaway registry; sandboxes created one after another.
 * - create -> ready: the whole `POST /boxes` (wait_for_ready) from the client; the baseline is
 *   `runsc run --detach` of a sandbox's own bundle in a netns of its own (bench/raw-runsc.ts).
 * - `echo hi`: `POST {dataplane}/execute` from a keep-alive client; the baseline is
 *   `runsc exec CID echo hi` into the same sandbox (at most 100 of them).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { parseArgs, promisify } from "node:util";
import { busyboxBench, Cleanup, cleanUpOnSignals } from "./harness.js";
import { RawRunsc } from "./raw-runsc.js";
import { report, runMain, summarize, timed, type Row } from "./stats.js";

const run = promisify(execFile);

interface Box {
  id: string;
  dataplane_url: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { creates: { type: "string", default: "20" }, execs: { type: "string", default: "200" }, out: { type: "string", default: "bench/results/core.json" } } });
  const creates = Number(values.creates);
  const execs = Number(values.execs);
  const cleanup = new Cleanup("core-bench");
  const detach = cleanUpOnSignals("core-bench", cleanup);
  const rows: Row[] = [];
  try {
    const { bench, snap } = await busyboxBench(cleanup);
    const { api, dataDir, apiKey } = bench;

    // --- create -> ready, ours
    const ours: number[] = [];
    for (let i = 0; i < creates; i++) {
      let id = "";
      ours.push(await timed(async () => (id = (await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id })).id)));
      await api.call("DELETE", `/boxes/${id}`);
    }

    // --- create -> ready, raw runsc run of a sandbox's own bundle (same rootfs, agent as init)
    const probe = await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id });
    const raw = await RawRunsc.fromSandbox(cleanup, dataDir, probe.id);
    const rawMs: number[] = [];
    for (let i = 0; i < creates; i++) {
      const r = await raw.timedRun();
      rawMs.push(r.ms);
      await r.container.remove();
    }
    rows.push({ case: "create -> ready (busybox)", unit: "ms", ours: summarize(ours), baseline: summarize(rawMs), baselineName: "raw `runsc run --detach` of the same bundle" });

    // --- echo hi round trip, ours (HTTP execute, keep-alive) vs raw runsc exec
    const execOurs: number[] = [];
    for (let i = 0; i < execs; i++) {
      execOurs.push(
        await timed(async () => {
          const r = await fetch(`${probe.dataplane_url}/execute`, { method: "POST", headers: { "x-api-key": apiKey, "content-type": "application/json" }, body: JSON.stringify({ command: "echo hi" }) });
          const j = (await r.json()) as { stdout: string };
          if (j.stdout !== "hi\n") throw new Error(`bad output ${JSON.stringify(j)}`);
        }),
      );
    }
    const cid = `sandbar-${createHash("sha256").update(dataDir).digest("hex").slice(0, 8)}-${probe.id}`;
    const execRaw: number[] = [];
    for (let i = 0; i < Math.min(execs, 100); i++) {
      execRaw.push(await timed(() => run("runsc", ["exec", cid, "echo", "hi"])));
    }
    rows.push({ case: "`echo hi` round trip (HTTP execute)", unit: "ms", ours: summarize(execOurs), baseline: summarize(execRaw), baselineName: "raw `runsc exec ID echo hi`" });
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows);
}

runMain(main);
