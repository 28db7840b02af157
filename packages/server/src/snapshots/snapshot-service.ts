import type { Logger } from "pino";
import { lstat, mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { CaptureSnapshotRequest, CreateSnapshotRequest, ListSnapshotsQuery, SnapshotView } from "@sandbar/shared";
import type { Store } from "../store/store.js";
import { NameTakenError } from "../store/store.js";
import type { SnapshotRecord } from "../store/records.js";
import type { ImagePuller, RegistryCredentials } from "../images/image-puller.js";
import type { RegistryService } from "../registries/registry-service.js";
import type { LayerStore } from "../images/layer-store.js";
import { SandbarError } from "../util/errors.js";
import { newId, nowIso } from "../util/ids.js";

/** Snapshots: build from images, list, delete; owns the layer garbage collection. */
export class SnapshotService {
  private readonly builds = new Map<string, Promise<void>>();
  private gcChain: Promise<void> = Promise.resolve();
  private beforeDelete: ((snapshotId: string) => Promise<void>) | undefined;

  constructor(
    private readonly store: Store,
    private readonly puller: ImagePuller,
    private readonly layers: LayerStore,
    private readonly defaultFsCapacity: number,
    private readonly log: Logger,
    /** Scratch space for capture tarballs (removed after each capture, and at start-up). */
    private readonly tmpRoot: string,
    /** Memory images of memory snapshots, one directory per snapshot id. */
    private readonly memoryRoot: string,
    /** Resolves registry_id and inline credentials of image snapshots. */
    private readonly registries?: RegistryService,
  ) {}

  view(s: SnapshotRecord): SnapshotView {
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      status_message: s.status_message,
      docker_image: s.docker_image,
      image_digest: s.image_digest,
      source_sandbox_id: s.source_sandbox_id,
      fs_capacity_bytes: s.fs_capacity_bytes,
      fs_used_bytes: s.fs_used_bytes,
      registry_id: s.registry_id,
      memory_snapshot_size_bytes: s.memory_snapshot_size_bytes,
      created_at: s.created_at,
      updated_at: s.updated_at,
    };
  }

  /** Start building a snapshot from an image; resolves with the `building` record. */
  async create(workspaceId: string, req: CreateSnapshotRequest): Promise<SnapshotRecord> {
    // Credentials stay in memory for the pull only; a registered registry's id is recorded.
    const { credentials, registryId } = this.registries ? await this.registries.credentialsFor(workspaceId, req.docker_image, req) : { credentials: undefined, registryId: null };
    const rec = newBuildingSnapshot(workspaceId, req.name, req.fs_capacity_bytes ?? this.defaultFsCapacity, { docker_image: req.docker_image, registry_id: registryId });
    await this.insert(rec);
    const build = this.build(rec, credentials).finally(() => {
      this.builds.delete(rec.id);
      // A failed build may leave layers nothing references.
      void this.collectLayers();
    });
    this.builds.set(rec.id, build);
    return rec;
  }

  /**
   * Capture a sandbox's filesystem as a new snapshot: its parent's layers plus one new layer
   * holding what the sandbox changed (shared layers are not copied). `exportLayer` writes
   * that layer as a tar; the build runs in the background like an image build.
   */
  async capture(
    workspaceId: string,
    sandbox: { id: string; snapshot_id: string; fs_capacity_bytes: number; agent_token: string },
    req: CaptureSnapshotRequest,
    exportLayer: (dest: string, memoryDir: string | undefined) => Promise<void>,
  ): Promise<SnapshotRecord> {
    const withMemory = req.include_memory === true;
    const parent = await this.store.getSnapshotById(sandbox.snapshot_id);
    if (!parent || parent.workspace_id !== workspaceId) throw new SandbarError("SNAPSHOT_NOT_FOUND", "the sandbox's snapshot no longer exists");
    const now = nowIso();
    const rec: SnapshotRecord = {
      ...parent,
      id: newId(),
      name: req.name,
      status: "building",
      status_message: withMemory ? "capturing the sandbox's memory and filesystem" : "capturing the sandbox's filesystem",
      docker_image: req.docker_image ?? parent.docker_image,
      source_sandbox_id: sandbox.id,
      parent_snapshot_id: parent.id,
      fs_capacity_bytes: req.fs_capacity_bytes ?? sandbox.fs_capacity_bytes,
      memory_snapshot_size_bytes: null,
      agent_token: withMemory ? sandbox.agent_token : null,
      created_at: now,
      updated_at: now,
    };
    await this.insert(rec);
    const job = this.runCapture(rec, parent, exportLayer, withMemory).finally(() => {
      this.builds.delete(rec.id);
      void this.collectLayers();
    });
    this.builds.set(rec.id, job);
    return rec;
  }

  private async runCapture(rec: SnapshotRecord, parent: SnapshotRecord, exportLayer: (dest: string, memoryDir: string | undefined) => Promise<void>, withMemory: boolean): Promise<void> {
    const log = this.log.child({ snapshotId: rec.id, sandboxId: rec.source_sandbox_id });
    const tar = join(this.tmpRoot, `capture-${rec.id}.tar`);
    const memTmp = withMemory ? join(this.memoryRoot, `.tmp-${rec.id}`) : undefined;
    const started = Date.now();
    try {
      if (memTmp) await mkdir(memTmp, { recursive: true });
      await exportLayer(tar, memTmp);
      const digest = await this.layers.ingestTar(tar);
      const layers = [...parent.layers, digest];
      let used = 0;
      for (const d of layers) used += await this.layers.sizeOf(d);
      let memoryBytes: number | null = null;
      if (memTmp) {
        memoryBytes = await treeBytes(memTmp);
        await rename(memTmp, this.memoryDir(rec.id));
      }
      await this.store.updateSnapshot(rec.id, { status: "ready", status_message: null, layers, image_digest: null, fs_used_bytes: used, memory_snapshot_size_bytes: memoryBytes, updated_at: nowIso() });
      log.info({ ms: Date.now() - started, layer: digest, memoryBytes }, "snapshot captured");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ err: message }, "capture failed");
      await this.store.updateSnapshot(rec.id, { status: "failed", status_message: `capture failed: ${message}`, updated_at: nowIso() });
      if (memTmp) await rm(memTmp, { recursive: true, force: true });
    } finally {
      await rm(tar, { force: true });
    }
  }

  /** Where a snapshot's memory image lives (it exists when memory_snapshot_size_bytes is set). */
  memoryDir(snapshotId: string): string {
    return join(this.memoryRoot, snapshotId);
  }

  /**
   * Insert a record whose build runs elsewhere (Dockerfile builds) and track the job like an
   * image build: layer collection waits for it; settle() and delete() see it.
   */
  async insertTracked(rec: SnapshotRecord, job: (rec: SnapshotRecord) => Promise<void>): Promise<SnapshotRecord> {
    await this.insert(rec);
    const run = job(rec).finally(() => {
      this.builds.delete(rec.id);
      void this.collectLayers();
    });
    this.builds.set(rec.id, run);
    return rec;
  }

  /** Insert a new record and start tracking its build; a taken name is NAME_CONFLICT. */
  private async insert(rec: SnapshotRecord): Promise<void> {
    try {
      await this.store.insertSnapshot(rec);
    } catch (e) {
      if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `snapshot name '${rec.name}' is already in use`);
      throw e;
    }
  }

  /** Wait up to `ms` for a build to finish (so fast builds answer ready at once). */
  async settle(id: string, ms: number): Promise<void> {
    const b = this.builds.get(id);
    if (!b) return;
    await Promise.race([b, new Promise((r) => setTimeout(r, ms))]);
  }

  private async build(rec: SnapshotRecord, credentials?: RegistryCredentials): Promise<void> {
    const log = this.log.child({ snapshotId: rec.id });
    let lastProgress = 0;
    try {
      const pulled = await this.puller.pull(rec.docker_image ?? "", {
        credentials,
        onProgress: (line) => {
          const now = Date.now();
          if (now - lastProgress < 250) return;
          lastProgress = now;
          void this.store.updateSnapshot(rec.id, { status_message: line, updated_at: nowIso() });
        },
      });
      let used = 0;
      for (const d of pulled.layers) used += await this.layers.sizeOf(d);
      await this.store.updateSnapshot(rec.id, {
        status: "ready",
        status_message: null,
        image_digest: pulled.digest,
        layers: pulled.layers,
        image_config: pulled.config,
        fs_used_bytes: used,
        updated_at: nowIso(),
      });
      log.info({ image: rec.docker_image, digest: pulled.digest, layers: pulled.layers.length }, "snapshot ready");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ image: rec.docker_image, err: message }, "snapshot build failed");
      await this.store.updateSnapshot(rec.id, { status: "failed", status_message: message, updated_at: nowIso() });
    }
  }

  async get(workspaceId: string, idOrName: string): Promise<SnapshotRecord> {
    const s = await this.store.getSnapshot(workspaceId, idOrName);
    if (!s) throw new SandbarError("SNAPSHOT_NOT_FOUND", `snapshot '${idOrName}' not found`);
    return s;
  }

  list(workspaceId: string, q: ListSnapshotsQuery): Promise<SnapshotRecord[]> {
    return this.store.listSnapshots(workspaceId, { nameContains: q.name_contains, limit: q.limit, offset: q.offset });
  }

  /** Delete unless a sandbox still uses it; its unshared layers leave the disk. */
  /** Runs before a snapshot is deleted (the warm pools drain theirs). */
  setBeforeDelete(fn: (snapshotId: string) => Promise<void>): void {
    this.beforeDelete = fn;
  }

  async delete(workspaceId: string, idOrName: string): Promise<void> {
    const s = await this.get(workspaceId, idOrName);
    await this.assertUnused(s);
    await this.beforeDelete?.(s.id);
    // Again: a create may have claimed a pooled sandbox while the pools drained.
    await this.assertUnused(s);
    if (this.builds.has(s.id)) {
      await this.store.updateSnapshot(s.id, { status: "deleting", updated_at: nowIso() });
      await this.builds.get(s.id);
    }
    await this.store.deleteSnapshot(s.id);
    await rm(this.memoryDir(s.id), { recursive: true, force: true });
    await this.collectLayers();
  }

  private async assertUnused(s: SnapshotRecord): Promise<void> {
    const users = await this.store.countSandboxesUsingSnapshot(s.id);
    if (users > 0) throw new SandbarError("SNAPSHOT_IN_USE", `snapshot '${s.name}' is used by ${users} sandbox(es); delete them first`);
  }

  /** Remove layers no snapshot references. Serialised so builds and GC never race. */
  collectLayers(): Promise<void> {
    this.gcChain = this.gcChain.then(async () => {
      if (this.builds.size > 0) return; // a running build may be about to reference a layer
      const refs = await this.store.layerReferenceCounts();
      for (const d of await this.layers.list()) {
        if (!refs.has(d)) {
          await this.layers.remove(d);
          this.log.info({ layer: d }, "layer collected");
        }
      }
    }).catch((e: unknown) => this.log.error({ err: e }, "layer collection failed"));
    return this.gcChain;
  }

  /** After a restart: builds that were running are gone; mark them failed. */
  async recover(): Promise<void> {
    // Memory images of captures that never finished, or of snapshots no longer recorded.
    const known = new Set((await this.store.listAllSnapshots()).filter((s) => s.status !== "building").map((s) => s.id));
    for (const entry of await readdir(this.memoryRoot).catch(() => [] as string[])) {
      if (!known.has(entry)) await rm(join(this.memoryRoot, entry), { recursive: true, force: true });
    }
    for (const s of await this.store.listAllSnapshots()) {
      if (s.status === "building" || s.status === "deleting") {
        await this.store.updateSnapshot(s.id, { status: "failed", status_message: "server restarted during the build; create it again", updated_at: nowIso() });
      }
    }
    await this.collectLayers();
  }
}

/** A new `building` snapshot with nothing in it yet. */
export function newBuildingSnapshot(workspaceId: string, name: string, fsCapacityBytes: number, extra: Partial<SnapshotRecord> = {}): SnapshotRecord {
  const now = nowIso();
  return {
    id: newId(),
    workspace_id: workspaceId,
    name,
    status: "building",
    status_message: "queued",
    docker_image: null,
    image_digest: null,
    source_sandbox_id: null,
    fs_capacity_bytes: fsCapacityBytes,
    fs_used_bytes: null,
    registry_id: null,
    parent_snapshot_id: null,
    layers: [],
    image_config: { env: [], workingDir: "/", user: "", entrypoint: [], cmd: [] },
    memory_snapshot_size_bytes: null,
    agent_token: null,
    created_at: now,
    updated_at: now,
    ...extra,
  };
}

/** Bytes of the regular files under `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(path);
    else if (entry.isFile()) total += (await lstat(path)).size;
  }
  return total;
}
