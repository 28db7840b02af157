import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../util/proc.js";
import { mountPoints, umount } from "../util/mounts.js";

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
 * overlay mount over the snapshot's layers. Everything lives under `sandboxes/<id>/`.
 */
export class RootfsManager {
  constructor(
    readonly root: string,
    private readonly layersRoot: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
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
      const tmp = `${p.disk}.new`;
      await run(["truncate", "-s", String(capacityBytes), tmp]);
      // No reserved blocks: the sandbox's root may use the whole capacity.
      await run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", tmp]);
      await run(["mv", tmp, p.disk]);
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

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
