import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { createHash } from "node:crypto";
import { createGunzip } from "node:zlib";
import { spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { join } from "node:path";
import { run } from "../util/proc.js";
import { randomHex } from "../util/ids.js";

/** Metadata kept beside each unpacked layer. */
interface LayerMeta {
  digest: string;
  size_bytes: number;
  created_at: string;
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** The hex part of a sha256 digest; rejects anything else so paths stay inside the store. */
export function digestHex(digest: string): string {
  const m = DIGEST.exec(digest);
  if (!m?.[1]) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1];
}

/**
 * Content-addressed store of unpacked image layers, shared by every snapshot.
 *
 * Each layer is unpacked once into `layers/<hex>/` (keyed by its uncompressed diff_id)
 * with OCI whiteouts turned into overlayfs whiteouts, so a sandbox's rootfs is an
 * overlay of these directories. Owner of everything under `layers/`.
 */
export class LayerStore {
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(readonly root: string) {}

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    // A crash mid-unpack leaves .tmp-* directories, or a layer directory without its
    // .json marker (written last); nothing refers to either.
    const names = await readdir(this.root);
    const markers = new Set(names.filter((n) => n.endsWith(".json")).map((n) => n.slice(0, -5)));
    for (const name of names) {
      if (name.startsWith(".tmp-") || (/^[a-f0-9]{64}$/.test(name) && !markers.has(name))) {
        await rm(join(this.root, name), { recursive: true, force: true });
      }
    }
  }

  dir(digest: string): string {
    return join(this.root, digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    try {
      await stat(join(this.root, `${digestHex(digest)}.json`));
      return true;
    } catch {
      return false;
    }
  }

  async sizeOf(digest: string): Promise<number> {
    try {
      const meta = JSON.parse(await readFile(join(this.root, `${digestHex(digest)}.json`), "utf8")) as LayerMeta;
      return meta.size_bytes;
    } catch {
      return 0;
    }
  }

  /** Every layer digest present on disk. */
  async list(): Promise<string[]> {
    const names = await readdir(this.root);
    return names.filter((n) => n.endsWith(".json")).map((n) => `sha256:${n.slice(0, -5)}`);
  }

  /**
   * Unpack `blobPath` (a tar, optionally compressed) as layer `diffId`, unless present.
   * Concurrent calls for one digest share the work.
   */
  async ingest(diffId: string, blobPath: string): Promise<boolean> {
    if (await this.has(diffId)) return false;
    const running = this.inflight.get(diffId);
    if (running) {
      await running;
      return false;
    }
    const work = this.unpack(diffId, blobPath);
    this.inflight.set(diffId, work);
    try {
      await work;
      return true;
    } finally {
      this.inflight.delete(diffId);
    }
  }

  private async unpack(diffId: string, blobPath: string): Promise<void> {
    const hex = digestHex(diffId);
    const tmp = join(this.root, `.tmp-${hex.slice(0, 12)}-${randomHex(4)}`);
    await mkdir(tmp, { recursive: true });
    try {
      const actual = await extractVerified(blobPath, tmp);
      if (actual !== diffId) {
        // The store is shared by every workspace: content must match the name it is stored under.
        throw new Error(`layer content ${actual} does not match its diff_id ${diffId}`);
      }
      await convertWhiteouts(tmp);
      const du = await run(["du", "-sb", tmp]);
      const size = Number(du.stdout.split(/\s/)[0] ?? 0);
      const final = join(this.root, hex);
      await rm(final, { recursive: true, force: true });
      await rename(tmp, final);
      const meta: LayerMeta = { digest: diffId, size_bytes: size, created_at: new Date().toISOString() };
      // The .json marker is written last: a layer without it is incomplete.
      await writeFile(join(this.root, `${hex}.json`), JSON.stringify(meta));
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Store an uncompressed layer tar made by this server (a captured writable layer, already
   * in overlayfs whiteout form) under its own SHA-256. Returns that digest.
   */
  async ingestTar(tarPath: string): Promise<string> {
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(tarPath)) hash.update(chunk as Buffer);
    const digest = `sha256:${hash.digest("hex")}`;
    await this.ingest(digest, tarPath);
    return digest;
  }

  async remove(digest: string): Promise<void> {
    const hex = digestHex(digest);
    await rm(join(this.root, `${hex}.json`), { force: true });
    await rm(join(this.root, hex), { recursive: true, force: true });
  }
}

/**
 * Decompress a layer blob, hash the uncompressed tar (its diff_id) and extract it with
 * GNU tar in one pass. Returns the computed diff_id.
 */
async function extractVerified(blobPath: string, dir: string): Promise<string> {
  const head = Buffer.alloc(4);
  const fh = await open(blobPath, "r");
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  const source = createReadStream(blobPath);
  let tarStream: Readable;
  let decompressor: ReturnType<typeof spawn> | undefined;
  if (head[0] === 0x1f && head[1] === 0x8b) {
    tarStream = source.pipe(createGunzip());
  } else if (head.readUInt32LE(0) === 0xfd2fb528) {
    decompressor = spawn("zstd", ["-dc"], { stdio: ["pipe", "pipe", "ignore"] });
    const out = decompressor.stdout as Readable;
    decompressor.on("error", (e) => out.destroy(new Error(`zstd: ${e.message}`)));
    decompressor.stdin?.on("error", () => undefined);
    source.pipe(decompressor.stdin as NodeJS.WritableStream);
    tarStream = out;
  } else {
    tarStream = source;
  }
  const hash = createHash("sha256");
  const tar = spawn("tar", ["-x", "-p", "--same-owner", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--no-overwrite-dir", "-f", "-", "-C", dir], { stdio: ["pipe", "ignore", "pipe"] });
  let tarErr = "";
  tar.stderr.on("data", (b: Buffer) => (tarErr = (tarErr + b.toString()).slice(-4000)));
  const exited = new Promise<number>((resolve, reject) => {
    tar.on("error", reject);
    tar.on("close", (code) => resolve(code ?? -1));
  });
  // tar may exit as soon as it reads the end-of-archive blocks, before the record padding
  // after them; the hash must still cover every byte, so the source is read to its end
  // whatever tar does.
  await new Promise<void>((resolve, reject) => {
    let tarOpen = true;
    const stdin = tar.stdin;
    const closed = (): void => {
      tarOpen = false;
      tarStream.resume();
    };
    stdin.on("error", closed);
    stdin.on("close", closed);
    tarStream.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      if (tarOpen && !stdin.write(chunk)) {
        tarStream.pause();
        stdin.once("drain", () => tarStream.resume());
      }
    });
    tarStream.on("end", () => {
      if (tarOpen) stdin.end();
      resolve();
    });
    tarStream.on("error", (e) => {
      stdin.destroy();
      reject(new Error(`reading layer failed: ${e.message}`));
    });
  });
  const code = await exited;
  if (code !== 0) throw new Error(`unpacking layer failed: ${tarErr.trim()}`);
  return `sha256:${hash.digest("hex")}`;
}

/**
 * OCI marks deletions with `.wh.<name>` files and opaque directories with
 * `.wh..wh..opq`; overlayfs wants a 0/0 character device and the
 * `trusted.overlay.opaque` xattr instead.
 */
async function convertWhiteouts(dir: string): Promise<void> {
  const found = await run(["find", dir, "-name", ".wh.*", "-print0"]);
  const paths = found.stdout.split("\0").filter(Boolean);
  for (const p of paths) {
    const slash = p.lastIndexOf("/");
    const parent = p.slice(0, slash);
    const base = p.slice(slash + 1);
    await rm(p, { force: true, recursive: true });
    if (base === ".wh..wh..opq") {
      await run(["setfattr", "-n", "trusted.overlay.opaque", "-v", "y", parent]);
    } else {
      const target = join(parent, base.slice(".wh.".length));
      await rm(target, { force: true, recursive: true });
      await run(["mknod", target, "c", "0", "0"]);
    }
  }
}
