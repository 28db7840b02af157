import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import type { ImageRunConfig } from "../store/records.js";
import { ProcError, run } from "../util/proc.js";
import { randomHex } from "../util/ids.js";
import { digestHex, type LayerStore } from "./layer-store.js";
import { isLoopbackRegistry, parseImageRef, type ImageRef } from "./image-ref.js";

/** Credentials for one pull. */
export interface RegistryCredentials {
  username: string;
  password: string;
}

/** What a pull leaves behind: ordered layers in the store and the run config. */
export interface PulledImage {
  ref: ImageRef;
  /** Digest of the manifest (or index) as the registry serves it. */
  digest: string;
  /** Layer diff_ids, lowest first; each is present in the layer store. */
  layers: string[];
  config: ImageRunConfig;
}

/** Registry name of the server's local image store (`sandbar image import|build-debian`). */
export const LOCAL_REGISTRY = "sandbar.local";

/** Why a pull failed, in words a user can act on. */
export class ImagePullError extends Error {
  constructor(
    message: string,
    readonly reason: "not_found" | "auth" | "bad_reference" | "unreachable" | "unsupported" | "other",
  ) {
    super(message);
    this.name = "ImagePullError";
  }
}

interface OciDescriptor {
  mediaType?: string;
  digest: string;
  size?: number;
}

interface OciManifest {
  config: OciDescriptor;
  layers: OciDescriptor[];
}

interface OciImageConfig {
  config?: { Env?: string[]; WorkingDir?: string; User?: string; Entrypoint?: string[] | null; Cmd?: string[] | null };
  rootfs?: { diff_ids?: string[] };
}

export interface PullOptions {
  credentials?: RegistryCredentials;
  /** Called with a short progress line ("copying 2/5 blobs"). */
  onProgress?: (line: string) => void;
}

/**
 * Pulls images with skopeo into a temporary OCI layout and unpacks each layer into
 * the shared layer store. Owner of `tmp/pull-*` directories.
 */
export class ImagePuller {
  constructor(
    private readonly layers: LayerStore,
    private readonly tmpRoot: string,
    private readonly policyPath: string,
    private readonly insecureRegistries: readonly string[],
    /** Operator-managed OCI layouts, one per image name, served as `sandbar.local/NAME:TAG`. */
    private readonly localImagesRoot: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.tmpRoot, { recursive: true });
    // Pulls cut short by a crash leave their temporary layouts (and registry auth files) behind.
    for (const name of await readdir(this.tmpRoot)) {
      if (name.startsWith("pull-") || name.startsWith("capture-") || name.startsWith("auth-")) await rm(join(this.tmpRoot, name), { recursive: true, force: true });
    }
    // skopeo insists on a signature policy; we verify by digest instead.
    await writeFile(this.policyPath, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  }

  private tlsFlags(ref: ImageRef, flag: "--tls-verify" | "--src-tls-verify"): string[] {
    // A loopback registry is taken as plain HTTP unless the host trusts a CA for it
    // (/etc/containers/certs.d/<host:port>/, where skopeo looks): then TLS is verified.
    const trustedCa = existsSync(join(CERTS_D, ref.registry));
    const insecure = (isLoopbackRegistry(ref.registry) && !trustedCa) || this.insecureRegistries.includes(ref.registry);
    return insecure ? [`${flag}=false`] : [];
  }

  async pull(image: string, opts: PullOptions = {}): Promise<PulledImage> {
    let ref: ImageRef;
    try {
      ref = parseImageRef(image);
    } catch (e) {
      throw new ImagePullError((e as Error).message, "bad_reference");
    }
    if (ref.registry === LOCAL_REGISTRY) return this.pullLocal(ref, opts.onProgress);
    // Credentials go to skopeo in a 0600 auth file, never on its command line (ps would show them).
    const authFile = opts.credentials ? await this.writeAuthFile(ref.registry, opts.credentials) : undefined;
    try {
      return await this.pullRemote(ref, opts, authFile);
    } finally {
      if (authFile) await rm(authFile, { force: true });
    }
  }

  private async writeAuthFile(registry: string, c: RegistryCredentials): Promise<string> {
    const path = join(this.tmpRoot, `auth-${randomHex(8)}.json`);
    const auth = Buffer.from(`${c.username}:${c.password}`).toString("base64");
    await writeFile(path, JSON.stringify({ auths: { [registry]: { auth } } }), { mode: 0o600 });
    return path;
  }

