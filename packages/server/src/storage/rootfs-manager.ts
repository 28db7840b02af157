import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { run } from "../util/proc.js";
import { mountPoints, umount } from "../util/mounts.js";
import { exists } from "../util/fs.js";

/** Formatted empty disk images kept ready per capacity, so a first boot skips mkfs. */
export const DEFAULT_SPARE_DISKS = 2;
/** Spares are kept for this many capacities at most (the ones used last). */
const MAX_SPARE_CAPACITIES = 3;
/** A refill starts this long after the last claim, so it does not compete with that boot. */
const REFILL_DELAY_MS = 300;
/**
 * How disks are formatted. No reserved blocks: the sandbox's root may use the whole capacity.
 * Inode tables and journal are initialised lazily by the kernel, so mkfs writes little.
 */
const MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"];
/** Spare file names: `<FORMAT>-<capacity>-<hex>.img`; a new format makes old spares unusable. */
const FORMAT = "ext4v1";
const SPARE_NAME = new RegExp(`^${FORMAT}-(\\d+)-[0-9a-f]+\\.img$`);

/** Paths of one sandbox's storage. */
export interface SandboxPaths {
  dir: string;
  /** Sparse ext4 image holding the writable layer; its size is fs_capacity_bytes. */
  disk: string;
  /** Where the disk image is mounted (loop). */
  diskMount: string;
  upper: string;
  work: string;
  /** The overlay mount that is the sandbox's root filesystem. */
  rootfs: string;
  bundle: string;
}

/**
 * Owner of each sandbox's writable layer: the ext4 disk image, its loop mount, and the
 * overlay mount over the snapshot's layers. Everything of a sandbox lives under
 * `sandboxes/<id>/`. Spare disks (formatted, empty, never mounted) wait in `spare-disks/`
 * beside it; a first boot renames one into place. They are plain files of a few hundred KiB
 * (sparse) that stay valid across restarts.
 */
