/**
 * Build figures: a Dockerfile build, cold against a fully cached rebuild of the same Dockerfile
 * and context, and an image pull into a ready snapshot against raw `skopeo copy` + `umoci
 * unpack` of the same image; each pair measured in the same run.
 *
 *   npx tsx bench/build-bench.ts [--reps 3] [--out bench/results/build.json]
 *
 * The server runs as its own process (`sandbar serve`, as deployed) on a fresh data dir, with a
 * throwaway registry on 127.0.0.1 holding the test images.
 *
 * Image pull (measured first, while the server holds no other snapshot): a five-layer image made
 * for this run from the test image "python-extra" (python's Debian layer and a small one) plus
 * three layers appended with test/support's appendLayerFromDir (~400 small .py files, 16 MiB of
 * random bytes, a few config files). Each rep, in alternating order:
 *   - ours: POST /snapshots {docker_image} until GET /snapshots/{id} says ready (the server
 *     runs skopeo inspect + skopeo copy to an OCI layout, then gunzips, hashes and untars each
 *     layer into its layer store). The layer store dedupes layers by diff_id across snapshots,
 *     so every rep checks before the pull that none of the image's diff_ids is in
 *     DATA/layers/ and that all are there after it; then deletes the snapshot, which collects
 *     the layers nothing references any more, and checks they are gone. No other snapshot
 *     exists during this phase, so nothing keeps them: each pull is cold.
 *   - raw: `skopeo copy docker://HOST/multi:latest oci:DIR:latest` + `umoci unpack --image
 *     DIR:latest BUNDLE` into fresh directories (removed untimed afterwards).
 * Both read the registry's blobs from a warm page cache (they were just pushed).
 *
 * Dockerfile build: the test image "python" pushed to the registry and built into a snapshot
 * named "python" (as test/support/fixture.ts startWorld does), so `FROM python` resolves to it.
 * The Dockerfile has ARG, ENV, WORKDIR, three COPYs of a small context, three RUN steps (a venv
 * with `python3 -m venv`, compiled sources and 4 MiB of generated files, a system user and
 * chown) and USER/CMD. Each rep builds it with a new NONCE build arg (`ARG NONCE` right after
 * FROM; the ARG's value is part of every later step's cache key, and the first RUN writes it
 * into the image), which makes every step miss the build cache: the cold build. Then the same
 * Dockerfile, context and NONCE again under another snapshot name: the fully cached rebuild
 * (the bench checks that the cold log has no "Using cache" and the rebuild has one per step).
 * Both go through @sandbar/sdk's createSnapshotFromDockerfile (tar of the context directory,
 * multipart POST /snapshots/build, follow of the build log, GET of the ready snapshot), timed
 * around the call. The cached rebuild necessarily follows its cold build. After the first rep
 * a sandbox from the rebuilt snapshot runs the app as its USER, to show the build is whole.
 * Per-rep details (server-side build time, RUN step times) go to stderr.
 *
 * Everything the run makes (server, data dir, registry, scratch dirs) is removed at the end,
 * also after a failure or Ctrl-C.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { SandboxClient } from "@sandbar/sdk";
import { testImage } from "../test/support/images.js";
import { appendLayerFromDir } from "../test/support/oci-build.js";
import { blobPath, readManifest } from "../test/support/oci-layout.js";
import { pushImage, startRegistry } from "../test/support/registry.js";
import { Cleanup, cleanUpOnSignals, startBenchServer, type ApiClient, type SnapshotJson } from "./harness.js";
import { fmt, report, runMain, summarize, type Row } from "./stats.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;
const TAG = "latest";

const DOCKERFILE = `FROM python
ARG NONCE
ENV APP_HOME=/app \\
    PYTHONUNBUFFERED=1 \\
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
COPY src/ ./src/
COPY config/settings.json /etc/app/settings.json
RUN echo "build $NONCE" > /etc/app/build-id && python3 -m venv --without-pip /opt/venv && /opt/venv/bin/python -c "import sys; print(sys.prefix)"
RUN python3 -m compileall -q /app/src && mkdir -p /app/data && python3 -c "import os; [open('/app/data/blob%d.bin' % i, 'wb').write(os.urandom(256 * 1024)) for i in range(16)]"
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin app && chown -R app:app /app
USER app
CMD ["python", "/app/src/main.py"]
`;
/** Steps after FROM, each of which a fully cached rebuild must take from the cache. */
const CACHED_STEPS = DOCKERFILE.split("\n").filter((l) => /^[A-Z]+ /.test(l) && !l.startsWith("FROM ")).length;

