/**
 * Reads OCI image layouts (the directories umoci and skopeo's `oci:` transport write): the
 * manifest behind a tag and its layer digests, and the entries of one layer.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { parseJson, requireArray, requireRecord, requireString } from "./json-guards.js";
import { runCommand } from "./run-command.js";

const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export interface OciManifestSummary {
  digest: string;
  configDigest: string;
  layerDigests: string[];
}

/** The path of a blob in a layout; rejects anything that is not a sha256 digest. */
export function blobPath(layoutDir: string, digest: string): string {
  if (!DIGEST_PATTERN.test(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
}

export async function readManifest(layoutDir: string, tag: string): Promise<OciManifestSummary> {
  const indexPath = join(layoutDir, "index.json");
  const index = requireRecord(parseJson(await readFile(indexPath, "utf8"), indexPath), indexPath);
  const descriptors = requireArray(index["manifests"], `${indexPath} manifests`).map((d, i) =>
    requireRecord(d, `${indexPath} manifests[${i}]`),
  );
  const descriptor = descriptors.find((d) => {
    const annotations = d["annotations"];
    return requireRecordOrEmpty(annotations)[REF_NAME_ANNOTATION] === tag;
  });
  if (descriptor === undefined) throw new Error(`${layoutDir} has no tag ${tag}`);
  const digest = requireString(descriptor["digest"], `${indexPath} digest of ${tag}`);

  const manifestPath = blobPath(layoutDir, digest);
  const manifest = requireRecord(parseJson(await readFile(manifestPath, "utf8"), manifestPath), manifestPath);
  const config = requireRecord(manifest["config"], `${manifestPath} config`);
  const layers = requireArray(manifest["layers"], `${manifestPath} layers`);
  return {
    digest,
    configDigest: requireString(config["digest"], `${manifestPath} config.digest`),
    layerDigests: layers.map((layer, i) =>
      requireString(requireRecord(layer, `${manifestPath} layers[${i}]`)["digest"], `${manifestPath} layers[${i}].digest`),
    ),
  };
}

export async function readLayerDigests(layoutDir: string, tag: string): Promise<string[]> {
  return (await readManifest(layoutDir, tag)).layerDigests;
}

/**
 * `tar -tvzf` lines of one gzip layer, for tests that check what a layer holds. GNU tar also
 * rejects a layer without its end-of-archive blocks, which catches tools that write broken tars.
 */
export async function listLayer(layoutDir: string, digest: string): Promise<string[]> {
  const { stdout } = await runCommand("tar", ["-tvzf", blobPath(layoutDir, digest)]);
  return stdout.split("\n").filter((line) => line.length > 0);
}

function requireRecordOrEmpty(value: unknown): Record<string, unknown> {
  return value === undefined ? {} : requireRecord(value, "annotations");
}
