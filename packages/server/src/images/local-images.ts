import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { mkdtemp } from "node:fs/promises";
import { run } from "../util/proc.js";
import { LOCAL_REGISTRY } from "./image-puller.js";

/** The repository-component grammar of image references, so every name is usable in one. */
const NAME = /^(?=.{1,64}$)[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** One image of the local store. */
export interface LocalImage {
  /** What to pass as docker_image: `sandbar.local/NAME:TAG`. */
  reference: string;
  name: string;
  tag: string;
}

/**
 * The server's local image store under `<data-dir>/images/`: OCI layouts that snapshots
 * can be built from without any registry (`sandbar.local/NAME:TAG`). Filled on the
 * server's host by `sandbar image import` and `sandbar image build-debian`.
 */
export class LocalImages {
  constructor(private readonly root: string) {}

  private check(name: string, tag: string): void {
    if (!NAME.test(name)) throw new Error(`bad image name '${name}' (lowercase letters, digits, '.', '_', '-')`);
    if (!TAG.test(tag)) throw new Error(`bad tag '${tag}'`);
  }

  /** Copy an image from any skopeo source (oci:DIR:TAG, oci-archive:FILE, docker-archive:FILE, docker://REF). */
  async import(name: string, source: string, tag = "latest"): Promise<LocalImage> {
    this.check(name, tag);
    await mkdir(this.root, { recursive: true });
    await run(["skopeo", "--insecure-policy", "copy", source, `oci:${join(this.root, name)}:${tag}`]);
    return { reference: `${LOCAL_REGISTRY}/${name}:${tag}`, name, tag };
  }

  /**
   * Build a Debian image from Debian's packages (mmdebstrap minbase plus `packages`), the
   * offline way to a base image with, say, python3.
   */
  async buildDebian(name: string, opts: { packages: string[]; suite?: string; tag?: string; onLog?: (line: string) => void }): Promise<LocalImage> {
    const tag = opts.tag ?? "latest";
    this.check(name, tag);
    for (const p of opts.packages) if (!/^[a-z0-9][a-z0-9+.-]*$/.test(p)) throw new Error(`bad package name '${p}'`);
    const work = await mkdtemp(join(tmpdir(), "sandbar-build-"));
    try {
      const tarball = join(work, "rootfs.tar");
      opts.onLog?.(`mmdebstrap ${opts.suite ?? "bookworm"} with ${opts.packages.join(", ") || "minbase only"}`);
      // A private mount namespace: mmdebstrap's bind mounts (/dev/shm, /proc) never reach the host.
      await run([
        "unshare", "--mount", "--propagation", "private",
        "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=tar",
        ...(opts.packages.length ? [`--include=${opts.packages.join(",")}`] : []),
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--customize-hook=rm -f \"$1\"/etc/hostname \"$1\"/etc/resolv.conf; rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
        opts.suite ?? "bookworm", tarball,
      ]);
      opts.onLog?.("packing the OCI image");
      const layout = join(work, "layout");
      const bundle = join(work, "bundle");
      await run(["umoci", "init", "--layout", layout]);
      await run(["umoci", "new", "--image", `${layout}:${tag}`]);
      await run(["umoci", "unpack", "--image", `${layout}:${tag}`, bundle]);
      await run(["tar", "-x", "-p", "--numeric-owner", "--exclude=./dev/*", "-f", tarball, "-C", join(bundle, "rootfs")]);
      await run(["umoci", "repack", "--image", `${layout}:${tag}`, bundle]);
      await run(["umoci", "config", "--image", `${layout}:${tag}`, `--config.env=${DEFAULT_PATH}`, "--config.env=LANG=C.UTF-8", "--config.cmd=/bin/bash"]);
      return await this.import(name, `oci:${layout}:${tag}`, tag);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async list(): Promise<LocalImage[]> {
    const out: LocalImage[] = [];
    let names: string[] = [];
    try {
      names = await readdir(this.root);
    } catch {
      return out;
    }
    for (const name of names.sort()) {
      try {
        const index = JSON.parse(await readFile(join(this.root, name, "index.json"), "utf8")) as { manifests?: { annotations?: Record<string, string> }[] };
        for (const m of index.manifests ?? []) {
          const tag = m.annotations?.["org.opencontainers.image.ref.name"];
          if (tag) out.push({ reference: `${LOCAL_REGISTRY}/${name}:${tag}`, name, tag });
        }
      } catch {
        // not a layout: ignore
      }
    }
    return out;
  }

  async remove(name: string): Promise<void> {
    this.check(name, "latest");
    await rm(join(this.root, name), { recursive: true, force: true });
  }
}