const CONTEXT: Record<string, string> = {
  "requirements.txt": "# no third-party packages: the build runs without a network\n",
  "src/main.py": `import json, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from util import greet
with open("/etc/app/settings.json") as f:
    settings = json.load(f)
print(greet(settings["name"]), sys.prefix, os.getuid())
`,
  "src/util.py": "def greet(name):\n    return 'hello from ' + name\n",
  "config/settings.json": JSON.stringify({ name: "build-bench", workers: 2 }) + "\n",
  ".dockerignore": "*.pyc\n",
};

/**
 * Undo steps, run last-in first-out at the end (or at Ctrl-C). A step that fails is reported
 * and the rest still run.
 */

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Let writeback of earlier steps finish outside the timed parts. */
async function settle(): Promise<void> {
  await run("sync");
  await sleep(300);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function dirBytes(dir: string): Promise<number> {
  const { stdout } = await run("du", ["-sb", "--apparent-size", dir]);
  return Number(stdout.split(/\s/)[0]);
}

/** The uncompressed layer digests (config rootfs.diff_ids) of a tagged image in a layout. */
async function diffIds(layoutDir: string, tag: string): Promise<string[]> {
  const m = await readManifest(layoutDir, tag);
  const config = JSON.parse(await readFile(blobPath(layoutDir, m.configDigest), "utf8")) as { rootfs?: { diff_ids?: string[] } };
  const ids = config.rootfs?.diff_ids ?? [];
  if (ids.length !== m.layerDigests.length) throw new Error(`${layoutDir}: ${m.layerDigests.length} layers but ${ids.length} diff_ids`);
  return ids;
}

/** Writes `files` (relative path -> content) under `root`, modes 0644/0755 whatever the umask. */
async function writeTree(root: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(root, rel);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
    await chmod(path, 0o644);
  }
  await run("chmod", ["-R", "u=rwX,go=rX", "--", root]);
}

/**
 * python-extra (two layers) plus three: ~400 small source files, 16 MiB of random bytes (as
 * compiled assets are: gzip cannot shrink them), and a few config files. Returns the layout.
 */
async function buildMultiLayerImage(scratch: string): Promise<string> {
  const base = await testImage("python-extra");
  const layout = join(scratch, "multi-layout");
  await run("cp", ["-a", "--", base.layoutDir, layout]);
  const line = (i: number, j: number): string => `def f_${i}_${j}(x):\n    """Helper ${j} of module ${i}."""\n    return x * ${j} + ${i}\n\n`;
  const deps: Record<string, string> = {};
  for (let i = 0; i < 400; i++) deps[`opt/venv/lib/python3.11/site-packages/pkg${i % 20}/mod${i}.py`] = Array.from({ length: 40 }, (_, j) => line(i, j)).join("");
  const assets: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) assets[`srv/assets/bundle${i}.bin`] = randomBytes(4 * MIB);
  const app: Record<string, string> = {
    "etc/app/settings.json": JSON.stringify({ name: "multi", workers: 4 }) + "\n",
    "etc/app/logging.ini": "[loggers]\nkeys=root\n",
    "srv/app/main.py": "print('hello from multi')\n",
  };
  for (const [name, files] of [["deps", deps], ["assets", assets], ["app", app]] as const) {
    const dir = join(scratch, `layer-${name}`);
    await writeTree(dir, files);
    await appendLayerFromDir(layout, TAG, dir, `build-bench: ${name}`);
    await rm(dir, { recursive: true, force: true });
  }
  return layout;
}

interface PullResult {
  ours: number[];
  raw: number[];
}