export class RootfsManager {
  private readonly spareDir: string;
  /** Ready spare images by capacity, and when each capacity was last asked for. */
  private readonly spares = new Map<number, string[]>();
  private readonly lastUsed = new Map<number, number>();
  private refilling: Promise<void> | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly root: string,
    private readonly layersRoot: string,
    /** How many spare disks to keep per capacity (0: none; every first boot formats its own). */
    private readonly spareCount = DEFAULT_SPARE_DISKS,
  ) {
    this.spareDir = join(dirname(root), "spare-disks");
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await mkdir(this.spareDir, { recursive: true });
    for (const name of await readdir(this.spareDir)) {
      const m = SPARE_NAME.exec(name);
      // Half-made ones (a crash while formatting) and other formats go.
      if (!m) {
        await rm(join(this.spareDir, name), { force: true });
        continue;
      }
      const cap = Number(m[1]);
      this.spares.set(cap, [...(this.spares.get(cap) ?? []), join(this.spareDir, name)]);
      this.lastUsed.set(cap, 0);
    }
  }

  /** Make no more spares (shutdown); the ready ones stay for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    this.refillTimer = undefined;
    await this.refilling;
  }

  paths(id: string): SandboxPaths {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`bad sandbox id ${id}`);
    const dir = join(this.root, id);
    return {
      dir,
      disk: join(dir, "disk.img"),
      diskMount: join(dir, "disk"),
      upper: join(dir, "disk", "upper"),
      work: join(dir, "disk", "work"),
      rootfs: join(dir, "rootfs"),
      bundle: join(dir, "bundle"),
    };
  }

  /** Create (first time) and mount the sandbox's disk and overlay. Idempotent. */
  async mount(id: string, capacityBytes: number, layerHexes: readonly string[]): Promise<SandboxPaths> {
    const p = this.paths(id);
    await mkdir(p.dir, { recursive: true });
    await mkdir(p.diskMount, { recursive: true });
    await mkdir(p.rootfs, { recursive: true });
    await mkdir(p.bundle, { recursive: true });
    if (!(await exists(p.disk))) {
      if (!(await this.claimSpare(capacityBytes, p.disk))) {
        const tmp = `${p.disk}.new`;
        await format(tmp, capacityBytes);
        await rename(tmp, p.disk);
      }
      this.scheduleRefill(capacityBytes);
    }
    const mounted = await mountPoints();
    if (!mounted.has(p.diskMount)) await run(["mount", "-o", "loop,noatime", p.disk, p.diskMount]);
    await mkdir(p.upper, { recursive: true });
    await mkdir(p.work, { recursive: true });
    if (!mounted.has(p.rootfs)) {
      // Lower dirs are given relative to the layer store (mount runs there) so that
      // images with many layers stay under the kernel's one-page option limit.
      const lower = [...layerHexes].reverse().join(":");
      await run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${p.upper},workdir=${p.work},index=off,metacopy=off`, p.rootfs], {
        cwd: this.layersRoot,
      });
    }
    return p;
  }

  /** Move a ready spare of this capacity to `dest`; false when there is none. */
  private async claimSpare(capacityBytes: number, dest: string): Promise<boolean> {
    this.lastUsed.set(capacityBytes, Date.now());
    const list = this.spares.get(capacityBytes);
    for (let spare = list?.shift(); spare !== undefined; spare = list?.shift()) {
      try {
        await rename(spare, dest);
        return true;
      } catch {
        // Gone (removed by hand): try the next one.
      }
    }
    return false;
  }

  /** Format spares up to `spareCount` for the capacities in use, soon, in the background. */
  private scheduleRefill(capacityBytes: number): void {
    if (this.closed || this.spareCount <= 0) return;
    this.lastUsed.set(capacityBytes, Date.now());
    if (this.refillTimer) clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      if (this.refilling) return;
      this.refilling = this.refill()
        .catch((e: unknown) => {
          // Spares are an optimisation: a failure here only means the next boot formats.
          void e;
        })
        .finally(() => {
          this.refilling = undefined;
        });
    }, REFILL_DELAY_MS);
    this.refillTimer.unref();
  }

  private async refill(): Promise<void> {
    // Only the capacities asked for last keep spares.
    const caps = [...this.lastUsed.entries()].sort((a, b) => b[1] - a[1]).map(([cap]) => cap);
    for (const cap of caps.slice(MAX_SPARE_CAPACITIES)) {
      for (const spare of this.spares.get(cap) ?? []) await rm(spare, { force: true });
      this.spares.delete(cap);
      this.lastUsed.delete(cap);
    }
    for (const cap of caps.slice(0, MAX_SPARE_CAPACITIES)) {
      const list = this.spares.get(cap) ?? [];
      this.spares.set(cap, list);
      while (!this.closed && list.length < this.spareCount) {
        const hex = randomBytes(6).toString("hex");
        const tmp = join(this.spareDir, `.tmp-${hex}`);
        try {
          await format(tmp, cap, 10);
          const name = join(this.spareDir, `${FORMAT}-${cap}-${hex}.img`);
          await rename(tmp, name);
          list.push(name);
        } catch (e) {
          await rm(tmp, { force: true });
          throw e;
        }
      }
    }
  }

  /** Unmount overlay and disk (the loop device goes with it); files stay. Idempotent. */
  async unmount(id: string): Promise<void> {
    const p = this.paths(id);
    const mounted = await mountPoints();
    for (const target of [p.rootfs, p.diskMount]) {
      if (mounted.has(target)) await umount(target);
    }
  }

  /** Unmount and delete everything of the sandbox. Idempotent. */
  async destroy(id: string): Promise<void> {
    await this.unmount(id);
    await rm(this.paths(id).dir, { recursive: true, force: true });
  }

  /** Sandbox ids that have a directory here. */
  async listIds(): Promise<string[]> {
    try {
      return (await readdir(this.root)).filter((n) => /^[0-9a-f-]{36}$/.test(n));
    } catch {
      return [];
    }
  }
}

/** A sparse file of `bytes` formatted as an empty ext4 filesystem. */
async function format(path: string, bytes: number, niceness = 0): Promise<void> {
  const f = await open(path, "w");
  try {
    await f.truncate(bytes);
  } finally {
    await f.close();
  }
  await run(niceness ? ["nice", "-n", String(niceness), ...MKFS, path] : [...MKFS, path]);
}
