/**
 * Real OCI test images, built on this machine from Debian packages and cached outside the clone.
 *
 * Each image is an OCI layout at `${cacheRoot}/images/${name}-${hash12}` (tag "latest"), where
 * the hash covers the recipe below, so editing a recipe or RECIPE_VERSION builds a new image and
 * an unchanged recipe is a directory lookup. A build happens in a `.tmp-*` directory beside the
 * cache entry and is renamed into place only when complete, under a per-entry lock, so a killed
 * build leaves no half image and parallel test files build each image once.
 */
import { createHash, randomBytes } from "node:crypto";
import { access, chmod, constants, copyFile, mkdir, readdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

import { errnoCode, processAlive, withFileLock } from "./file-lock.js";
import { DEFAULT_TAG, appendLayerFromDir, packRootfs, requireRoot } from "./oci-build.js";
import { readLayerDigests } from "./oci-layout.js";
import { removeTree } from "./remove-tree.js";
import { runCommand } from "./run-command.js";

export { buildImageFromRootfs } from "./oci-build.js";
export type { BuildImageOptions, BuiltImage } from "./oci-build.js";

export type TestImageName = "busybox" | "python" | "python-extra" | "databases";

export interface TestImage {
  layoutDir: string;
  tag: string;
  name: TestImageName;
  layerDigests: string[];
}

/** Bump to rebuild every cached image, e.g. after changing how images are packed. */
const RECIPE_VERSION = 1;

const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Everything that shapes the busybox image; it is hashed into the cache key. */
const BUSYBOX = {
  debPackage: "busybox-static",
  files: {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "",
  },
  dirs: { bin: 0o755, etc: 0o755, tmp: 0o1777, root: 0o700, dev: 0o755, proc: 0o755, sys: 0o755 },
  env: [DEFAULT_PATH],
  cmd: ["/bin/sh"],
} as const;

const PYTHON = {
  suite: "bookworm",
  variant: "minbase",
  // "python3", not just "python3-minimal": the minimal package lacks json, asyncio, http.server
  // and urllib, which sandbox tests reach for (python3 -m http.server). Costs ~30 MB unpacked.
  include: ["python3", "bash"],
  // As in Debian's slim images: docs, man pages and translations are dead weight for tests.
  dpkgOptions: [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
  ],
  env: [DEFAULT_PATH, "LANG=C.UTF-8"],
  cmd: ["/usr/bin/python3"],
} as const;

/** PostgreSQL and Redis from Debian, for tunnel tests (the seed's Postgres example). */
const DATABASES = {
  ...PYTHON,
  include: ["postgresql-15", "redis-server", "bash", "procps"],
  cmd: ["/bin/bash"],
  check: "usr/lib/postgresql/15/bin/postgres",
} as const;

const PYTHON_EXTRA = {
  files: {
    "opt/extra/hello.txt": { content: "extra\n", mode: 0o644 },
    "usr/local/bin/hello": { content: '#!/bin/sh\necho "hello from extra"\n', mode: 0o755 },
  },
} as const;

interface BuildContext {
  /** Scratch directory, removed after the build; on the cache's filesystem. */
  workDir: string;
  /** Where the recipe must create the OCI layout (does not exist yet). */
  layoutDir: string;
  /** The built base image, for recipes that have one. */
  base: TestImage | undefined;
}

interface Recipe {
  spec: unknown;
  base?: TestImageName;
  build(context: BuildContext): Promise<void>;
}

const RECIPES: Record<TestImageName, Recipe> = {
  busybox: { spec: BUSYBOX, build: buildBusybox },
  python: { spec: PYTHON, build: buildPython },
  "python-extra": { spec: PYTHON_EXTRA, base: "python", build: buildPythonExtra },
  databases: { spec: DATABASES, build: (c) => buildDebian(c, "databases", { ...DATABASES }) },
};

export function testCacheRoot(): string {
  return process.env["SANDBAR_TEST_CACHE"] ?? "/var/cache/sandbar-test";
}

/** Memo per process (per worker thread): concurrent callers share one build or lookup. */
const images = new Map<TestImageName, Promise<TestImage>>();

/** Returns the cached image, building it first if this recipe has never been built here. */
export async function testImage(name: TestImageName): Promise<TestImage> {
  let image = images.get(name);
  if (image === undefined) {
    image = ensureImage(name);
    images.set(name, image);
    // A failed build must not poison later calls.
    image.catch(() => images.delete(name));
  }
  return image;
}

/** 12 hex chars of the recipe hash, which includes the base image's hash. */
export function recipeHash(name: TestImageName): string {
  const recipe = RECIPES[name];
  const input = JSON.stringify({
    version: RECIPE_VERSION,
    arch: process.arch,
    name,
    spec: recipe.spec,
    base: recipe.base === undefined ? null : recipeHash(recipe.base),
  });
  return createHash("sha256").update(input).digest("hex").slice(0, 12);
}

/** The image if this recipe is already in the cache; never builds. */
export async function findCachedTestImage(name: TestImageName): Promise<TestImage | undefined> {
  return readCached(name, cacheEntry(name).finalDir);
}

function cacheEntry(name: TestImageName): { imagesDir: string; key: string; finalDir: string } {
  const imagesDir = join(testCacheRoot(), "images");
  const key = `${name}-${recipeHash(name)}`;
  return { imagesDir, key, finalDir: join(imagesDir, key) };
}

async function ensureImage(name: TestImageName): Promise<TestImage> {
  const recipe = RECIPES[name];
  // Resolve the base outside our lock so locks are never nested.
  const base = recipe.base === undefined ? undefined : await testImage(recipe.base);
  const { imagesDir, key, finalDir } = cacheEntry(name);

  const cached = await readCached(name, finalDir);
  if (cached !== undefined) return cached;

  requireRoot();
  await mkdir(imagesDir, { recursive: true });
  return withFileLock(join(imagesDir, `${key}.lock`), async () => {
    const builtMeanwhile = await readCached(name, finalDir);
    if (builtMeanwhile !== undefined) return builtMeanwhile;
    await removeAbandonedWorkDirs(imagesDir, key);
    const workDir = join(imagesDir, `.tmp-${key}-${process.pid}-${randomBytes(4).toString("hex")}`);
    await mkdir(workDir);
    try {
      const layoutDir = join(workDir, "layout");
      await recipe.build({ workDir, layoutDir, base });
      await publish(layoutDir, finalDir);
    } finally {
      await removeTree(workDir);
    }
    const published = await readCached(name, finalDir);
    if (published === undefined) throw new Error(`${finalDir} vanished right after it was built`);
    return published;
  });
}

async function readCached(name: TestImageName, layoutDir: string): Promise<TestImage | undefined> {
  try {
    return { layoutDir, tag: DEFAULT_TAG, name, layerDigests: await readLayerDigests(layoutDir, DEFAULT_TAG) };
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    // Entries appear only by an atomic rename of a complete layout, so this is outside damage.
    throw new Error(`cached test image ${layoutDir} is unreadable; delete it to rebuild`, { cause: error });
  }
}

/** Atomic on one filesystem; losing a race to an identical build is fine. */
async function publish(layoutDir: string, finalDir: string): Promise<void> {
  try {
    await rename(layoutDir, finalDir);
  } catch (error) {
    const code = errnoCode(error);
    if (code === "ENOTEMPTY" || code === "EEXIST") return;
    throw error;
  }
}

/** Work directories of builds whose process died (killed test run, machine reset). */
async function removeAbandonedWorkDirs(imagesDir: string, key: string): Promise<void> {
  const prefix = `.tmp-${key}-`;
  for (const entry of await readdir(imagesDir)) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number.parseInt(entry.slice(prefix.length), 10);
    if (Number.isInteger(pid) && processAlive(pid)) continue;
    await removeTree(join(imagesDir, entry));
  }
}

