import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { snapshotName } from "@sandbar/shared";
import { parse } from "../http/validate.js";
import { asMultipartError } from "../http/multipart.js";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { join, posix } from "node:path";
import type { Logger } from "pino";
import type { SnapshotView } from "@sandbar/shared";
import type { Store } from "../store/store.js";
import type { ImageRunConfig, SnapshotRecord } from "../store/records.js";
import { newBuildingSnapshot, type SnapshotService } from "../snapshots/snapshot-service.js";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { LayerStore } from "../images/layer-store.js";
import type { ImagePuller } from "../images/image-puller.js";
import { SandbarError } from "../util/errors.js";
import { newId, nowIso, randomHex } from "../util/ids.js";
import { run } from "../util/proc.js";
import { mountPoints, umount } from "../util/mounts.js";
import { BuildLog } from "./build-log.js";
import { readAll, type AgentClient } from "../agent/agent-client.js";
import { FrameDecoder, type Frame } from "../agent/stream-frames.js";
import { DockerfileError, parseDockerfile, stepCacheKey, type BuildPlan, type Step } from "./dockerfile.js";

/** What a Dockerfile build asks for. */
export interface BuildRequest {
  name: string;
  dockerfile: string;
  buildArgs: Record<string, string>;
  target?: string;
  fsCapacityBytes?: number;
  /** A tar (optionally gzip) of the build context, already on disk; removed by the build. */
  contextTar?: string;
}

/** Layers and run config of an image under construction. */
interface ImageState {
  layers: string[];
  config: ImageRunConfig;
  /** Cache key of everything so far. */
  key: string;
  shell: string[];
}

/** Names of the helper records a build makes; users cannot name snapshots like this. */
const HIDDEN_PREFIX = ".build-";
/** Label on builder sandboxes, so start-up can remove those of a build the server died in. */
export const BUILDER_LABEL = "sandbar.build";

/**
 * Dockerfile builds: each stage starts from an image, a snapshot or an earlier stage; RUN steps
 * run in a builder sandbox booted from the layers so far and become a layer of what they
 * changed; COPY/ADD and WORKDIR make layers on the host; the rest only changes the config.
 * Steps are cached by parent and instruction (and content for COPY/ADD).
 */
export class BuildService {
  private readonly logs = new Map<string, BuildLog>();

  constructor(
    private readonly store: Store,
    private readonly snapshots: SnapshotService,
    private readonly sandboxes: SandboxService,
    private readonly layers: LayerStore,
    private readonly puller: ImagePuller,
    private readonly tmpRoot: string,
    private readonly logRoot: string,
    private readonly log: Logger,
  ) {}

  /** Parse (errors answer 422 at once), record the snapshot as building, run in the background. */
  async start(workspaceId: string, req: BuildRequest): Promise<SnapshotRecord> {
    let plan: BuildPlan;
    try {
      plan = parseDockerfile(req.dockerfile, { buildArgs: req.buildArgs, target: req.target });
    } catch (e) {
      if (req.contextTar) await rm(req.contextTar, { force: true });
      if (e instanceof DockerfileError) throw new SandbarError("VALIDATION_ERROR", `dockerfile: ${e.message}`, [{ loc: ["body", "dockerfile"], msg: e.message, type: "value_error" }]);
      throw e;
    }
    const rec = newBuildingSnapshot(workspaceId, req.name, req.fsCapacityBytes ?? 1024 ** 3, { status_message: "build queued" });
    const buildLog = new BuildLog(this.logFile(rec.id));
    this.logs.set(rec.id, buildLog);
    try {
      return await this.snapshots.insertTracked(rec, (r) => this.run(r, plan, req, buildLog));
    } catch (e) {
      this.logs.delete(rec.id);
      if (req.contextTar) await rm(req.contextTar, { force: true });
      throw e;
    }
  }

