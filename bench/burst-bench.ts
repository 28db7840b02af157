/**
 * Burst figures: N (default 50) creates sent at once, against N raw `runsc run --detach` started
 * at once, measured in one run.
 *
 *   npx tsx bench/burst-bench.ts [--burst 50] [--sequential 5] [--out bench/results/burst.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed); busybox snapshot.
 * - ours: N `POST /boxes {snapshot_id, wait_for_ready: true, timeout: 300}` (server-default
 *   vcpus, memory, disk) sent together from one client (undici opens a connection per request);
 *   each latency is its own request's send -> answer. A success is a 201 whose sandbox is
 *   `ready`; every other answer is a failure, kept with its status and message in the JSON's
 *   details. Then every sandbox is deleted, 8 at a time (failed rows too).
 * - raw: N `runsc run --detach` of a sandbox's own bundle (bench/raw-runsc.ts), each in a netns
 *   and cgroup of its own made beforehand (untimed), started together; each latency is its own
 *   command's start -> exit. Removed 8 at a time after.
 * - reference: `--sequential` creates one after another before the burst (each deleted after):
 *   the latency of a create on an otherwise idle server, in the JSON's details and the note.
 * Rows: latency of the successful creates (min/median/p95 over the N), and the success rate.
 */
import { parseArgs } from "node:util";
import { busyboxBench, Cleanup, cleanUpOnSignals, mapLimit, rawCall } from "./harness.js";
import { RawRunsc, type RawContainer } from "./raw-runsc.js";
import { fmt, report, runMain, summarize, timed, type Row } from "./stats.js";

interface Outcome {
  ms: number;
  ok: boolean;
  error?: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      burst: { type: "string", default: "50" },
      sequential: { type: "string", default: "5" },
      out: { type: "string", default: "bench/results/burst.json" },
    },
  });
  const burst = Number(values.burst);
  const sequential = Number(values.sequential);
  if (!Number.isInteger(burst) || burst < 1 || !Number.isInteger(sequential) || sequential < 0)
    throw new Error("--burst takes a positive integer, --sequential a count");
  const cleanup = new Cleanup("burst-bench");
  const detach = cleanUpOnSignals("burst-bench", cleanup);
  const rows: Row[] = [];
  let details: Record<string, unknown> = {};
  try {
    const { bench, snap } = await busyboxBench(cleanup);
    const { api, dataDir } = bench;

    const seq: number[] = [];
    for (let i = 0; i < sequential; i++) {
      let id = "";
      seq.push(await timed(async () => (id = (await api.call<{ id: string }>("POST", "/boxes", { snapshot_id: snap.id })).id)));
      await api.call("DELETE", `/boxes/${id}`);
    }

    // --- ours: N creates at once
    const t0 = performance.now();
    const ours: Outcome[] = await Promise.all(
      Array.from({ length: burst }, async (): Promise<Outcome> => {
        const s = performance.now();
        try {
          const r = await rawCall(bench.server.url, bench.apiKey, "POST", "/boxes", { snapshot_id: snap.id, wait_for_ready: true, timeout: 300 });
          const ms = performance.now() - s;
          const status = (r.json as { status?: string } | undefined)?.status;
          if (r.status === 201 && status === "ready") return { ms, ok: true };
          return { ms, ok: false, error: `${r.status} ${status ?? ""} ${r.text.slice(0, 500)}` };
        } catch (e) {
          return { ms: performance.now() - s, ok: false, error: (e as Error).message };
        }
      }),
    );
    const oursWall = performance.now() - t0;
    const left = await api.call<{ sandboxes: { id: string; status: string }[] }>("GET", "/boxes?limit=500");
    const delT0 = performance.now();
    const deletes = await mapLimit(left.sandboxes, 8, (b) => api.call("DELETE", `/boxes/${b.id}`));
    const deleteMs = performance.now() - delT0;
    const deleteFailures = deletes.flatMap((d) => (d.status === "rejected" ? [(d.reason as Error).message] : []));

    // --- raw: N runsc run --detach at once, from a probe sandbox's bundle
    const probe = await api.call<{ id: string }>("POST", "/boxes", { snapshot_id: snap.id });
    const raw = await RawRunsc.fromSandbox(cleanup, dataDir, probe.id);
    const prepared = [];
    for (let i = 0; i < burst; i++) prepared.push(await raw.prepare());
    const r0 = performance.now();
    const rawOut: Outcome[] = await Promise.all(
      prepared.map(async (c): Promise<Outcome> => {
        const s = performance.now();
        try {
          await c.start();
          return { ms: performance.now() - s, ok: true };
        } catch (e) {
          return { ms: performance.now() - s, ok: false, error: (e as Error).message };
        }
      }),
    );
    const rawWall = performance.now() - r0;
    await mapLimit(prepared, 8, (c: RawContainer) => c.remove());
    await api.call("DELETE", `/boxes/${probe.id}`);

    const okMs = (o: Outcome[]): number[] => o.filter((x) => x.ok).map((x) => x.ms);
    const rate = (o: Outcome[]): number => (100 * o.filter((x) => x.ok).length) / o.length;
    const failures = (o: Outcome[]): { ms: number; error: string }[] => o.flatMap((x) => (x.ok ? [] : [{ ms: x.ms, error: x.error ?? "" }]));
    const seqMedian = summarize(seq).median;
    rows.push({
      case: `burst of ${burst} concurrent creates: create -> ready (busybox)`,
      unit: "ms",
      ours: summarize(okMs(ours)),
      baseline: summarize(okMs(rawOut)),
      baselineName: `${burst} raw \`runsc run --detach\` of the same bundle started at once`,
      note: `all ready after ${fmt(oursWall / 1000, 2)} s (raw ${fmt(rawWall / 1000, 2)} s); one create alone: median ${fmt(seqMedian)} ms`,
    });
    rows.push({
      case: `burst of ${burst} concurrent creates: success rate`,
      unit: "%",
      ours: summarize([rate(ours)]),
      baseline: summarize([rate(rawOut)]),
      baselineName: `${burst} raw \`runsc run --detach\` started at once`,
      note: `${ours.filter((x) => x.ok).length}/${burst} ready`,
    });
    details = {
      burst,
      oursWallMs: oursWall,
      rawWallMs: rawWall,
      sequentialMs: summarize(seq),
      oursFailures: failures(ours),
      rawFailures: failures(rawOut),
      deleteAllMs: deleteMs,
      deleteFailures,
    };
    console.error(
      `[burst-bench] ours ${ours.filter((x) => x.ok).length}/${burst} ready in ${fmt(oursWall)} ms, raw ${rawOut.filter((x) => x.ok).length}/${burst} in ${fmt(rawWall)} ms; deleting ${left.sandboxes.length} took ${fmt(deleteMs)} ms`,
    );
    for (const f of failures(ours)) console.error(`[burst-bench] failed create after ${fmt(f.ms)} ms: ${f.error}`);
    if (deleteFailures.length) throw new Error(`deletes failed: ${deleteFailures.join("; ")}`);
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows, details);
}

runMain(main);