  private async pullRemote(ref: ImageRef, opts: PullOptions, authFile: string | undefined): Promise<PulledImage> {
    const creds = authFile ? [`--authfile=${authFile}`] : [];
    const srcCreds = authFile ? [`--src-authfile=${authFile}`] : [];
    const base = ["skopeo", "--policy", this.policyPath];
    opts.onProgress?.(`resolving ${ref.canonical}`);
    let rawManifest: string;
    try {
      rawManifest = (await run([...base, "inspect", "--raw", ...this.tlsFlags(ref, "--tls-verify"), ...creds, `docker://${ref.canonical}`], { timeoutMs: 120_000 })).stdout;
    } catch (e) {
      throw classify(e, ref);
    }
    const digest = `sha256:${createHash("sha256").update(rawManifest).digest("hex")}`;
    const dir = join(this.tmpRoot, `pull-${randomHex(6)}`);
    try {
      await this.copy([...base, "copy", ...this.tlsFlags(ref, "--src-tls-verify"), ...srcCreds, `docker://${ref.canonical}`, `oci:${dir}:image`], ref, opts.onProgress);
      return await this.unpackLayout(dir, ref, digest, opts.onProgress);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Images of the local store: no network at all (offline quick start, imports). */
  private async pullLocal(ref: ImageRef, onProgress?: (line: string) => void): Promise<PulledImage> {
    const layout = join(this.localImagesRoot, ref.repository.replace(/\//g, "_"));
    const source = `oci:${layout}:${ref.tag ?? "latest"}`;
    const base = ["skopeo", "--policy", this.policyPath];
    let rawManifest: string;
    try {
      rawManifest = (await run([...base, "inspect", "--raw", source])).stdout;
    } catch {
      throw new ImagePullError(`image not found: ${ref.canonical} (no such image in the local store; see 'sandbar image ls')`, "not_found");
    }
    const digest = `sha256:${createHash("sha256").update(rawManifest).digest("hex")}`;
    const dir = join(this.tmpRoot, `pull-${randomHex(6)}`);
    try {
      await this.copy([...base, "copy", source, `oci:${dir}:image`], ref, onProgress);
      return await this.unpackLayout(dir, ref, digest, onProgress);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  private copy(argv: string[], ref: ImageRef, onProgress?: (line: string) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const [file, ...args] = argv;
      const child = spawn(file as string, args, { stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      let copied = 0;
      child.stdout.on("data", (b: Buffer) => {
        for (const line of b.toString().split("\n")) {
          if (line.startsWith("Copying blob")) onProgress?.(`copying blob ${++copied}`);
        }
      });
      child.stderr.on("data", (b: Buffer) => {
        stderr += b.toString();
        if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), 30 * 60_000);
      child.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(classify(new ProcError(argv, { code: code ?? -1, stdout: "", stderr }), ref));
      });
    });
  }

  private async unpackLayout(dir: string, ref: ImageRef, digest: string, onProgress?: (line: string) => void): Promise<PulledImage> {
    const blob = (d: string): string => join(dir, "blobs", "sha256", digestHex(d));
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests?: OciDescriptor[] };
    const top = index.manifests?.[0];
    if (!top) throw new ImagePullError(`image ${ref.canonical} has no manifest`, "other");
    const manifest = JSON.parse(await readFile(blob(top.digest), "utf8")) as OciManifest;
    const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8")) as OciImageConfig;
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== manifest.layers.length) {
      throw new ImagePullError(`image ${ref.canonical}: ${manifest.layers.length} layers but ${diffIds.length} diff_ids`, "unsupported");
    }
    for (let i = 0; i < manifest.layers.length; i++) {
      const layer = manifest.layers[i] as OciDescriptor;
      const diffId = diffIds[i] as string;
      if (layer.mediaType?.includes("foreign") || layer.mediaType?.includes("nondistributable")) {
        throw new ImagePullError(`image ${ref.canonical} uses foreign layers, which are not supported`, "unsupported");
      }
      onProgress?.(`unpacking layer ${i + 1}/${manifest.layers.length}`);
      await this.layers.ingest(diffId, blob(layer.digest));
    }
    const c = config.config ?? {};
    return {
      ref,
      digest,
      layers: diffIds,
      config: {
        env: c.Env ?? [],
        workingDir: c.WorkingDir || "/",
        user: c.User ?? "",
        entrypoint: c.Entrypoint ?? [],
        cmd: c.Cmd ?? [],
      },
    };
  }
}

/** Where containers/image (skopeo) looks for per-registry CA certificates. */
const CERTS_D = "/etc/containers/certs.d";

/** Turn skopeo's error text into a cause a user can act on. */
function classify(e: unknown, ref: ImageRef): ImagePullError {
  const text = e instanceof ProcError ? e.result.stderr : e instanceof Error ? e.message : String(e);
  const t = text.toLowerCase();
  if (/manifest unknown|name unknown|not found|no such image|repository .* not found|404/.test(t)) {
    return new ImagePullError(`image not found: ${ref.canonical}`, "not_found");
  }
  if (/unauthorized|authentication required|denied|401|403|invalid username\/password/.test(t)) {
    return new ImagePullError(`registry ${ref.registry} refused authentication for ${ref.canonical}`, "auth");
  }
  if (/invalid reference|invalid image name|repository name must/.test(t)) {
    return new ImagePullError(`bad image reference: ${ref.canonical}`, "bad_reference");
  }
  if (/connection refused|no such host|i\/o timeout|dial tcp|network is unreachable|no route to host|tls handshake|server gave http response|timeout/.test(t)) {
    return new ImagePullError(`registry unreachable: ${ref.registry} (${lastLine(text)})`, "unreachable");
  }
  return new ImagePullError(`pull of ${ref.canonical} failed: ${lastLine(text)}`, "other");
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n").filter(Boolean);
  return (lines[lines.length - 1] ?? "").slice(0, 500);
}
