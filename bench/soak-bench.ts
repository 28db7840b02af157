/**
 * Load and soak: `--clients` clients each loop create -> run -> write -> read -> delete for
 * `--minutes`, then `--cycles` plain create/delete cycles (`--cycle-concurrency` at a time).
 * Reports operations, errors (each with its message), server RSS over time, and the host
 * resources of the server (containers, namespaces, veths, mounts, loop devices, sandbox dirs,
 * firewall chains, open file descriptors) before and after. A soak passes with 0 errors, the
 * same host resources at the end as at the start, and a server RSS that does not keep growing.
 *
 *   npx tsx bench/soak-bench.ts [--clients 20] [--minutes 10] [--cycles 1000] [--cycle-concurrency 4]
 *                                [--out bench/results/soak.json]
 *
 * Not part of bench/run-all.sh (it takes ~20 minutes with the defaults).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, readlink, writeFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { hostResources } from "../test/support/host-resources.js";
import { type BenchServer, busyboxBench, Cleanup, cleanUpOnSignals, mapLimit } from "./harness.js";

interface Box {
  id: string;
  dataplane_url: string;
}

interface Resources {
  containers: number;
  netns: number;
  veths: number;
  mounts: number;
  loops: number;
  sandboxDirs: number;
  nftChains: number;
  /** The server's descriptors, less its end of the bench's own kept-alive API connections. */
  serverFds: number;
  /** Connections of API clients (this bench) to the server: kept alive, not the server's to close. */
  apiConnections: number;
  /** The server's descriptors by what they point at ("socket", "anon_inode:[eventpoll]", a path). */
  serverFdKinds: Record<string, number>;
  /** The server's sockets by state and ends (ports of the far end left out). */
  serverSockets: Record<string, number>;
}

async function resources(b: BenchServer): Promise<Resources> {
  const r = await hostResources(b.dataDir);
  let chains = 0;
  try {
    chains = execFileSync("nft", ["list", "table", "inet", "sandbar"], { encoding: "utf8" }).split("\n").filter((l) => /^\s*chain [fip]\d+ /.test(l)).length;
  } catch {
    chains = 0; // no table yet
  }
  const pid = b.server.child.pid ?? 0;
  const fds = await Promise.all(
    (await readdir(`/proc/${pid}/fd`)).map((fd) =>
      readlink(`/proc/${pid}/fd/${fd}`).then(
        (t) => t.replace(/^(socket|pipe):\[\d+\]$/, "$1"),
        () => "gone",
      ),
    ),
  );
  const sockets = execFileSync("ss", ["-Htanpu"], { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => {
      const [proto, state, , , local, peer] = l.trim().split(/\s+/);
      return `${proto} ${state} ${local} ${peer?.replace(/:\d+$/, ":*")}`;
    });
  const apiPort = new URL(b.server.url).port;
  const apiConnections = sockets.filter((x) => x.startsWith("tcp ESTAB ") && x.split(" ")[2]?.endsWith(`:${apiPort}`)).length;
  return {
    serverSockets: Object.fromEntries([...new Set(sockets)].sort().map((k) => [k, sockets.filter((x) => x === k).length])),
    containers: r.containers.length,
    netns: r.netns.length,
    // Host ends of sandbox veths (sbxN), any server's: the bench runs alone.
    veths: execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).split("\n").filter((l) => /^\d+: sbx\d+[@:]/.test(l)).length,
    mounts: r.mounts.length,
    loops: r.loops.length,
    sandboxDirs: r.sandboxDirs.length,
    nftChains: chains,
    serverFds: fds.length - apiConnections,
    apiConnections,
    serverFdKinds: Object.fromEntries(
      [...new Set(fds)].sort().map((k) => [k, fds.filter((f) => f === k).length]),
    ),
  };
}

