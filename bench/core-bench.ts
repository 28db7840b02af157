/**
 * Core figures: create->ready against raw `runsc run` of the same kind of bundle, and the
 * `echo hi` round trip through the server against raw `runsc exec`, measured in one run.
 *
 *   npx tsx bench/core-bench.ts [--creates 20] [--execs 200] [--out bench/results/core.json]
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, rm, writeFile, mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import { testImage } from "../test/support/images.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { startTestServer } from "../test/support/sandbar-server.js";
import { report, runMain, summarize, timed, type Row } from "./stats.js";

const run = promisify(execFile);

/** Run a command whose children outlive it (runsc --detach): wait for exit, not for stdio to close. */
function runDetached(argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: "ignore", detached: true });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(" ")} exited ${code}`))));
  });
}


async function main(): Promise<void> {
  const { values } = parseArgs({ options: { creates: { type: "string", default: "20" }, execs: { type: "string", default: "200" }, out: { type: "string", default: "bench/results/core.json" } } });
  const creates = Number(values.creates);
  const execs = Number(values.execs);
  const registry = await startRegistry();
  const img = await testImage("busybox");
  await pushImage(img.layoutDir, img.tag, registry.host, "busybox:latest");
  const t = await startTestServer();
  const rows: Row[] = [];
  try {
    const snap = (await (await t.call("POST", "/snapshots", { name: "bench", docker_image: `${registry.host}/busybox:latest` })).json()) as { id: string };

    // --- create -> ready, ours
    const ours: number[] = [];
    for (let i = 0; i < creates; i++) {
      let id = "";
      ours.push(
        await timed(async () => {
          const r = await t.call("POST", "/boxes", { snapshot_id: snap.id });
          id = ((await r.json()) as { id: string }).id;
        }),
      );
      await t.call("DELETE", `/boxes/${id}`);
    }

    // --- create -> ready, raw runsc run of a sandbox's own bundle (same rootfs, netns, agent as init)
    const probe = (await (await t.call("POST", "/boxes", { snapshot_id: snap.id })).json()) as { id: string; dataplane_url: string };
    const bundle = join(t.dataDir, "sandboxes", probe.id, "bundle");
    const raw: number[] = [];
    const rawRoot = await mkdtemp(join(tmpdir(), "sandbar-bench-runsc-"));
    const spec = JSON.parse((await import("node:fs")).readFileSync(join(bundle, "config.json"), "utf8")) as { linux: { namespaces: { type: string; path?: string }[]; cgroupsPath?: string } };
    const rawBundle = join(rawRoot, "bundle");
    await mkdir(rawBundle, { recursive: true });
    for (let i = 0; i < creates; i++) {
      const ns = `sandbar-bench-${i}`;
      await run("ip", ["netns", "add", ns]);
      spec.linux.namespaces = spec.linux.namespaces.map((n) => (n.type === "network" ? { type: "network", path: `/run/netns/${ns}` } : n));
      spec.linux.cgroupsPath = `/sandbar-bench/${i}`;
      await writeFile(join(rawBundle, "config.json"), JSON.stringify(spec));
      const id = `sandbar-bench-raw-${process.pid}-${i}`;
      raw.push(
        await timed(() =>
          runDetached(["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none /proc/sys/net && exec "$@"', "sh", "runsc", "--root", rawRoot, "--platform=ptrace", "--overlay2=none", "run", "--detach", "--bundle", rawBundle, id]),
        ),
      );
      await run("runsc", ["--root", rawRoot, "delete", "--force", id]).catch(() => undefined);
      await run("ip", ["netns", "del", ns]).catch(() => undefined);
    }
    await rm(rawRoot, { recursive: true, force: true });
    rows.push({ case: "create -> ready (busybox)", unit: "ms", ours: summarize(ours), baseline: summarize(raw), baselineName: "raw `runsc run --detach` of the same bundle" });

    // --- echo hi round trip, ours (HTTP execute, keep-alive) vs raw runsc exec
    const execOurs: number[] = [];
    for (let i = 0; i < execs; i++) {
      execOurs.push(
        await timed(async () => {
          const r = await fetch(`${probe.dataplane_url}/execute`, { method: "POST", headers: { "x-api-key": t.apiKey, "content-type": "application/json" }, body: JSON.stringify({ command: "echo hi" }) });
          const j = (await r.json()) as { stdout: string };
          if (j.stdout !== "hi\n") throw new Error(`bad output ${JSON.stringify(j)}`);
        }),
      );
    }
    const cid = `sandbar-${(await import("node:crypto")).createHash("sha256").update(t.dataDir).digest("hex").slice(0, 8)}-${probe.id}`;
    const execRaw: number[] = [];
    for (let i = 0; i < Math.min(execs, 100); i++) {
      execRaw.push(await timed(() => run("runsc", ["exec", cid, "echo", "hi"])));
    }
    rows.push({ case: "`echo hi` round trip (HTTP execute)", unit: "ms", ours: summarize(execOurs), baseline: summarize(execRaw), baselineName: "raw `runsc exec ID echo hi`" });
  } finally {
    await t.stop();
    await registry.stop();
  }

  await report(values.out, rows);
}

runMain(main);
