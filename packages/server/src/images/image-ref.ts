/** A parsed, normalised image reference (docker.io short names expanded). */
export interface ImageRef {
  /** Registry host[:port]. */
  registry: string;
  /** Repository path within the registry. */
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
  /** `registry/repository[:tag][@digest]`, what skopeo is given after `docker://`. */
  canonical: string;
}

const DOCKER_HUB = "docker.io";
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$/;

/** Thrown for a reference that is not a valid image name. */
export class BadReferenceError extends Error {
  constructor(ref: string, why: string) {
    super(`bad image reference '${ref}': ${why}`);
    this.name = "BadReferenceError";
  }
}

/** Parse `[registry/]repo[:tag][@digest]` the way Docker does. */
export function parseImageRef(input: string): ImageRef {
  const ref = input.trim().replace(/^docker:\/\//, "");
  if (ref === "" || /\s/.test(ref)) throw new BadReferenceError(input, "empty or contains whitespace");
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new BadReferenceError(input, "digest must be sha256:<64 hex>");
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new BadReferenceError(input, `invalid tag '${tag}'`);
  }
  const parts = rest.split("/");
  let registry = DOCKER_HUB;
  const first = parts[0] ?? "";
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["))) {
    registry = first;
    parts.shift();
    if (!HOST.test(registry)) throw new BadReferenceError(input, `invalid registry host '${registry}'`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift("library");
  for (const p of parts) {
    if (!COMPONENT.test(p)) throw new BadReferenceError(input, `invalid repository component '${p}'`);
  }
  const repository = parts.join("/");
  if (repository.length > 255) throw new BadReferenceError(input, "repository name too long");
  if (!tag && !digest) tag = "latest";
  const canonical = `${registry}/${repository}${tag ? `:${tag}` : ""}${digest ? `@${digest}` : ""}`;
  return { registry, repository, tag, digest, canonical };
}

/** Registries on loopback speak plain HTTP by default, as with Docker. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
