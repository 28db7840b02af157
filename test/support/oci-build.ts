/**
 * Builds OCI image layouts from plain directories with umoci, so tests get real images without
 * a Docker engine or a public registry.
 *
 * umoci 0.4.7 (Debian bookworm) has a bug in `umoci insert`: the layer tar it writes lacks the
 * end-of-archive blocks (umoci issue #436, fixed after 0.4.7), which GNU tar and Python reject.
 * So single-layer images go through unpack + repack, and extra layers are tars made by GNU tar
 * and appended verbatim with `umoci raw add-layer`.
 */
import { mkdir, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

import { errnoCode } from "./file-lock.js";
import { readLayerDigests } from "./oci-layout.js";
import { runCommand } from "./run-command.js";

export interface ImageConfigOptions {
  /** Full environment entries ("KEY=value"); replaces whatever the image had. */
  env?: string[];
  cmd?: string[];
  workingDir?: string;
}

export interface BuildImageOptions extends ImageConfigOptions {
  /** Tag inside the layout; "latest" unless given. */
  tag?: string;
  /** Recorded as the layer's history created_by. */
  createdBy?: string;
}

export interface BuiltImage {
  layoutDir: string;
  tag: string;
  layerDigests: string[];
}

export const DEFAULT_TAG = "latest";

/**
 * Makes a new single-layer OCI layout at `outLayoutDir` (which must not exist yet) holding a copy
 * of `rootfsDir`. Ownership, modes, symlinks, hardlinks and device nodes are kept, so run as root.
 */
export async function buildImageFromRootfs(
  rootfsDir: string,
  outLayoutDir: string,
  options: BuildImageOptions = {},
): Promise<BuiltImage> {
  return packRootfs(rootfsDir, outLayoutDir, options, "copy");
}

/**
 * Like buildImageFromRootfs; with "move" the rootfs directory is renamed into the bundle instead
 * of copied (it must be on the same filesystem as outLayoutDir), which saves copying a big tree
 * that the caller made only for this image.
 */
export async function packRootfs(
  rootfsDir: string,
  outLayoutDir: string,
  options: BuildImageOptions,
  transfer: "copy" | "move",
): Promise<BuiltImage> {
  requireRoot();
  assertUsableInImageRef(outLayoutDir);
  await assertMissing(outLayoutDir);
  const tag = options.tag ?? DEFAULT_TAG;
  const ref = `${outLayoutDir}:${tag}`;
  await mkdir(dirname(outLayoutDir), { recursive: true });
  await umoci(["init", "--layout", outLayoutDir]);
  await umoci(["new", "--image", ref]);

  // The bundle sits beside the layout so a "move" stays a rename on one filesystem.
  const scratch = await mkdtemp(join(dirname(outLayoutDir), ".bundle-"));
  try {
    const bundle = join(scratch, "bundle");
    await umoci(["unpack", "--image", ref, bundle]);
    await fillBundleRootfs(rootfsDir, join(bundle, "rootfs"), transfer);
    await umoci(["repack", ...historyArgs(options.createdBy), "--image", ref, bundle]);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  await configureImage(ref, options);
  // Drops the blobs of the empty image and of each superseded manifest/config.
  await umoci(["gc", "--layout", outLayoutDir]);
  return { layoutDir: outLayoutDir, tag, layerDigests: await readLayerDigests(outLayoutDir, tag) };
}

/**
 * Appends one layer holding the tree under `contentDir` (paths relative to it, e.g. "opt/x") to
 * the tagged image, leaving every existing layer blob untouched. Entries are owned by root.
 */
export async function appendLayerFromDir(
  layoutDir: string,
  tag: string,
  contentDir: string,
  createdBy?: string,
): Promise<string[]> {
  requireRoot();
  const scratch = await mkdtemp(join(dirname(layoutDir), ".layer-"));
  try {
    const tarPath = join(scratch, "layer.tar");
    // "." would add an entry for / that overrides the root directory's metadata in the image.
    const topLevel = (await readdir(contentDir)).sort();
    if (topLevel.length === 0) throw new Error(`${contentDir} is empty: nothing to add as a layer`);
    await runCommand("tar", [
      "--create",
      "--file",
      tarPath,
      "--numeric-owner",
      "--owner=0",
      "--group=0",
      "--sort=name",
      "-C",
      contentDir,
      "--",
      ...topLevel,
    ]);
    await umoci(["raw", "add-layer", ...historyArgs(createdBy), "--image", `${layoutDir}:${tag}`, tarPath]);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  await umoci(["gc", "--layout", layoutDir]);
  return readLayerDigests(layoutDir, tag);
}

export async function configureImage(ref: string, options: ImageConfigOptions): Promise<void> {
  const args: string[] = [];
  if (options.env !== undefined) {
    // Without the clear, umoci merges into the image's existing environment.
    args.push("--clear=config.env", ...options.env.flatMap((entry) => ["--config.env", entry]));
  }
  if (options.cmd !== undefined) {
    args.push("--clear=config.cmd", ...options.cmd.flatMap((part) => ["--config.cmd", part]));
  }
  if (options.workingDir !== undefined) args.push("--config.workingdir", options.workingDir);
  if (args.length === 0) return;
  await umoci(["config", "--no-history", "--image", ref, ...args]);
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error("building test images needs root (umoci keeps file ownership; mmdebstrap runs as root)");
  }
}

async function fillBundleRootfs(rootfsDir: string, target: string, transfer: "copy" | "move"): Promise<void> {
  if (transfer === "move") {
    try {
      // rename(2) may replace an empty directory, which is what unpack of an empty image leaves.
      await rename(rootfsDir, target);
      return;
    } catch (error) {
      if (errnoCode(error) !== "EXDEV") throw error;
    }
  }
  // "src/." copies the root directory's own mode and times onto the existing target too.
  await runCommand("cp", ["-a", "--", `${rootfsDir}/.`, `${target}/`], { killWithParent: true });
}

/** Dies with the test process: a half-done repack only matters to the scratch dir it writes in. */
async function umoci(args: readonly string[]): Promise<void> {
  await runCommand("umoci", args, { killWithParent: true });
}

function historyArgs(createdBy: string | undefined): string[] {
  return createdBy === undefined ? [] : ["--history.created_by", createdBy];
}

/** umoci and skopeo split image references at ":", so a layout path must not contain one. */
export function assertUsableInImageRef(layoutDir: string): void {
  if (layoutDir.includes(":")) throw new Error(`OCI layout path must not contain ":": ${layoutDir}`);
}

async function assertMissing(path: string): Promise<void> {
  try {
    await stat(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return;
    throw error;
  }
  throw new Error(`${path} already exists`);
}
