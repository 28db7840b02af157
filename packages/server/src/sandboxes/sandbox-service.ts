import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CreateSandboxRequest, ListSandboxesQuery, NetworkPolicy, QuotaView, SandboxView, UpdateSandboxRequest } from "@sandbar/shared";
import type { RuntimeName, ServerConfig } from "../config.js";
import type { Store } from "../store/store.js";
import { NameTakenError } from "../store/store.js";
import type { PoolRecord, SandboxRecord, SnapshotRecord } from "../store/records.js";
import type { SnapshotService } from "../snapshots/snapshot-service.js";
import type { RootfsManager } from "../storage/rootfs-manager.js";
import type { NetworkManager } from "../network/network-manager.js";
import type { SandboxRuntime } from "../runtime/runtime.js";
import { buildSpec } from "../runtime/oci-spec.js";
import { AgentClient } from "../agent/agent-client.js";
import { blockAt } from "../network/addresses.js";
import { digestHex } from "../images/layer-store.js";
import { SandbarError, validationError } from "../util/errors.js";
import { KeyedLock } from "../util/keyed-lock.js";
import { newId, newSecret, nowIso, randomHex } from "../util/ids.js";
import { run } from "../util/proc.js";

export interface SandboxServiceDeps {
  store: Store;
  snapshots: SnapshotService;
  rootfs: RootfsManager;
  network: NetworkManager;
  /** Runtimes by name; new boots use config.runtime, teardown uses the one a sandbox ran on. */
  runtimes: Record<RuntimeName, SandboxRuntime>;
  config: ServerConfig;
  /** Directory with the agent binary, bind-mounted into every sandbox. */
  agentDir: string;
  /** Unique per data dir; prefixes container ids so servers sharing a host never touch each other's. */
  instanceTag: string;
  log: Logger;
}

const BOOT_POLL_MS = 1;
/** Kernel hostname of pooled sandboxes (claimed ones keep it; their files name them). */
const POOL_HOSTNAME = "sandbox";

/** Takes a matching ready sandbox from a warm pool for `rec`, or answers undefined. */
export type PoolClaimer = (rec: SandboxRecord, snap: SnapshotRecord, restore: boolean) => Promise<SandboxRecord | undefined>;