async function buildBusybox({ workDir, layoutDir }: BuildContext): Promise<void> {
  const deb = await downloadDeb(BUSYBOX.debPackage, join(workDir, "deb"));
  const extracted = join(workDir, "extracted");
  await runCommand("dpkg-deb", ["-x", deb, extracted]);
  const busybox = join(extracted, "bin", "busybox");

  const rootfs = join(workDir, "rootfs");
  await mkdir(rootfs);
  await chmod(rootfs, 0o755);
  for (const [dir, mode] of Object.entries(BUSYBOX.dirs)) {
    await mkdir(join(rootfs, dir));
    // chmod, not mkdir's mode: the umask would strip the sticky and group/other bits.
    await chmod(join(rootfs, dir), mode);
  }
  await copyFile(busybox, join(rootfs, "bin", "busybox"));
  await chmod(join(rootfs, "bin", "busybox"), 0o755);
  // The static binary runs on the host, so no chroot is needed to learn its applets.
  const { stdout } = await runCommand(busybox, ["--list"]);
  for (const applet of stdout.split("\n")) {
    if (applet === "" || applet === "busybox" || applet.includes("/")) continue;
    await symlink("busybox", join(rootfs, "bin", applet));
  }
  for (const [path, content] of Object.entries(BUSYBOX.files)) {
    await writeFile(join(rootfs, path), content);
    await chmod(join(rootfs, path), 0o644);
  }
  await packRootfs(rootfs, layoutDir, { env: [...BUSYBOX.env], cmd: [...BUSYBOX.cmd], createdBy: "sandbar test image: busybox" }, "move");
}