  /** The build log: a stream that ends with the build when `follow`, else the text so far. */
  async logOf(snap: SnapshotView | SnapshotRecord, follow: boolean): Promise<NodeJS.ReadableStream | string> {
    const live = this.logs.get(snap.id);
    if (live) return follow ? live.follow() : live.text();
    const saved = await BuildLog.read(this.logFile(snap.id));
    if (saved === undefined) throw new SandbarError("SNAPSHOT_NOT_FOUND", `snapshot '${snap.name}' was not built from a Dockerfile (no build log)`);
    return saved;
  }

  /** After a restart: builder sandboxes and helper snapshots of interrupted builds go. */
  async recover(): Promise<void> {
    for (const s of await this.store.listAllSandboxes()) {
      if (s.labels[BUILDER_LABEL] !== undefined) await this.sandboxes.delete(s.workspace_id, s.id).catch(() => undefined);
    }
    for (const s of await this.store.listAllSnapshots()) {
      if (s.name.startsWith(HIDDEN_PREFIX)) await this.store.deleteSnapshot(s.id);
    }
    for (const name of await readdir(this.tmpRoot).catch(() => [] as string[])) {
      if (name.startsWith("build-")) await this.cleanupDir(join(this.tmpRoot, name));
    }
  }

  private logFile(id: string): string {
    return join(this.logRoot, `${id}.log`);
  }

  private async run(rec: SnapshotRecord, firstPlan: BuildPlan, req: BuildRequest, out: BuildLog): Promise<void> {
    let plan = firstPlan;
    const work = await mkdtemp(join(this.tmpRoot, "build-"));
    const started = Date.now();
    try {
      const context = join(work, "context");
      await mkdir(context);
      if (req.contextTar) {
        // GNU tar refuses members that escape (.., absolute paths); -a picks gzip by content.
        const gz = (await readFile(req.contextTar)).subarray(0, 2).equals(Buffer.from([0x1f, 0x8b]));
        await run(["tar", "-C", context, gz ? "-xzf" : "-xf", req.contextTar, "--no-same-owner", "--no-same-permissions"]);
      }
      // Resolve every base image first, then plan again with their configs: `ENV PATH=/x:$PATH`
      // and the environment RUN sees build on the image's own variables.
      const bases = new Map<string, ImageState>();
      for (const stage of plan.stages) {
        if (!stage.needed || stage.fromStage !== null || stage.from === "scratch" || bases.has(stage.from)) continue;
        out.write(`Resolving ${stage.from}`);
        bases.set(stage.from, await this.base(rec, stage.from, null, []));
      }
      plan = parseDockerfile(req.dockerfile, {
        buildArgs: req.buildArgs,
        target: req.target,
        imageConfig: (image) => {
          const b = bases.get(image);
          return b && { env: envObject(b.config.env), workdir: b.config.workingDir || "/", user: b.config.user || undefined };
        },
      });
      const total = plan.stages.filter((s) => s.needed).reduce((n, s) => n + s.steps.length + 1, 0);
      let stepNo = 0;
      const results: ImageState[] = [];
      for (const stage of plan.stages) {
        if (!stage.needed) continue;
        out.write(`Step ${++stepNo}/${total} : FROM ${stage.from}${stage.name ? ` AS ${stage.name}` : ""}`);
        let state = stage.fromStage === null && bases.has(stage.from) ? cloneState(bases.get(stage.from) as ImageState) : await this.base(rec, stage.from, stage.fromStage, results);
        out.write(` ---> ${state.layers.length} layer(s)`);
        for (const step of stage.steps) {
          out.write(`Step ${++stepNo}/${total} : ${step.text}`);
          await this.store.updateSnapshot(rec.id, { status_message: `step ${stepNo}/${total}: ${step.text.slice(0, 200)}`, updated_at: nowIso() });
          state = await this.step(rec, state, step, context, results, out);
        }
        // CMD and ENTRYPOINT as Docker combines them (an ENTRYPOINT clears an inherited CMD).
        if (stage.config.entrypoint !== null) state.config.entrypoint = stage.config.entrypoint;
        if (stage.config.cmd !== null) state.config.cmd = stage.config.cmd;
        else if (stage.config.entrypoint !== null && !stage.steps.some((st) => st.kind === "CMD")) state.config.cmd = [];
        results[stage.index] = state;
      }
      const final = results[plan.target] as ImageState;
      let used = 0;
      for (const d of final.layers) used += await this.layers.sizeOf(d);
      await this.store.updateSnapshot(rec.id, { status: "ready", status_message: null, layers: final.layers, image_config: final.config, fs_used_bytes: used, updated_at: nowIso() });
      out.write(`Successfully built snapshot ${rec.name} (${final.layers.length} layers) in ${((Date.now() - started) / 1000).toFixed(1)}s`);
      this.log.info({ snapshotId: rec.id, ms: Date.now() - started }, "dockerfile build done");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      out.write(`ERROR: ${message}`);
      this.log.warn({ snapshotId: rec.id, err: message }, "dockerfile build failed");
      await this.store.updateSnapshot(rec.id, { status: "failed", status_message: `build failed: ${message.slice(0, 1900)}`, updated_at: nowIso() });
    } finally {
      await this.cleanupDir(work);
      if (req.contextTar) await rm(req.contextTar, { force: true });
      await out.finish().catch(() => undefined);
      this.logs.delete(rec.id);
    }
  }