async function rssMiB(pid: number): Promise<number> {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: "string", default: "20" },
      minutes: { type: "string", default: "10" },
      cycles: { type: "string", default: "1000" },
      "cycle-concurrency": { type: "string", default: "4" },
      out: { type: "string", default: "bench/results/soak.json" },
    },
  });
  const clients = Number(values.clients);
  const durationMs = Number(values.minutes) * 60_000;
  const cycles = Number(values.cycles);
  const cleanup = new Cleanup("soak-bench");
  const detach = cleanUpOnSignals("soak-bench", cleanup);
  try {
    const { bench, snap } = await busyboxBench(cleanup, "soak");
    const { api } = bench;
    const pid = bench.server.child.pid ?? 0;
    // Warm up (first boots fill caches), then take the baseline.
    await api.call("DELETE", `/boxes/${(await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id })).id}`);
    const before = await resources(bench);
    const rss: { atS: number; mib: number }[] = [{ atS: 0, mib: await rssMiB(pid) }];
    const errors: string[] = [];
    const ops = { create: 0, run: 0, write: 0, read: 0, delete: 0 };
    const started = Date.now();
    const sampler = setInterval(() => {
      void rssMiB(pid).then((mib) => rss.push({ atS: Math.round((Date.now() - started) / 1000), mib }));
    }, 10_000);

    // --- phase 1: clients in a loop
    const client = async (c: number): Promise<void> => {
      for (let i = 0; Date.now() - started < durationMs; i++) {
        let box: Box | undefined;
        try {
          box = await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id, name: `soak-${c}-${i}` });
          ops.create++;
          if ((await api.exec(box, `echo client ${c}`)) !== `client ${c}\n`) throw new Error("run: wrong output");
          ops.run++;
          const data = randomBytes(64 * 1024);
          const up = await fetch(`${box.dataplane_url}/upload?path=/root/blob`, { method: "POST", headers: { "x-api-key": bench.apiKey, "content-type": "application/octet-stream" }, body: data });
          if (!up.ok) throw new Error(`write: ${up.status} ${await up.text()}`);
          ops.write++;
          const down = await fetch(`${box.dataplane_url}/download?path=/root/blob`, { headers: { "x-api-key": bench.apiKey } });
          if (!down.ok || !Buffer.from(await down.arrayBuffer()).equals(data)) throw new Error(`read: ${down.status} or different bytes`);
          ops.read++;
        } catch (e) {
          errors.push(`client ${c} iteration ${i}: ${(e as Error).message.slice(0, 300)}`);
        } finally {
          if (box) {
            try {
              await api.call("DELETE", `/boxes/${box.id}`);
              ops.delete++;
            } catch (e) {
              errors.push(`client ${c} delete: ${(e as Error).message.slice(0, 300)}`);
            }
          }
        }
      }
    };
    await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
    clearInterval(sampler);
    const loopSeconds = (Date.now() - started) / 1000;
    const afterLoop = await resources(bench);
    rss.push({ atS: Math.round(loopSeconds), mib: await rssMiB(pid) });

    // --- phase 2: create/delete cycles
    const cycleStart = Date.now();
    const cycleResults = await mapLimit(Array.from({ length: cycles }, (_, i) => i), Number(values["cycle-concurrency"]), async (i) => {
      const box = await api.call<Box>("POST", "/boxes", { snapshot_id: snap.id, name: `cycle-${i}` });
      await api.call("DELETE", `/boxes/${box.id}`);
    });
    const cycleErrors = cycleResults.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason).slice(0, 300));
    const cycleSeconds = (Date.now() - cycleStart) / 1000;
    const afterCycles = await resources(bench);
    const rssEnd = await rssMiB(pid);
    // Kept-alive connections (this bench's HTTP client to the server, the server's to agents)
    // close after a few idle seconds; what is still open after that is a leak.
    await new Promise((r) => setTimeout(r, 8000));
    const settled = await resources(bench);

    const result = {
      clients,
      loopSeconds,
      ops,
      errors,
      rssMiB: rss,
      cycles: { count: cycles, seconds: cycleSeconds, errors: cycleErrors },
      rssAfterCyclesMiB: rssEnd,
      resources: { before, afterLoop, afterCycles, settled },
      leaked: Object.fromEntries(Object.entries(settled).filter(([k, v]) => typeof v === "number" && k !== "apiConnections" && v !== before[k as keyof Resources])),
    };
    await mkdir(dirname(values.out), { recursive: true });
    await writeFile(values.out, `${JSON.stringify(result, null, 2)}\n`);
    console.log(JSON.stringify({ ...result, rssMiB: `${rss[0]?.mib.toFixed(0)} -> ${rss.at(-1)?.mib.toFixed(0)} (${rss.length} samples)` }, null, 2));
  } finally {
    detach();
    await cleanup.run();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
