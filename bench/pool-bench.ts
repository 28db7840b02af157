/**
 * Warm-pool figures: create -> ready when `POST /boxes` claims a sandbox a warm pool booted
 * ahead, against raw `runsc run --detach` of the same bundle and against a cold create of the
 * same snapshot and settings, all measured in one run.
 *
 *   npx tsx bench/pool-bench.ts [--size 4] [--claims 20] [--colds 10] [--out bench/results/pool.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed); busybox snapshot.
 * - from the pool: `POST /pools {snapshot_id, size}` (server-default vcpus, memory, disk), wait
 *   until `GET /pools/{id}` shows `ready == size`; then, `claims` times: `POST /boxes
 *   {snapshot_id, wait_for_ready}` with the same (default) settings, timed from the client until
 *   the answer, which must carry `sandbar-pool: claimed` (a `miss` is counted and left out of
 *   the figure); the bench waits until the pool is full again (untimed: no refill boot runs
 *   during the next claim; the time from the answer until then, the refill's boot, goes to the
 *   JSON's details) and deletes the claimed sandbox.
 * - cold: the pool deleted (drained), then `colds` creates of the same kind one after another
 *   (each deleted after), as bench/core-bench.ts measures them.
 * - raw: `runsc run --detach` of a sandbox's own bundle in a netns of its own
 *   (bench/raw-runsc.ts), `colds` times.
 * A server without pools (POST /pools answers 404) skips the bench with a note: it writes the
 * JSON with no rows and `details.skipped`.
 */
import { parseArgs } from "node:util";
import { busyboxBench, Cleanup, cleanUpOnSignals, rawCall } from "./harness.js";
import { RawRunsc } from "./raw-runsc.js";
import { fmt, report, runMain, summarize, type Row } from "./stats.js";