function hostsContent(ip: string, name: string): string {
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip}\t${name}\n`;
}

function samePolicy(a: NetworkPolicy, b: NetworkPolicy): boolean {
  const norm = (p: NetworkPolicy): string => JSON.stringify([p.egress, [...p.allow_cidrs].sort(), [...p.allow_domains].sort()]);
  return norm(a) === norm(b);
}

/**
 * Sandboxes: create (boot), get, list, update, stop, start, delete, and the adoption of
 * running sandboxes after a server restart. Every host resource a sandbox has is made
 * through the rootfs, network and runtime owners, and removed through them.
 */
export class SandboxService {
  private readonly lock = new KeyedLock();
  /** Per workspace: a quota check and the insert (or claim, or start) it admits. */
  private readonly quotaLock = new KeyedLock();
  private readonly boots = new Map<string, Promise<void>>();
  private readonly agents = new Map<string, AgentClient>();
  private readonly lastTouch = new Map<string, number>();
  private monitor: NodeJS.Timeout | undefined;
  private ticking = false;
  private claimer: PoolClaimer | undefined;

  constructor(private readonly d: SandboxServiceDeps) {}

  containerId(id: string): string {
    return `sandbar-${this.d.instanceTag}-${id}`;
  }

  view(s: SandboxRecord): SandboxView {
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      status_message: s.status_message,
      dataplane_url: `${this.d.config.publicUrl}/dataplane/${s.id}`,
      snapshot_id: s.snapshot_id,
      idle_ttl_seconds: s.idle_ttl_seconds,
      delete_after_stop_seconds: s.delete_after_stop_seconds,
      stopped_at: s.stopped_at,
      vcpus: s.vcpus,
      mem_bytes: s.mem_bytes,
      fs_capacity_bytes: s.fs_capacity_bytes,
      labels: s.labels,
      network_policy: s.network_policy,
      preserve_memory_on_stop: s.preserve_memory_on_stop,
      memory_preserved: s.memory_preserved,
      runtime: s.runtime,
      created_at: s.created_at,
      updated_at: s.updated_at,
    };
  }

  async create(workspaceId: string, req: CreateSandboxRequest): Promise<SandboxRecord> {
    return (await this.createOrClaim(workspaceId, req)).sandbox;
  }

  /**
   * Create a sandbox: take a matching one from a warm pool when the claimer has one ready
   * (`claimed`), boot a new one otherwise.
   */
  async createOrClaim(workspaceId: string, req: CreateSandboxRequest): Promise<{ sandbox: SandboxRecord; claimed: boolean }> {
    const ref = req.snapshot_id ?? req.snapshot_name ?? "";
    const snap = await this.d.store.getSnapshot(workspaceId, ref);
    if (!snap || (req.snapshot_id !== undefined && snap.id !== req.snapshot_id) || (req.snapshot_name !== undefined && snap.name !== req.snapshot_name)) {
      throw new SandbarError("SNAPSHOT_NOT_FOUND", `snapshot '${ref}' not found`);
    }
    const { rec, restore } = this.newRecord(workspaceId, req, snap);
    // Check and take under one lock per workspace: concurrent creates cannot both fit.
    const claimed = await this.quotaLock.run(workspaceId, async () => {
      await this.checkQuota(workspaceId, { sandboxes: 1, vcpus: rec.vcpus, mem_bytes: rec.mem_bytes, storage_bytes: rec.fs_capacity_bytes });
      const fromPool = this.claimer ? await this.claimer(rec, snap, restore) : undefined;
      if (fromPool) return fromPool;
      try {
        await this.d.store.insertSandbox(rec);
      } catch (e) {
        if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `sandbox name '${rec.name}' is already in use`);
        throw e;
      }
      return undefined;
    });
    if (claimed) return { sandbox: claimed, claimed: true };
    const boot = this.startBoot(rec, snap, restore ? this.d.snapshots.memoryDir(snap.id) : undefined);
    if (req.wait_for_ready) {
      await this.awaitBoot(rec, boot, req.timeout);
    }
    return { sandbox: (await this.d.store.getSandboxById(rec.id)) ?? rec, claimed: false };
  }

  /** The record a create would insert (defaults applied), and whether it resumes memory. */
  private newRecord(workspaceId: string, req: CreateSandboxRequest, snap: SnapshotRecord): { rec: SandboxRecord; restore: boolean } {
    if (snap.status !== "ready") throw new SandbarError("SNAPSHOT_NOT_READY", `snapshot '${snap.name}' is ${snap.status}${snap.status_message ? `: ${snap.status_message}` : ""}`);
    const defaults = this.d.config.defaults;
    const hasMemory = snap.memory_snapshot_size_bytes !== null && snap.agent_token !== null;
    if (req.restore_memory === true && !hasMemory) throw validationError("restore_memory", `snapshot '${snap.name}' has no memory image; it was captured without include_memory`);
    const restore = hasMemory && req.restore_memory !== false;
    if (restore && !this.d.runtimes[this.d.config.runtime].canCheckpoint) {
      throw validationError("restore_memory", `the server's runtime ${this.d.config.runtime} cannot restore memory snapshots; pass restore_memory: false to boot from the snapshot's files`);
    }
    const now = nowIso();
    const rec: SandboxRecord = {
      id: newId(),
      workspace_id: workspaceId,
      name: req.name ?? `sandbox-${randomHex(4)}`,
      status: "provisioning",
      status_message: null,
      snapshot_id: snap.id,
      idle_ttl_seconds: req.idle_ttl_seconds ?? defaults.idleTtlSeconds,
      delete_after_stop_seconds: req.delete_after_stop_seconds ?? defaults.deleteAfterStopSeconds,
      stopped_at: null,
      vcpus: req.vcpus ?? defaults.vcpus,
      mem_bytes: req.mem_bytes ?? defaults.memBytes,
      fs_capacity_bytes: req.fs_capacity_bytes ?? snap.fs_capacity_bytes ?? defaults.fsCapacityBytes,
      labels: req.labels ?? {},
      network_policy: req.network_policy ?? this.defaultPolicy(),
      preserve_memory_on_stop: req.preserve_memory_on_stop ?? false,
      memory_preserved: false,
      runtime: this.d.config.runtime,
      net_index: null,
      // A restored agent keeps the token it had when its memory was saved.
      agent_token: restore ? (snap.agent_token as string) : newSecret(),
      pool_id: null,
      created_at: now,
      updated_at: now,
      last_active_at: now,
    };
    return { rec, restore };
  }

  /** A workspace's limits (its own where set, else the server's) and its usage now. */
  async quota(workspaceId: string): Promise<QuotaView> {
    const ws = await this.d.store.getWorkspace(workspaceId);
    return { limits: { ...this.d.config.quotas, ...(ws?.quotas ?? {}) }, usage: await this.d.store.workspaceUsage(workspaceId) };
  }

  /** QUOTA_EXCEEDED when adding `add` to the workspace's usage passes one of its limits. */
  private async checkQuota(workspaceId: string, add: QuotaView["usage"]): Promise<void> {
    const { limits, usage } = await this.quota(workspaceId);
    for (const k of ["sandboxes", "vcpus", "mem_bytes", "storage_bytes"] as const) {
      const max = limits[k];
      if (max !== null && add[k] > 0 && usage[k] + add[k] > max) {
        throw new SandbarError("QUOTA_EXCEEDED", `the workspace's ${k} quota is ${max}: ${usage[k]} in use, this sandbox needs ${add[k]} more; delete or stop sandboxes, or ask for a larger quota`);
      }
    }
  }

  /** The egress policy of sandboxes created without one (and of pooled sandboxes). */
  defaultPolicy(): NetworkPolicy {
    return { egress: this.d.config.defaults.egress, allow_cidrs: [], allow_domains: [] };
  }

  /** Called by create before booting; returns a claimed pooled sandbox, or undefined to boot. */
  setClaimer(claimer: PoolClaimer): void {
    this.claimer = claimer;
  }

  /**
   * Boot a sandbox into a warm pool: it belongs to the pool's workspace but is invisible to
   * the API until claimed. Resolves when it is ready; rejects (record marked failed) otherwise.
   */
  async bootPooled(pool: PoolRecord, snap: SnapshotRecord): Promise<void> {
    const { rec, restore } = this.newRecord(
      pool.workspace_id,
      { snapshot_id: snap.id, name: undefined, wait_for_ready: false, timeout: 0, vcpus: pool.vcpus, mem_bytes: pool.mem_bytes, fs_capacity_bytes: pool.fs_capacity_bytes },
      snap,
    );
    // Sandbox names cannot start with ".", so no user name collides with a pooled one.
    rec.name = `.pool-${randomHex(6)}`;
    rec.pool_id = pool.id;
    rec.idle_ttl_seconds = 0;
    rec.delete_after_stop_seconds = 0;
    await this.d.store.insertSandbox(rec);
    await this.startBoot(rec, snap, restore ? this.d.snapshots.memoryDir(snap.id) : undefined);
  }

  /**
   * Make a just-claimed pooled sandbox its owner's: the requested egress policy (pooled ones
   * run the default) and its name in /etc/hostname and /etc/hosts.
   */
  async finishClaim(s: SandboxRecord): Promise<void> {
    if (s.net_index === null) throw new Error("a pooled sandbox without a network");
    const net = blockAt(this.d.config.subnet, s.net_index);
    if (!samePolicy(s.network_policy, this.defaultPolicy())) await this.d.network.applyPolicy(s.id, net, s.network_policy);
    const dir = this.d.rootfs.paths(s.id).dir;
    // Rewritten in place: the files are bind-mounted, a new inode would not be seen.
    await writeFile(join(dir, "hostname"), `${s.name}\n`);
    await writeFile(join(dir, "hosts"), hostsContent(net.sandboxIp, s.name));
    this.touch(s.id);
  }

  /**
   * Delete a sandbox that is still in a pool (drains, failed refills). False, and nothing
   * done, when a create claimed it meanwhile.
   */
  async deletePooled(id: string): Promise<boolean> {
    const s = await this.d.store.getSandboxById(id);
    if (!s || !(await this.d.store.retirePooledSandbox(id, nowIso()))) return false;
    await this.remove(s);
    return true;
  }

  private startBoot(rec: SandboxRecord, snap: SnapshotRecord, restoreFrom?: string): Promise<void> {
    const boot = this.lock.run(rec.id, () => this.boot(rec, snap, restoreFrom));
    this.boots.set(rec.id, boot);
    void boot.catch(() => undefined).finally(() => this.boots.delete(rec.id));
    return boot;
  }

  private async awaitBoot(rec: SandboxRecord, boot: Promise<void>, timeoutSeconds: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), Math.max(1, timeoutSeconds) * 1000);
    });
    try {
      const outcome = await Promise.race([boot.then(() => "ok" as const), timeout]);
      if (outcome === "timeout") {
        throw new SandbarError("SANDBOX_TIMEOUT", `sandbox '${rec.name}' did not become ready within ${timeoutSeconds}s (last status: provisioning)`);
      }
    } catch (e) {
      if (e instanceof SandbarError) throw e;
      throw new SandbarError("SANDBOX_CREATION_FAILED", `sandbox '${rec.name}' failed to start: ${(e as Error).message}`);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Mount storage, make the network, start the runtime, wait for the agent. */
  /** Boot a sandbox; with `restoreFrom`, resume the processes saved in that memory image. */
  private async boot(rec: SandboxRecord, snap: SnapshotRecord, restoreFrom?: string): Promise<void> {
    const log = this.d.log.child({ sandboxId: rec.id });
    const started = Date.now();
    const runtime = this.d.runtimes[this.d.config.runtime];
    // A stopped sandbox starts on the server's current runtime.
    rec.runtime = runtime.name;
    await this.d.store.updateSandbox(rec.id, { runtime: runtime.name });
    try {
      // Disk and network at once; both settle before a failure is thrown, so the clean-up
      // never races a half that is still being made.
      const [mounted, networked] = await Promise.allSettled([
        this.d.rootfs.mount(rec.id, rec.fs_capacity_bytes, snap.layers.map(digestHex)),
        (async () => {
          const made = await this.d.network.create(rec.id, rec.net_index);
          await this.d.store.updateSandbox(rec.id, { net_index: made.index });
          await this.d.network.applyPolicy(rec.id, made, rec.network_policy);
          return made;
        })(),
      ]);
      if (mounted.status === "rejected") throw mounted.reason;
      if (networked.status === "rejected") throw networked.reason;
      const paths = mounted.value;
      const net = networked.value;
      const hostnameFile = join(paths.dir, "hostname");
      const hostsFile = join(paths.dir, "hosts");
      const resolvFile = join(paths.dir, "resolv.conf");
      await writeFile(resolvFile, `nameserver ${net.hostIp}\noptions timeout:2 attempts:2\n`);
      // A pooled sandbox's name is not a hostname; it gets its owner's at claim (files only).
      const hostname = rec.pool_id === null ? rec.name : POOL_HOSTNAME;
      await writeFile(hostnameFile, `${hostname}\n`);
      await writeFile(hostsFile, hostsContent(net.sandboxIp, hostname));
      const spec = buildSpec({
        hostnameFile,
        hostsFile,
        resolvFile,
        runtime: this.d.config.runtime,
        rootfs: paths.rootfs,
        hostname: rec.pool_id === null ? rec.name : POOL_HOSTNAME,
        netnsPath: net.netnsPath,
        agentDir: this.d.agentDir,
        agentToken: rec.agent_token,
        agentPort: this.d.config.agentPort,
        image: snap.image_config,
        vcpus: rec.vcpus,
        memBytes: rec.mem_bytes,
        pidsLimit: 4096,
        cgroupsPath: `/sandbar/${this.containerId(rec.id)}`,
      });
      await writeFile(join(paths.bundle, "config.json"), JSON.stringify(spec));
      const launch = { containerId: this.containerId(rec.id), bundleDir: paths.bundle, logFile: join(paths.dir, "console.log") };
      const agent = new AgentClient(net.sandboxIp, this.d.config.agentPort, rec.agent_token);
      // The agent often listens before `runsc run` returns: it is probed from the start.
      let launchFailed = false;
      const answered = this.waitForAgent(agent, 30_000, () => launchFailed);
      try {
        // From a memory snapshot the first boot resumes its processes; a later start boots cold.
        if (restoreFrom !== undefined) {
          try {
            await runtime.restore({ ...launch, imageDir: restoreFrom });
          } catch (e) {
            throw new RestoreFailedError((e as Error).message);
          }
        } else await runtime.start(launch);
      } catch (e) {
        launchFailed = true;
        await answered.catch(() => undefined);
        agent.close("the sandbox failed to start");
        throw e;
      }
      await answered;
      this.agents.set(rec.id, agent);
      // A delete that came in meanwhile (it waits for this boot) wins: no revival as ready.
      if (!(await this.d.store.updateSandboxIf(rec.id, "provisioning", { status: "ready", status_message: null, stopped_at: null, updated_at: nowIso(), last_active_at: nowIso() }))) {
        throw new Error("the sandbox was deleted while it booted");
      }
      log.info({ ms: Date.now() - started, ip: net.sandboxIp }, "sandbox ready");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ err: message }, "sandbox boot failed");
      await this.releaseCompute(rec).catch((err: unknown) => log.error({ err }, "cleanup after failed boot"));
      const current = await this.d.store.getSandboxById(rec.id);
      if (current && current.status !== "deleting") {
        await this.d.store.updateSandbox(rec.id, { status: "failed", status_message: message.slice(0, 2000), updated_at: nowIso() });
      }
      throw e;
    }
  }

  /** Poll the agent's /healthz until it answers, `ms` pass, or `stop()` says to give up. */
  private async waitForAgent(agent: AgentClient, ms: number, stop: () => boolean = () => false): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && !stop()) {
      if (await agent.health(500)) return;
      await new Promise((r) => setTimeout(r, BOOT_POLL_MS));
    }
    throw new Error(stop() ? "the sandbox did not start" : "the sandbox agent did not answer within 30s");
  }

  /** Stop the container and free its network and mounts; files stay. Idempotent. */
  private async releaseCompute(s: Pick<SandboxRecord, "id" | "runtime" | "net_index">, reason = "the sandbox is stopping"): Promise<void> {
    this.agents.get(s.id)?.close(reason);
    this.agents.delete(s.id);
    await this.runtimeOf(s).remove(this.containerId(s.id));
    await this.d.network.destroy(s.id, s.net_index);
    await this.d.rootfs.unmount(s.id);
  }

  private runtimeOf(s: Pick<SandboxRecord, "runtime">): SandboxRuntime {
    return this.d.runtimes[s.runtime === "runc" ? "runc" : "runsc"];
  }

  async get(workspaceId: string, nameOrId: string): Promise<SandboxRecord> {
    const s = await this.d.store.getSandbox(workspaceId, nameOrId);
    if (!s) throw new SandbarError("SANDBOX_NOT_FOUND", `sandbox '${nameOrId}' not found`);
    return s;
  }

  list(workspaceId: string, q: ListSandboxesQuery): Promise<SandboxRecord[]> {
    return this.d.store.listSandboxes(workspaceId, {
      nameContains: q.name_contains,
      status: q.status,
      limit: q.limit,
      offset: q.offset,
      sortBy: q.sort_by,
      sortDirection: q.sort_direction,
    });
  }

  async update(workspaceId: string, nameOrId: string, req: UpdateSandboxRequest): Promise<SandboxRecord> {
    const s = await this.get(workspaceId, nameOrId);
    const patch: Partial<SandboxRecord> = { updated_at: nowIso() };
    if (req.name !== undefined) patch.name = req.name;
    if (req.idle_ttl_seconds !== undefined) patch.idle_ttl_seconds = req.idle_ttl_seconds;
    if (req.delete_after_stop_seconds !== undefined) patch.delete_after_stop_seconds = req.delete_after_stop_seconds;
    if (req.network_policy !== undefined) patch.network_policy = req.network_policy;
    if (req.preserve_memory_on_stop !== undefined) patch.preserve_memory_on_stop = req.preserve_memory_on_stop;
    await this.lock.run(s.id, async () => {
      try {
        await this.d.store.updateSandbox(s.id, patch);
      } catch (e) {
        if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `sandbox name '${req.name ?? ""}' is already in use`);
        throw e;
      }
      const cur = await this.d.store.getSandboxById(s.id);
      // A running sandbox gets a new policy at once; a stopped one at its next start.
      if (req.network_policy && cur?.status === "ready" && cur.net_index !== null) {
        await this.d.network.applyPolicy(cur.id, blockAt(this.d.config.subnet, cur.net_index), req.network_policy);
      }
    });
    return (await this.d.store.getSandboxById(s.id)) ?? s;
  }

  async delete(workspaceId: string, nameOrId: string): Promise<void> {
    await this.remove(await this.get(workspaceId, nameOrId));
  }

  private async remove(s: SandboxRecord): Promise<void> {
    await this.d.store.updateSandbox(s.id, { status: "deleting", updated_at: nowIso() });
    await this.lock.run(s.id, async () => {
      const cur = (await this.d.store.getSandboxById(s.id)) ?? s;
      await this.releaseCompute(cur);
      await this.d.rootfs.destroy(s.id);
      await this.d.store.deleteSandbox(s.id);
      this.lastTouch.delete(s.id);
    });
    this.d.log.info({ sandboxId: s.id }, "sandbox deleted");
  }

  async stop(workspaceId: string, nameOrId: string, message: string | null = null): Promise<SandboxRecord> {
    const s = await this.get(workspaceId, nameOrId);
    await this.lock.run(s.id, async () => {
      const cur = await this.d.store.getSandboxById(s.id);
      if (!cur || cur.status === "stopped" || cur.status === "deleting") return;
      const preserved = cur.status === "ready" && cur.preserve_memory_on_stop && (await this.saveMemory(cur));
      await this.releaseCompute(cur);
      const now = nowIso();
      await this.d.store.updateSandbox(s.id, { status: "stopped", stopped_at: now, status_message: message, memory_preserved: preserved, updated_at: now });
    });
    return (await this.d.store.getSandboxById(s.id)) ?? s;
  }

  async start(workspaceId: string, nameOrId: string, timeoutSeconds = 120): Promise<SandboxRecord> {
    const s = await this.get(workspaceId, nameOrId);
    if (s.status === "ready" || s.status === "provisioning") return s;
    if (s.status === "deleting") throw new SandbarError("SANDBOX_NOT_READY", `sandbox '${s.name}' is being deleted`);
    const snap = await this.d.store.getSnapshotById(s.snapshot_id);
    if (!snap) throw new SandbarError("SNAPSHOT_NOT_FOUND", `snapshot of sandbox '${s.name}' no longer exists`);
    // A stopped sandbox holds storage only: starting it takes its vcpus and memory again.
    await this.quotaLock.run(workspaceId, async () => {
      await this.checkQuota(workspaceId, { sandboxes: 0, vcpus: s.vcpus, mem_bytes: s.mem_bytes, storage_bytes: 0 });
      await this.d.store.updateSandbox(s.id, { status: "provisioning", status_message: null, updated_at: nowIso() });
    });
    const saved = s.memory_preserved ? this.savedMemoryDir(s.id) : undefined;
    const boot = this.startBoot(s, snap, saved).then(
      () => (saved ? this.forgetSavedMemory(s.id) : undefined),
      async (e: unknown) => {
        // Only an image that runsc itself could not restore is given up (other failures keep it
        // for the next start); then the sandbox boots from its files rather than staying down.
        if (!saved || !(e instanceof RestoreFailedError)) throw e;
        this.d.log.warn({ sandboxId: s.id, err: e.message }, "resuming saved memory failed; starting from files");
        await this.forgetSavedMemory(s.id);
        const cur = await this.d.store.getSandboxById(s.id);
        if (!cur || cur.status === "deleting" || cur.status === "stopped") throw e;
        await this.d.store.updateSandbox(s.id, { status: "provisioning", status_message: null, updated_at: nowIso() });
        await this.startBoot(cur, snap);
        await this.d.store.updateSandbox(s.id, { status_message: `its saved memory could not be resumed (${e.message.slice(0, 300)}); started from its files` });
      },
    );
    await this.awaitBoot(s, boot, timeoutSeconds);
    return (await this.d.store.getSandboxById(s.id)) ?? s;
  }

  private savedMemoryDir(id: string): string {
    return join(this.d.rootfs.paths(id).dir, "memory");
  }

  /**
   * Checkpoint a running sandbox's memory into its own directory before a stop. False (and a
   * plain stop) when the runtime cannot or the checkpoint fails.
   */
  private async saveMemory(s: SandboxRecord): Promise<boolean> {
    const runtime = this.runtimeOf(s);
    if (!runtime.canCheckpoint) return false;
    const dir = this.savedMemoryDir(s.id);
    const cid = this.containerId(s.id);
    try {
      for (let attempt = 0; ; attempt++) {
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        await this.closeIdleConnections(s.id, attempt);
        await runtime.pause(cid);
        try {
          await runtime.checkpoint(cid, dir);
          return true;
        } catch (e) {
          if (!this.retryCheckpoint(e, attempt, s.id)) throw e;
          await runtime.resume(cid);
        }
      }
    } catch (e) {
      this.d.log.warn({ sandboxId: s.id, err: (e as Error).message }, "saving memory before stop failed; stopping without it");
      await rm(dir, { recursive: true, force: true });
      return false;
    }
  }

  /**
   * gVisor refuses to save a sandbox with an open TCP connection, ours to its agent included:
   * the idle kept-alive ones are closed first, and the agent is given a moment to close its end.
   */
  private async closeIdleConnections(id: string, attempt: number): Promise<void> {
    this.agents.get(id)?.dropIdleConnections();
    await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
  }

  /** A checkpoint refused for a connection still open (one came in meanwhile) is tried again, twice. */
  private retryCheckpoint(e: unknown, attempt: number, id: string): boolean {
    const again = attempt < 2 && /cannot be saved in connected state/.test((e as Error).message);
    if (again) this.d.log.warn({ sandboxId: id, attempt }, "checkpoint refused for an open connection; trying again");
    return again;
  }

  private async forgetSavedMemory(id: string): Promise<void> {
    await rm(this.savedMemoryDir(id), { recursive: true, force: true });
    await this.d.store.updateSandbox(id, { memory_preserved: false });
  }

  /**
   * Write the sandbox's writable layer (what it changed on top of its snapshot) as an
   * uncompressed tar to `dest`. A running sandbox is paused for the copy, so the capture
   * is consistent; a stopped one has its disk mounted for the copy. /tmp is a tmpfs inside
   * the sandbox and never reaches this layer.
   */
  async exportWritableLayer(s: SandboxRecord, dest: string, memoryDir?: string): Promise<void> {
    await this.lock.run(s.id, async () => {
      const cur = (await this.d.store.getSandboxById(s.id)) ?? s;
      const snap = await this.d.store.getSnapshotById(cur.snapshot_id);
      if (!snap) throw new SandbarError("SNAPSHOT_NOT_FOUND", `the snapshot of sandbox '${cur.name}' no longer exists`);
      const tarUpper = async (): Promise<void> => {
        const p = this.d.rootfs.paths(cur.id);
        await run(["tar", "-C", p.upper, "-c", "-f", dest, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--exclude=./.sandbar", "."]);
      };
      if (memoryDir !== undefined) this.assertCheckpointable(cur);
      if (cur.status === "ready") {
        const runtime = this.runtimeOf(cur);
        const cid = this.containerId(cur.id);
        for (let attempt = 0; ; attempt++) {
          if (memoryDir !== undefined) await this.closeIdleConnections(cur.id, attempt);
          const started = Date.now();
          await runtime.pause(cid);
          try {
            // Files and memory from the same frozen instant: the restored processes find the
            // files exactly as they left them.
            await tarUpper();
            if (memoryDir !== undefined) await runtime.checkpoint(cid, memoryDir);
            break;
          } catch (e) {
            if (memoryDir === undefined || !this.retryCheckpoint(e, attempt, cur.id)) throw e;
            await rm(memoryDir, { recursive: true, force: true });
            await mkdir(memoryDir, { recursive: true });
          } finally {
            await runtime.resume(cid);
            this.d.log.info({ sandboxId: cur.id, pausedMs: Date.now() - started, memory: memoryDir !== undefined }, "sandbox paused for a capture");
          }
        }
      } else if (cur.status === "stopped") {
        await this.d.rootfs.mount(cur.id, cur.fs_capacity_bytes, snap.layers.map(digestHex));
        try {
          await tarUpper();
        } finally {
          await this.d.rootfs.unmount(cur.id);
        }
      } else {
        throw new SandbarError("SANDBOX_NOT_READY", `sandbox '${cur.name}' is ${cur.status}; capture needs a ready or stopped sandbox`);
      }
    });
  }

  /** Memory captures need a running sandbox on a runtime that can checkpoint. */
  assertCheckpointable(s: SandboxRecord): void {
    if (s.status !== "ready") throw new SandbarError("SANDBOX_NOT_READY", `sandbox '${s.name}' is ${s.status}; a capture with memory needs a running sandbox`);
    if (!this.runtimeOf(s).canCheckpoint) throw validationError("include_memory", `sandbox '${s.name}' runs on ${s.runtime}, which cannot save memory; capture without include_memory`);
  }

  /** The agent of a ready sandbox in this workspace; records activity. */
  async agentFor(workspaceId: string, id: string): Promise<{ sandbox: SandboxRecord; agent: AgentClient }> {
    let s = await this.d.store.getSandbox(workspaceId, id);
    if (!s || s.id !== id) throw new SandbarError("SANDBOX_NOT_FOUND", `sandbox '${id}' not found`);
    if (s.status === "stopped") {
      // The clients expect the platform to resume a stopped sandbox on demand.
      s = await this.start(workspaceId, s.id, 60);
    } else if (s.status === "provisioning" && this.boots.has(s.id)) {
      await this.boots.get(s.id)?.catch(() => undefined);
      s = (await this.d.store.getSandboxById(s.id)) ?? s;
    }
    if (s.status !== "ready") throw new SandbarError("SANDBOX_NOT_READY", `sandbox '${s.name}' is ${s.status}`);
    let agent = this.agents.get(s.id);
    if (!agent) {
      if (s.net_index === null) throw new SandbarError("SANDBOX_NOT_READY", `sandbox '${s.name}' has no network`);
      agent = new AgentClient(blockAt(this.d.config.subnet, s.net_index).sandboxIp, this.d.config.agentPort, s.agent_token);
      this.agents.set(s.id, agent);
    }
    this.touch(s.id);
    return { sandbox: s, agent };
  }

  /** Record data-plane activity (at most every few seconds per sandbox, in scaled time). */
  touch(id: string): void {
    const now = Date.now();
    if (now - (this.lastTouch.get(id) ?? 0) < 5000 / this.d.config.timeScale) return;
    this.lastTouch.set(id, now);
    void this.d.store.updateSandbox(id, { last_active_at: new Date(now).toISOString() }).catch(() => undefined);
  }

  /**
   * After a (re)start: adopt sandboxes whose container still runs and whose agent
   * answers; stop the rest with their files kept; fail half-created ones.
   */
  async recover(): Promise<void> {
    for (const s of await this.d.store.listAllSandboxes()) {
      try {
        await this.recoverOne(s);
      } catch (e) {
        // One sandbox that cannot be cleaned must not keep the server down.
        this.d.log.error({ sandboxId: s.id, err: e }, "recovery of sandbox failed");
      }
    }
    await this.reconcile();
  }

  private async recoverOne(s: SandboxRecord): Promise<void> {
    const log = this.d.log.child({ sandboxId: s.id });
    if (s.status === "ready") {
      let state = await this.runtimeOf(s).state(this.containerId(s.id));
      if (state === "paused") {
        // The server died during a capture, between pause and resume.
        await this.runtimeOf(s).resume(this.containerId(s.id)).catch(() => undefined);
        state = await this.runtimeOf(s).state(this.containerId(s.id));
      }
      const agent = s.net_index !== null ? new AgentClient(blockAt(this.d.config.subnet, s.net_index).sandboxIp, this.d.config.agentPort, s.agent_token) : undefined;
      if (state === "running" && agent && s.net_index !== null && (await agent.health(2000))) {
        // The DNS proxy listens on a new port after a restart: rewrite the sandbox's rules.
        await this.d.network.applyPolicy(s.id, blockAt(this.d.config.subnet, s.net_index), s.network_policy);
        this.agents.set(s.id, agent);
        log.info("sandbox adopted");
        return;
      }
      agent?.close("the sandbox is not running");
      await this.releaseCompute(s);
      const now = nowIso();
      await this.d.store.updateSandbox(s.id, { status: "stopped", stopped_at: now, status_message: "stopped while the server was down; files kept", updated_at: now });
      log.warn({ state }, "sandbox found dead; marked stopped");
    } else if (s.status === "provisioning") {
      await this.releaseCompute(s);
      // A start of a stopped sandbox keeps its files and can simply be started again.
      const wasStopped = s.stopped_at !== null;
      await this.d.store.updateSandbox(s.id, {
        status: wasStopped ? "stopped" : "failed",
        status_message: wasStopped ? "the server restarted while the sandbox was starting; files kept" : "server restarted while the sandbox was starting",
        updated_at: nowIso(),
      });
    } else if (s.status === "deleting") {
      await this.releaseCompute(s);
      await this.d.rootfs.destroy(s.id);
      await this.d.store.deleteSandbox(s.id);
    } else {
      // stopped / failed: nothing may run or stay mounted.
      await this.releaseCompute(s);
      // A save of memory the server died in the middle of.
      if (!s.memory_preserved) await rm(this.savedMemoryDir(s.id), { recursive: true, force: true });
    }
  }

  /** Remove host resources of this instance that no sandbox record claims. */
  async reconcile(): Promise<void> {
    const known = new Set((await this.d.store.listAllSandboxes()).map((s) => s.id));
    const prefix = `sandbar-${this.d.instanceTag}-`;
    for (const runtime of Object.values(this.d.runtimes)) {
      for (const cid of await runtime.list()) {
        if (cid.startsWith(prefix) && !known.has(cid.slice(prefix.length))) {
          this.d.log.warn({ container: cid, runtime: runtime.name }, "removing unowned container");
          await runtime.remove(cid);
        }
      }
    }
    for (const id of await this.d.network.listSandboxIds()) {
      if (!known.has(id)) {
        this.d.log.warn({ sandboxId: id }, "removing unowned network namespace");
        await this.d.network.destroy(id);
      }
    }
    for (const id of await this.d.rootfs.listIds()) {
      if (!known.has(id)) {
        this.d.log.warn({ sandboxId: id }, "removing unowned sandbox storage");
        await this.d.rootfs.destroy(id);
      }
    }
  }

  /**
   * Watch running sandboxes: one whose container died (under gVisor, most often because
   * it used more than mem_bytes and the host killed the whole sandbox) is stopped with
   * its files kept, and requests waiting on it fail at once instead of timing out.
   */
  startMonitor(intervalMs = 2000): void {
    if (this.monitor) return;
    const tick = async (): Promise<void> => {
      const ready = (await this.d.store.listAllSandboxes()).filter((s) => s.status === "ready" && !this.boots.has(s.id));
      if (ready.length === 0) return;
      const states = new Map<string, string>();
      for (const name of new Set(ready.map((s) => this.runtimeOf(s).name))) {
        for (const [id, st] of await this.d.runtimes[name].states()) states.set(id, st);
      }
      for (const s of ready) {
        const state = states.get(this.containerId(s.id)) ?? "missing";
        // Paused: a capture is copying its files right now.
        if (state === "running" || state === "paused") continue;
        await this.lock.run(s.id, async () => {
          const cur = await this.d.store.getSandboxById(s.id);
          if (cur?.status !== "ready") return;
          // The list above may predate a stop and start that happened meanwhile: ask again.
          const stateNow = await this.runtimeOf(cur).state(this.containerId(s.id));
          if (stateNow === "running" || stateNow === "paused") return;
          const message = "the sandbox stopped unexpectedly (most often: memory use beyond mem_bytes); files are kept, start it again";
          this.d.log.warn({ sandboxId: s.id, state }, "sandbox died");
          await this.releaseCompute(cur, message);
          const now = nowIso();
          await this.d.store.updateSandbox(s.id, { status: "stopped", stopped_at: now, status_message: message, updated_at: now });
        });
      }
    };
    this.monitor = setInterval(() => {
      if (this.ticking) return;
      this.ticking = true;
      tick()
        .catch((e: unknown) => this.d.log.error({ err: e }, "sandbox monitor failed"))
        .finally(() => {
          this.ticking = false;
        });
    }, intervalMs);
    this.monitor.unref();
  }

  /** Stop watching and wait for boots in flight (shutdown). */
  async drain(): Promise<void> {
    if (this.monitor) clearInterval(this.monitor);
    this.monitor = undefined;
    await Promise.allSettled([...this.boots.values()]);
  }
}

/** `runsc restore` itself failed (as opposed to the rest of a boot). */
class RestoreFailedError extends Error {
  constructor(message: string) {
    super(`restoring the memory image failed: ${message}`);
    this.name = "RestoreFailedError";
  }
}