/** `apt-get download` into an empty dir; refreshes the package lists only if that fails. */
async function downloadDeb(pkg: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  try {
    await runCommand("apt-get", ["download", pkg], { cwd: dir });
  } catch {
    await runCommand("apt-get", ["update"]);
    await runCommand("apt-get", ["download", pkg], { cwd: dir });
  }
  const debs = (await readdir(dir)).filter((file) => file.endsWith(".deb"));
  const [deb] = debs;
  if (deb === undefined || debs.length !== 1) throw new Error(`apt-get download ${pkg} left ${debs.length} .deb files`);
  return join(dir, deb);
}

function buildPython(context: BuildContext): Promise<void> {
  return buildDebian(context, "python", { ...PYTHON, check: "usr/bin/python3" });
}

interface DebianSpec {
  suite: string;
  variant: string;
  include: readonly string[];
  dpkgOptions: readonly string[];
  env: readonly string[];
  cmd: readonly string[];
  /** An executable the image must contain. */
  check: string;
}

async function buildDebian({ workDir, layoutDir }: BuildContext, name: string, spec: DebianSpec): Promise<void> {
  const PYTHON = spec;
  const rootfs = join(workDir, "rootfs");
  // In root mode mmdebstrap mounts proc, sys, devpts and the host's /dev/shm into the rootfs. In
  // a private mount namespace those mounts vanish with it even if it is killed mid-build.
  const mmdebstrap = [
    "mmdebstrap",
    `--variant=${PYTHON.variant}`,
    `--include=${PYTHON.include.join(",")}`,
    "--format=directory",
    ...PYTHON.dpkgOptions.map((option) => `--dpkgopt=${option}`),
    PYTHON.suite,
    rootfs,
  ];
  await runCommand("unshare", ["--mount", "--propagation", "private", "--", ...mmdebstrap], { killWithParent: true });
  await tidyDebianRootfs(rootfs);
  await access(join(rootfs, spec.check), constants.X_OK).catch((error: unknown) => {
    throw new Error(`mmdebstrap produced no executable /${spec.check}`, { cause: error });
  });
  await packRootfs(rootfs, layoutDir, { env: [...spec.env], cmd: [...spec.cmd], createdBy: `sandbar test image: ${name}` }, "move");
}

/**
 * Makes an mmdebstrap tree look like a registry image: no package caches, no device nodes (the
 * runtime mounts /dev; nodes in a layer would need CAP_MKNOD to unpack) and none of the build
 * host's identity (mmdebstrap copies the host's /etc/hostname and /etc/resolv.conf).
 */
async function tidyDebianRootfs(rootfs: string): Promise<void> {
  const archives = join(rootfs, "var", "cache", "apt", "archives");
  for (const file of await readdir(archives)) {
    if (file.endsWith(".deb")) await rm(join(archives, file), { force: true });
  }
  await emptyDir(join(rootfs, "var", "lib", "apt", "lists"));
  await emptyDir(join(rootfs, "dev"));
  await rm(join(rootfs, "etc", "resolv.conf"), { force: true });
  await writeFile(join(rootfs, "etc", "hostname"), "");
  await chmod(join(rootfs, "etc", "hostname"), 0o644);
}

async function emptyDir(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(join(dir, entry), { recursive: true, force: true });
}

/**
 * The python layout plus one layer. Copying the layout keeps the first layer's blob, and so its
 * digest, identical to the python image's, which is what layer-sharing tests rely on.
 */
async function buildPythonExtra({ workDir, layoutDir, base }: BuildContext): Promise<void> {
  if (base === undefined) throw new Error("python-extra needs its base image");
  await runCommand("cp", ["-a", "--", base.layoutDir, layoutDir], { killWithParent: true });

  const content = join(workDir, "extra");
  for (const [path, file] of Object.entries(PYTHON_EXTRA.files)) {
    const target = join(content, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, file.content);
    await chmod(target, file.mode);
  }
  // The parent directories become layer entries; fix their modes whatever the umask was.
  // ("X" keeps the executable bit of files that have one.)
  await runCommand("chmod", ["-R", "u=rwX,go=rX", "--", content]);

  const layers = await appendLayerFromDir(layoutDir, DEFAULT_TAG, content, "sandbar test image: python-extra");
  const shared = layers.slice(0, base.layerDigests.length);
  if (layers.length !== base.layerDigests.length + 1 || shared.join() !== base.layerDigests.join()) {
    throw new Error(`python-extra layers ${layers.join()} do not extend python's ${base.layerDigests.join()}`);
  }
}