interface Pool {
  id: string;
  size: number;
  ready: number;
  booting?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: "string", default: "4" },
      claims: { type: "string", default: "20" },
      colds: { type: "string", default: "10" },
      out: { type: "string", default: "bench/results/pool.json" },
    },
  });
  const size = Number(values.size);
  const claims = Number(values.claims);
  const colds = Number(values.colds);
  if (![size, claims, colds].every((n) => Number.isInteger(n) && n >= 1)) throw new Error("--size, --claims and --colds take positive integers");
  const cleanup = new Cleanup("pool-bench");
  const detach = cleanUpOnSignals("pool-bench", cleanup);
  const rows: Row[] = [];
  let details: Record<string, unknown> = {};
  try {
    const { bench, snap } = await busyboxBench(cleanup);
    const { api, dataDir } = bench;
    const call = (method: string, path: string, body?: unknown): ReturnType<typeof rawCall> => rawCall(bench.server.url, bench.apiKey, method, path, body);

    const made = await call("POST", "/pools", { snapshot_id: snap.id, size });
    if (made.status === 404) {
      const note = `the server has no warm pools (POST /pools answered 404 ${made.text.slice(0, 200)}): pool bench skipped`;
      console.log(`[pool-bench] ${note}`);
      details = { skipped: note };
    } else {
      if (made.status !== 201) throw new Error(`POST /pools: ${made.status} ${made.text.slice(0, 1000)}`);
      const pool = made.json as Pool;
      let dropped = false;
      const dropPool = cleanup.add(`pool ${pool.id}`, async () => {
        if (dropped || !bench.alive()) return;
        const r = await call("DELETE", `/pools/${pool.id}`);
        if (r.status !== 204 && r.status !== 404) throw new Error(`DELETE /pools/${pool.id}: ${r.status} ${r.text.slice(0, 500)}`);
        dropped = true;
      });
      /** Polls every 20 ms until the pool holds `size` ready sandboxes; ms waited. */
      const waitFull = async (timeoutMs = 120_000): Promise<number> => {
        const t0 = performance.now();
        for (;;) {
          const r = await call("GET", `/pools/${pool.id}`);
          if (r.status !== 200) throw new Error(`GET /pools/${pool.id}: ${r.status} ${r.text.slice(0, 500)}`);
          const p = r.json as Pool;
          if (p.ready >= size) return performance.now() - t0;
          if (performance.now() - t0 > timeoutMs) throw new Error(`pool ${pool.id} not full within ${timeoutMs / 1000} s: ${r.text.slice(0, 500)}`);
          await sleep(20);
        }
      };
      const fill = await waitFull();
      const fromPool: number[] = [];
      const refill: number[] = [];
      const misses: string[] = [];
      for (let i = 0; i < claims; i++) {
        const t0 = performance.now();
        const r = await call("POST", "/boxes", { snapshot_id: snap.id, wait_for_ready: true });
        const ms = performance.now() - t0;
        if (r.status !== 201 && r.status !== 200) throw new Error(`POST /boxes (claim ${i}): ${r.status} ${r.text.slice(0, 1000)}`);
        const tag = r.headers.get("sandbar-pool");
        if (tag === "claimed") fromPool.push(ms);
        else misses.push(`claim ${i}: sandbar-pool ${tag ?? "(no header)"}, ${fmt(ms)} ms`);
        refill.push(await waitFull());
        await api.call("DELETE", `/boxes/${(r.json as { id: string }).id}`);
      }
      await dropPool();
      // The drain may finish after the 204: let it, so its deletes do not overlap the cold creates.
      for (let i = 0; i < 600 && (await call("GET", `/pools/${pool.id}`)).status !== 404; i++) await sleep(50);

      const cold: number[] = [];
      const coldTags: string[] = [];
      for (let i = 0; i < colds; i++) {
        const t0 = performance.now();
        const r = await call("POST", "/boxes", { snapshot_id: snap.id, wait_for_ready: true });
        const ms = performance.now() - t0;
        if (r.status !== 201) throw new Error(`POST /boxes (cold ${i}): ${r.status} ${r.text.slice(0, 1000)}`);
        coldTags.push(r.headers.get("sandbar-pool") ?? "(none)");
        cold.push(ms);
        await api.call("DELETE", `/boxes/${(r.json as { id: string }).id}`);
      }
      if (coldTags.includes("claimed")) throw new Error("a create after the pool's delete still claimed a pooled sandbox");

      const probe = await api.call<{ id: string }>("POST", "/boxes", { snapshot_id: snap.id });
      const raw = await RawRunsc.fromSandbox(cleanup, dataDir, probe.id);
      const rawMs: number[] = [];
      for (let i = 0; i < colds; i++) {
        const r = await raw.timedRun();
        rawMs.push(r.ms);
        await r.container.remove();
      }
      await api.call("DELETE", `/boxes/${probe.id}`);

      if (fromPool.length === 0) throw new Error(`no create claimed a pooled sandbox: ${misses.join("; ")}`);
      const note = misses.length ? `${fromPool.length} of ${claims} claimed, ${misses.length} missed` : `${claims} of ${claims} claimed, pool of ${size}`;
      rows.push({
        case: "create -> ready from a warm pool (busybox)",
        unit: "ms",
        ours: summarize(fromPool),
        baseline: summarize(rawMs),
        baselineName: "raw `runsc run --detach` of the same bundle",
        note,
      });
      rows.push({
        case: "create -> ready, cold (busybox, pool bench)",
        unit: "ms",
        ours: summarize(cold),
        baseline: summarize(rawMs),
        baselineName: "raw `runsc run --detach` of the same bundle",
      });
      details = { poolSize: size, initialFillMs: fill, refillMs: summarize(refill), misses, coldPoolHeaders: coldTags };
      console.error(
        `[pool-bench] initial fill of ${size}: ${fmt(fill)} ms; full again after a claim: median ${fmt(summarize(refill).median)} ms; misses: ${misses.length}`,
      );
    }
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows, details);
}

runMain(main);