  /** The starting point of a stage: an earlier stage, `scratch`, a snapshot, or an image. */
  private async base(rec: SnapshotRecord, from: string, fromStage: number | null, results: ImageState[]): Promise<ImageState> {
    const shell = ["/bin/sh", "-c"];
    if (fromStage !== null) {
      const s = results[fromStage];
      if (!s) throw new Error(`stage ${fromStage} was not built`);
      return { ...s, config: { ...s.config, env: [...s.config.env] } };
    }
    if (from === "scratch") return { layers: [], config: { env: [], workingDir: "/", user: "", entrypoint: [], cmd: [] }, key: sha("scratch"), shell };
    const snap = await this.store.getSnapshot(rec.workspace_id, from);
    if (snap && snap.status === "ready" && !snap.name.startsWith(HIDDEN_PREFIX)) {
      return { layers: [...snap.layers], config: { ...snap.image_config, env: [...snap.image_config.env] }, key: sha(`layers:${snap.layers.join(",")}`), shell };
    }
    const pulled = await this.puller.pull(from);
    return { layers: pulled.layers, config: pulled.config, key: sha(`image:${pulled.digest}`), shell };
  }

  private async step(rec: SnapshotRecord, s: ImageState, step: Step, context: string, results: ImageState[], out: BuildLog): Promise<ImageState> {
    const config: ImageRunConfig = { ...s.config, env: [...s.config.env] };
    let shell = s.shell;
    switch (step.kind) {
      case "ENV":
        for (const [k, v] of step.pairs) setEnv(config, k, v);
        return this.metaStep(s, step, config, shell, out);
      case "ARG":
      case "LABEL":
      case "EXPOSE":
        return this.metaStep(s, step, config, shell, out);
      case "USER":
        config.user = step.user;
        return this.metaStep(s, step, config, shell, out);
      case "ENTRYPOINT":
        config.entrypoint = step.argv;
        return this.metaStep(s, step, config, shell, out);
      case "CMD":
        config.cmd = step.argv;
        return this.metaStep(s, step, config, shell, out);
      case "SHELL":
        shell = step.argv;
        return this.metaStep(s, step, config, shell, out);
      case "WORKDIR": {
        config.workingDir = step.path;
        return this.layerStep(s, step, config, shell, out, "", (dir) => mkdir(join(dir, step.path), { recursive: true, mode: 0o755 }).then(() => undefined));
      }
      case "COPY":
      case "ADD": {
        const source = await this.copySource(step.kind === "COPY" ? step.from : null, step.kind === "COPY" ? step.fromStage : null, results, rec, context);
        try {
          const sources = await expandSources(source.root, step.sources);
          const extra = await contentHash(source.root, sources);
          const dest = posix.resolve(config.workingDir || "/", step.dest);
          const asDir = step.dest.endsWith("/") || sources.length > 1 || step.sources.some((p) => /[*?[]/.test(p));
          return await this.layerStep(s, step, config, shell, out, extra, async (dir) => {
            const owner = step.chown ? await resolveOwner(step.chown, this.layers, s.layers) : "0:0";
            for (const rel of sources) {
              const src = join(source.root, rel);
              const isDir = (await lstat(src)).isDirectory();
              const target = join(dir, dest);
              await mkdir(isDir || asDir ? target : posix.dirname(target), { recursive: true });
              // A directory's contents are copied, not the directory itself (as Docker does).
              const from = isDir ? `${src}/.` : src;
              const to = isDir ? target : asDir ? join(target, posix.basename(rel)) : target;
              await run(["cp", "-R", "--preserve=mode,timestamps,links", "--no-dereference", from, to]);
              await run(["chown", "-R", "--no-dereference", owner, to]);
              if (step.chmod) await run(["chmod", "-R", step.chmod, to]);
            }
          });
        } finally {
          await source.release();
        }
      }
      case "RUN":
        return this.runStep(rec, s, step, config, shell, out);
    }
  }

  /** A step that only changes the config: cached so that the log shows every step's hit. */
  private async metaStep(s: ImageState, step: Step, config: ImageRunConfig, shell: string[], out: BuildLog): Promise<ImageState> {
    const key = stepCacheKey(s.key, step);
    if (await this.store.getBuildCache(key)) out.write(" ---> Using cache");
    else await this.store.putBuildCache(key, null, nowIso());
    return { layers: s.layers, config, key, shell };
  }

  /** A step whose files are made on the host in `fill(dir)` and become one layer. */
  private async layerStep(s: ImageState, step: Step, config: ImageRunConfig, shell: string[], out: BuildLog, extra: string, fill: (dir: string) => Promise<void>): Promise<ImageState> {
    const key = stepCacheKey(s.key, step, extra);
    const cached = await this.cachedLayer(key);
    if (cached !== undefined) {
      out.write(" ---> Using cache");
      return { layers: [...s.layers, cached], config, key, shell };
    }
    const dir = await mkdtemp(join(this.tmpRoot, "build-layer-"));
    const tar = `${dir}.tar`;
    try {
      await fill(dir);
      await run(["tar", "-C", dir, "-c", "-f", tar, "--numeric-owner", "."]);
      const digest = await this.layers.ingestTar(tar);
      await this.store.putBuildCache(key, digest, nowIso());
      out.write(` ---> ${digest.slice(0, 19)}`);
      return { layers: [...s.layers, digest], config, key, shell };
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(tar, { force: true });
    }
  }

  private async cachedLayer(key: string): Promise<string | undefined> {
    const hit = await this.store.getBuildCache(key);
    if (!hit?.layer) return undefined;
    return (await this.layers.has(hit.layer)) ? hit.layer : undefined;
  }

  /** RUN: boot a builder sandbox from the layers so far, run the command, keep what it changed. */
  private async runStep(rec: SnapshotRecord, s: ImageState, step: Extract<Step, { kind: "RUN" }>, config: ImageRunConfig, shell: string[], out: BuildLog): Promise<ImageState> {
    const key = stepCacheKey(s.key, step);
    const cached = await this.cachedLayer(key);
    if (cached !== undefined) {
      out.write(" ---> Using cache");
      return { layers: [...s.layers, cached], config, key, shell };
    }
    const now = nowIso();
    const helper: SnapshotRecord = { ...rec, id: newId(), name: `${HIDDEN_PREFIX}${randomHex(8)}`, status: "ready", status_message: null, layers: s.layers, image_config: { ...config, user: "" }, created_at: now, updated_at: now };
    await this.store.insertSnapshot(helper);
    let sandboxId: string | undefined;
    const tar = join(this.tmpRoot, `build-run-${randomHex(8)}.tar`);
    try {
      const sb = await this.sandboxes.create(rec.workspace_id, {
        snapshot_id: helper.id,
        name: `build-${randomHex(6)}`,
        wait_for_ready: true,
        timeout: 120,
        fs_capacity_bytes: rec.fs_capacity_bytes,
        labels: { [BUILDER_LABEL]: rec.id },
      });
      sandboxId = sb.id;
      const { agent } = await this.sandboxes.agentFor(rec.workspace_id, sb.id);
      const command = step.argv ? step.argv.map(shellQuote).join(" ") : step.command;
      const [sh, ...shArgs] = step.shell.length ? step.shell : shell;
      // The image's environment, then what ENV and ARG set in this Dockerfile.
      const env = { ...envObject(config.env), ...step.env };
      const r = await runStreaming(
        agent,
        {
          command: shArgs.length > 1 ? `${shArgs.slice(1).join(" ")} ${command}` : command,
          shell: sh ?? "/bin/sh",
          env,
          cwd: step.workdir || config.workingDir || "/",
          timeout_seconds: RUN_TIMEOUT_SECONDS,
          user: step.user ?? "root",
        },
        (line) => out.write(line),
      );
      if (r.reason === "timeout") throw new Error(`line ${step.line}: RUN ran past ${RUN_TIMEOUT_SECONDS}s and was killed`);
      if (r.exitCode !== 0) throw new Error(`line ${step.line}: RUN exited ${r.exitCode}: ${step.text}`);
      const fresh = await this.store.getSandboxById(sb.id);
      if (!fresh) throw new Error("the builder sandbox vanished");
      await this.sandboxes.exportWritableLayer(fresh, tar);
      const digest = await this.layers.ingestTar(tar);
      await this.store.putBuildCache(key, digest, nowIso());
      out.write(` ---> ${digest.slice(0, 19)}`);
      return { layers: [...s.layers, digest], config, key, shell };
    } finally {
      await rm(tar, { force: true });
      if (sandboxId) await this.sandboxes.delete(rec.workspace_id, sandboxId).catch((e: unknown) => this.log.warn({ err: String(e) }, "builder sandbox delete failed"));
      await this.store.deleteSnapshot(helper.id);
    }
  }

  /** Where COPY reads: the context, or the files of an earlier stage (or an image). */
  private async copySource(from: string | null, fromStage: number | null, results: ImageState[], rec: SnapshotRecord, context: string): Promise<{ root: string; release: () => Promise<void> }> {
    if (from === null) return { root: context, release: async () => undefined };
    const state = fromStage !== null ? results[fromStage] : await this.base(rec, from, null, results);
    if (!state) throw new Error(`COPY --from=${from}: that stage was not built`);
    return this.mountLayers(state.layers);
  }

  /** A read-only view of a stack of layers (top last): one layer directly, more through overlayfs. */
  private async mountLayers(layers: string[]): Promise<{ root: string; release: () => Promise<void> }> {
    if (layers.length === 0) {
      const empty = await mkdtemp(join(this.tmpRoot, "build-empty-"));
      return { root: empty, release: () => rm(empty, { recursive: true, force: true }) };
    }
    if (layers.length === 1) return { root: this.layers.dir(layers[0] as string), release: async () => undefined };
    const mnt = await mkdtemp(join(this.tmpRoot, "build-mnt-"));
    const lower = [...layers].reverse().map((d) => this.layers.dir(d)).join(":");
    await run(["mount", "-t", "overlay", "overlay", "-o", `ro,lowerdir=${lower}`, mnt]);
    return {
      root: mnt,
      release: async () => {
        await umount(mnt).catch(() => undefined);
        await rm(mnt, { recursive: true, force: true });
      },
    };
  }

  private async cleanupDir(dir: string): Promise<void> {
    const mounted = await mountPoints();
    for (const m of [...mounted].filter((p) => p.startsWith(`${dir}/`) || p === dir)) await umount(m).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** How long one RUN may take. */
const RUN_TIMEOUT_SECONDS = 3600;

/**
 * Run a command as an agent session and hand each line of its output to `onLine` as it comes
 * (the build log streams while a long RUN works), then its exit.
 */
async function runStreaming(
  agent: AgentClient,
  body: { command: string; shell: string; env: Record<string, string>; cwd: string; timeout_seconds: number; user: string },
  onLine: (line: string) => void,
): Promise<{ exitCode: number; reason?: string }> {
  const id = `build-${randomHex(8)}`;
  await agent.json("POST", "/sessions", { ...body, command_id: id, idle_timeout_seconds: -1, ttl_seconds: 60 });
  await agent.request({ method: "POST", path: `/sessions/${id}/close-stdin`, body: "" }).then((r) => r.resume()).catch(() => undefined);
  const res = await agent.request({ method: "GET", path: `/sessions/${id}/stream?stdout_offset=0&stderr_offset=0` });
  if ((res.statusCode ?? 500) !== 200) throw new Error(`the builder's command stream answered ${res.statusCode ?? 0}: ${await readAll(res)}`);
  const partial = { stdout: "", stderr: "" };
  let result: { exitCode: number; reason?: string } | undefined;
  for await (const f of res.pipe(new FrameDecoder()) as AsyncIterable<Frame>) {
    if (f.type === "stdout" || f.type === "stderr") {
      const lines = (partial[f.type] + f.data.toString("utf8")).split("\n");
      partial[f.type] = lines.pop() ?? "";
      for (const l of lines) onLine(l);
    } else if (f.type === "exit") {
      result = { exitCode: f.exitCode, reason: f.info.reason };
    } else if (f.type === "error") {
      throw new Error(`the builder's command failed: ${f.info.message ?? f.info.error ?? "unknown error"}`);
    }
  }
  for (const rest of [partial.stdout, partial.stderr]) if (rest) onLine(rest);
  if (!result) throw new Error("the builder's command stream ended without an exit");
  return result;
}

function envObject(env: string[]): Record<string, string> {
  return Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
}

function cloneState(s: ImageState): ImageState {
  return { ...s, layers: [...s.layers], config: { ...s.config, env: [...s.config.env] }, shell: [...s.shell] };
}

function sha(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

function setEnv(config: ImageRunConfig, key: string, value: string): void {
  const i = config.env.findIndex((e) => e.startsWith(`${key}=`));
  if (i >= 0) config.env[i] = `${key}=${value}`;
  else config.env.push(`${key}=${value}`);
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Context-relative paths a COPY names (`*` and `?` in the last segment), none escaping it. */
async function expandSources(root: string, patterns: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of patterns) {
    const rel = posix.normalize(p.replace(/^\/+/, ""));
    if (rel === ".." || rel.startsWith("../")) throw new Error(`COPY source ${p} is outside the build context`);
    const base = posix.basename(rel);
    if (!/[*?[]/.test(base)) {
      await lstat(join(root, rel)).catch(() => {
        throw new Error(`COPY source ${p} not found in the build context`);
      });
      out.push(rel === "" ? "." : rel);
      continue;
    }
    const dir = posix.dirname(rel);
    const re = new RegExp(`^${base.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")}$`);
    const names = (await readdir(join(root, dir)).catch(() => [] as string[])).filter((n) => re.test(n)).sort();
    if (names.length === 0) throw new Error(`COPY source ${p} matches nothing in the build context`);
    for (const n of names) out.push(dir === "." ? n : `${dir}/${n}`);
  }
  return out;
}

/** A hash of the named files' names, modes and bytes (not times or owners), for the cache key. */
async function contentHash(root: string, rels: string[]): Promise<string> {
  const r = await run(["tar", "-C", root, "-c", "-f", "-", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--", ...rels]);
  return sha(r.stdout);
}

/** `user[:group]` by name or number, names looked up in the image's /etc/passwd and /etc/group. */
async function resolveOwner(spec: string, store: LayerStore, layers: string[]): Promise<string> {
  const [user = "0", group] = spec.split(":");
  const fileOf = async (path: string): Promise<string> => {
    for (const d of [...layers].reverse()) {
      const text = await readFile(join(store.dir(d), path), "utf8").catch(() => undefined);
      if (text !== undefined) return text;
    }
    return "";
  };
  const lookup = (text: string, name: string, field: number): string | undefined => text.split("\n").map((l) => l.split(":")).find((f) => f[0] === name)?.[field];
  let uid = user;
  let gid = group;
  if (!/^\d+$/.test(user)) {
    const passwd = await fileOf("etc/passwd");
    uid = lookup(passwd, user, 2) ?? "";
    if (!uid) throw new Error(`--chown: user '${user}' not found in the image's /etc/passwd`);
    gid ??= lookup(passwd, user, 3);
  }
  if (gid !== undefined && !/^\d+$/.test(gid)) {
    const name = gid;
    gid = lookup(await fileOf("etc/group"), name, 2);
    if (!gid) throw new Error(`--chown: group '${name}' not found in the image's /etc/group`);
  }
  return `${uid}:${gid ?? uid}`;
}

const buildFields = z.object({
  name: snapshotName,
  dockerfile: z.string().min(1).max(1024 * 1024),
  build_args: z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined || s === "") return {};
      try {
        const v = JSON.parse(s) as unknown;
        if (typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string")) return v as Record<string, string>;
      } catch {
        // reported below
      }
      ctx.addIssue({ code: "custom", message: "must be a JSON object of strings" });
      return z.NEVER;
    }),
  target: z.string().min(1).max(128).optional(),
  fs_capacity_bytes: z.coerce.number().int().min(64 * 1024 * 1024).max(16 * 1024 ** 4).optional(),
});

/** `it` with every error it throws passed through `map`. */
async function* mapErrors<T>(it: AsyncIterable<T>, map: (e: unknown) => unknown): AsyncGenerator<T> {
  try {
    yield* it;
  } catch (e) {
    throw map(e);
  }
}

/**
 * Control plane: POST /snapshots/build (multipart: the fields above and an optional `context`
 * file, a tar or tar.gz) and GET /snapshots/{id}/build-log[?follow=true].
 */
export function buildRoutes(app: FastifyInstance, builds: BuildService, snapshots: SnapshotService, tmpRoot: string, maxContextBytes: number): void {
  app.post("/snapshots/build", async (req, reply) => {
    if (!req.isMultipart()) throw new SandbarError("INVALID_REQUEST", "a build takes a multipart/form-data body: name, dockerfile, build_args, target, fs_capacity_bytes and a context file");
    const fields: Record<string, string> = {};
    let contextTar: string | undefined;
    try {
      // Malformed multipart (no boundary, a body ending inside a part) is 400, not 500.
      const parts = mapErrors(req.parts({ limits: { fileSize: maxContextBytes, files: 1, fields: 8, fieldSize: 1024 * 1024 } }), asMultipartError);
      for await (const part of parts) {
        if (part.type === "file") {
          if (part.fieldname !== "context") {
            part.file.resume();
            throw new SandbarError("VALIDATION_ERROR", "the only file field is 'context'", [{ loc: ["body", part.fieldname], msg: "unexpected file field", type: "value_error" }]);
          }
          contextTar = join(tmpRoot, `build-context-${randomHex(8)}.tar`);
          await pipeline(part.file, createWriteStream(contextTar, { mode: 0o600 })).catch((e: unknown) => {
            throw asMultipartError(e);
          });
          if (part.file.truncated) throw new SandbarError("PAYLOAD_TOO_LARGE", `the build context is larger than ${maxContextBytes} bytes`);
        } else {
          fields[part.fieldname] = String(part.value);
        }
      }
      const body = parse(buildFields, fields, "body");
      const rec = await builds.start(req.workspaceId, { name: body.name, dockerfile: body.dockerfile, buildArgs: body.build_args, target: body.target, fsCapacityBytes: body.fs_capacity_bytes, contextTar });
      contextTar = undefined; // the build owns it now
      return reply.status(201).send(snapshots.view(await snapshots.get(req.workspaceId, rec.id)));
    } finally {
      if (contextTar) await rm(contextTar, { force: true });
    }
  });

  app.get("/snapshots/:id/build-log", async (req, reply) => {
    const { id } = parse(z.object({ id: z.string().min(1).max(128) }), req.params, "params");
    const { follow } = parse(z.object({ follow: z.enum(["true", "false", "1", "0"]).optional() }), req.query, "query");
    const snap = await snapshots.get(req.workspaceId, id);
    const body = await builds.logOf(snap, follow === "true" || follow === "1");
    return reply.type("text/plain; charset=utf-8").header("cache-control", "no-store").send(body);
  });
}