async function measurePull(api: ApiClient, dataDir: string, scratch: string, registryHost: string, layout: string, reps: number): Promise<PullResult> {
  const ids = await diffIds(layout, TAG);
  const image = `${registryHost}/multi:${TAG}`;
  const inStore = async (): Promise<number> => {
    let n = 0;
    for (const d of ids) if (await exists(join(dataDir, "layers", `${d.slice("sha256:".length)}.json`))) n++;
    return n;
  };
  const res: PullResult = { ours: [], raw: [] };
  const ours = async (rep: number): Promise<string> => {
    const left = await inStore();
    if (left !== 0) throw new Error(`${left} of the image's layers are still in the layer store: the pull would not be cold`);
    await settle();
    const t0 = performance.now();
    const created = await api.call<SnapshotJson>("POST", "/snapshots", { name: `pull-${rep}`, docker_image: image });
    const snap = created.status === "ready" ? created : await api.waitSnapshot(created.id);
    const ms = performance.now() - t0;
    const got = await inStore();
    await api.call("DELETE", `/snapshots/${snap.id}`);
    if (got !== ids.length) throw new Error(`after the pull ${got} of ${ids.length} layers are in the layer store`);
    // DELETE collects unreferenced layers before it answers; give a lagging collection a moment.
    for (let i = 0; i < 100 && (await inStore()) > 0; i++) await sleep(100);
    if ((await inStore()) > 0) throw new Error("the snapshot's layers were not collected after its delete");
    res.ours.push(ms);
    return `ours ${fmt(ms)} ms (fs_used ${fmt((snap.fs_used_bytes ?? NaN) / MIB)} MiB, layers collected after delete)`;
  };
  const raw = async (rep: number): Promise<string> => {
    const dir = join(scratch, `raw-oci-${rep}`);
    const bundle = join(scratch, `raw-bundle-${rep}`);
    try {
      await settle();
      const t0 = performance.now();
      await run("skopeo", ["--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds", `docker://${image}`, `oci:${dir}:${TAG}`], { maxBuffer: 16 * MIB });
      const t1 = performance.now();
      await run("umoci", ["unpack", "--image", `${dir}:${TAG}`, bundle], { maxBuffer: 16 * MIB });
      const ms = performance.now() - t0;
      res.raw.push(ms);
      return `raw ${fmt(ms)} ms (skopeo copy ${fmt(t1 - t0)} ms, umoci unpack ${fmt(ms - (t1 - t0))} ms, rootfs ${fmt((await dirBytes(join(bundle, "rootfs"))) / MIB)} MiB)`;
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(bundle, { recursive: true, force: true });
    }
  };
  for (let rep = 0; rep < reps; rep++) {
    const detail: string[] = [];
    for (const step of rep % 2 === 0 ? [ours, raw] : [raw, ours]) detail.push(await step(rep));
    console.error(`[build-bench] pull rep ${rep + 1}/${reps}: ${detail.join("; ")}`);
  }
  return res;
}

interface BuildRun {
  ms: number;
  snapshotId: string;
  lines: { at: number; line: string }[];
}

async function measureBuild(sdk: SandboxClient, api: ApiClient, scratch: string, reps: number): Promise<{ cold: number[]; cached: number[] }> {
  const context = join(scratch, "context");
  await writeTree(context, CONTEXT);
  const build = async (name: string, nonce: string): Promise<BuildRun> => {
    const lines: BuildRun["lines"] = [];
    await settle();
    const t0 = performance.now();
    const snap = await sdk.createSnapshotFromDockerfile(name, DOCKERFILE, {
      context,
      buildArgs: { NONCE: nonce },
      onBuildLog: (line) => lines.push({ at: performance.now(), line }),
      timeout: 1800,
    });
    return { ms: performance.now() - t0, snapshotId: snap.id, lines };
  };
  const hits = (b: BuildRun): number => b.lines.filter((l) => l.line.includes("---> Using cache")).length;
  const serverSeconds = (b: BuildRun): string => /Successfully built snapshot .* in ([\d.]+)s/.exec(b.lines.map((l) => l.line).join("\n"))?.[1] ?? "?";
  /** Seconds of each RUN step, from its "Step" line to the next one (or the last line). */
  const runSteps = (b: BuildRun): string[] => {
    const steps = b.lines.map((l, i) => ({ ...l, i })).filter((l) => /^Step \d+\/\d+ : /.test(l.line));
    return steps.flatMap((s, k) => {
      if (!/^Step \d+\/\d+ : RUN /.test(s.line)) return [];
      const end = steps[k + 1]?.at ?? b.lines[b.lines.length - 1]?.at ?? s.at;
      return [fmt((end - s.at) / 1000, 2)];
    });
  };
  const cold: number[] = [];
  const cached: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    const nonce = `${Date.now()}-${rep}-${randomBytes(4).toString("hex")}`;
    const c = await build(`build-cold-${rep}`, nonce);
    if (hits(c) !== 0) throw new Error(`the cold build took ${hits(c)} step(s) from the cache`);
    const w = await build(`build-cached-${rep}`, nonce);
    if (hits(w) !== CACHED_STEPS) throw new Error(`the rebuild took ${hits(w)} of ${CACHED_STEPS} steps from the cache:\n${w.lines.map((l) => l.line).join("\n")}`);
    cold.push(c.ms);
    cached.push(w.ms);
    let check = "";
    if (rep === 0) {
      // The rebuilt snapshot is a whole image: the app runs as the Dockerfile's USER.
      const sb = await sdk.createSandbox({ snapshotId: w.snapshotId });
      try {
        const r = await sb.run("id -un; python /app/src/main.py; cat /etc/app/build-id; ls /app/data | wc -l");
        const out = r.stdout.trim().split("\n");
        if (r.exit_code !== 0 || out[0] !== "app" || !out[1]?.startsWith("hello from build-bench /opt/venv") || out[2] !== `build ${nonce}` || out[3] !== "16") {
          throw new Error(`the rebuilt image does not run as built: exit ${r.exit_code} ${r.stdout}${r.stderr}`);
        }
        check = `; sandbox from the rebuild: ${out.slice(0, 2).join(" | ")}`;
      } finally {
        await sb.delete();
      }
    }
    for (const id of [c.snapshotId, w.snapshotId]) await api.call("DELETE", `/snapshots/${id}`);
    console.error(
      `[build-bench] build rep ${rep + 1}/${reps}: cold ${fmt(c.ms)} ms (server ${serverSeconds(c)} s, RUN steps ${runSteps(c).join(" / ")} s); cached ${fmt(w.ms)} ms (server ${serverSeconds(w)} s, ${hits(w)}/${CACHED_STEPS} steps from the cache)${check}`,
    );
  }
  return { cold, cached };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: "string", default: "3" }, out: { type: "string", default: "bench/results/build.json" } } });
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1) throw new Error("--reps takes a positive integer");
  const cleanup = new Cleanup("build-bench");
  const detach = cleanUpOnSignals("build-bench", cleanup);
  const rows: Row[] = [];
  try {
    const registry = await startRegistry();
    cleanup.add("registry", () => registry.stop());
    const scratch = await mkdtemp(join(tmpdir(), "sandbar-bench-build-"));
    cleanup.add(`scratch ${scratch}`, () => rm(scratch, { recursive: true, force: true }));
    const python = await testImage("python");
    await pushImage(python.layoutDir, python.tag, registry.host, "python:latest");
    const multi = await buildMultiLayerImage(scratch);
    await pushImage(multi, TAG, registry.host, `multi:${TAG}`);
    const manifest = await readManifest(multi, TAG);
    let compressed = 0;
    for (const d of manifest.layerDigests) compressed += await dirBytes(blobPath(multi, d));

    const bench = await startBenchServer(cleanup);
    const { dataDir, apiKey, api } = bench;
    const sdk = new SandboxClient({ endpoint: bench.server.url, apiKey });

    const pull = await measurePull(api, dataDir, scratch, registry.host, multi, reps);
    rows.push({
      case: `image pull -> ready snapshot, ${manifest.layerDigests.length} layers (${fmt(compressed / MIB)} MiB compressed)`,
      unit: "ms",
      ours: summarize(pull.ours),
      baseline: summarize(pull.raw),
      baselineName: "raw skopeo copy docker:// -> oci: + umoci unpack, same image; ours cold (layers collected between reps)",
    });

    // Only now the python snapshot: its layer is python-extra's first, which the pulls above
    // had to find absent.
    const base = await api.call<SnapshotJson>("POST", "/snapshots", { name: "python", docker_image: `${registry.host}/python:latest`, fs_capacity_bytes: 1024 ** 3 });
    if (base.status !== "ready") await api.waitSnapshot(base.id);
    const b = await measureBuild(sdk, api, scratch, reps);
    rows.push({
      case: `Dockerfile build FROM python (${CACHED_STEPS} steps, 3 RUN): fully cached rebuild`,
      unit: "ms",
      ours: summarize(b.cached),
      baseline: summarize(b.cold),
      baselineName: "cold build of the same Dockerfile and context (new NONCE build arg), same run",
    });
  } finally {
    await cleanup.run();
    detach();
  }
  await report(values.out, rows);
}

runMain(main);
