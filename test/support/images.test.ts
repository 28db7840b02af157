import { mkdtemp, readFile, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

import { findCachedTestImage, testImage } from "./images.js";
import { listLayer } from "./oci-layout.js";
import { runCommand } from "./run-command.js";

// A cold python build runs mmdebstrap (~20 s here); allow for a slow mirror.
const BUILD_TIMEOUT_MS = 10 * 60_000;

/** Names in a `tar -tv` listing, without the "./" or "/" prefix umoci may write. */
function entryNames(listing: string[]): string[] {
  return listing.map((line) => {
    const name = line.split(/\s+/).slice(5).join(" ").split(" -> ")[0] ?? "";
    return name.replace(/^\.?\//, "").replace(/\/$/, "");
  });
}

function entryLine(listing: string[], name: string): string | undefined {
  const names = entryNames(listing);
  return listing[names.indexOf(name)];
}

describe("test images", () => {
  it(
    "busybox is one layer with a shell, applet links and a minimal /etc",
    async () => {
      const image = await testImage("busybox");
      expect(image.tag).toBe("latest");
      expect(image.layerDigests).toHaveLength(1);

      const bundle = join(await mkdtemp(join(tmpdir(), "sandbar-busybox-")), "bundle");
      try {
        await runCommand("umoci", ["unpack", "--image", `${image.layoutDir}:${image.tag}`, bundle]);
        const rootfs = join(bundle, "rootfs");
        expect(await readlink(join(rootfs, "bin", "sh"))).toBe("busybox");
        expect(await readFile(join(rootfs, "etc", "passwd"), "utf8")).toMatch(/^root:x:0:0:/);
        expect(await readFile(join(rootfs, "etc", "hostname"), "utf8")).toBe("");
        expect((await stat(join(rootfs, "tmp"))).mode & 0o7777).toBe(0o1777);
        const { stdout } = await runCommand("chroot", [rootfs, "/bin/sh", "-c", "echo $((6 * 7))"]);
        expect(stdout.trim()).toBe("42");
        const config = JSON.parse(await readFile(join(bundle, "config.json"), "utf8")) as unknown;
        expect(config).toMatchObject({
          process: { env: expect.arrayContaining(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]) },
        });
      } finally {
        await rm(join(bundle, ".."), { recursive: true, force: true });
      }
    },
    BUILD_TIMEOUT_MS,
  );

  it(
    "python is one layer with python3 and no device nodes",
    async () => {
      const image = await testImage("python");
      expect(image.layerDigests).toHaveLength(1);
      const [layer] = image.layerDigests;
      const listing = await listLayer(image.layoutDir, layer ?? "");
      expect(entryNames(listing)).toContain("usr/bin/python3");
      expect(listing.filter((line) => /^[cb]/.test(line))).toEqual([]);
    },
    BUILD_TIMEOUT_MS,
  );

  it(
    "python-extra shares python's layer and adds one layer with the extra files",
    async () => {
      const python = await testImage("python");
      const extra = await testImage("python-extra");
      expect(extra.layerDigests).toHaveLength(2);
      expect(extra.layerDigests[0]).toBe(python.layerDigests[0]);

      const listing = await listLayer(extra.layoutDir, extra.layerDigests[1] ?? "");
      expect(entryLine(listing, "opt/extra/hello.txt")).toMatch(/^-rw-r--r-- 0\/0\s+6 /);
      expect(entryLine(listing, "usr/local/bin/hello")).toMatch(/^-rwxr-xr-x 0\/0 /);
    },
    BUILD_TIMEOUT_MS,
  );

  it(
    "python-extra runs python with its standard library and the extra script",
    async () => {
      const extra = await testImage("python-extra");
      const bundle = join(await mkdtemp(join(tmpdir(), "sandbar-python-extra-")), "bundle");
      try {
        await runCommand("umoci", ["unpack", "--image", `${extra.layoutDir}:${extra.tag}`, bundle]);
        const rootfs = join(bundle, "rootfs");
        const script = "import json, http.server, asyncio; print(json.dumps({'sum': 1 + 1}))";
        const python = await runCommand("chroot", [rootfs, "/usr/bin/python3", "-c", script]);
        expect(python.stdout.trim()).toBe('{"sum": 2}');
        // chroot keeps the host's environment; give the shell the image's PATH.
        const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        const hello = await runCommand("chroot", [rootfs, "/usr/bin/env", path, "/bin/sh", "-c", "hello && cat /opt/extra/hello.txt"]);
        expect(hello.stdout).toBe("hello from extra\nextra\n");
      } finally {
        await rm(join(bundle, ".."), { recursive: true, force: true });
      }
    },
    BUILD_TIMEOUT_MS,
  );

  it(
    "a second lookup is served from the cache",
    async () => {
      const built = await testImage("busybox");
      // findCachedTestImage skips the in-process memo, so this times the on-disk lookup.
      const started = performance.now();
      const again = await findCachedTestImage("busybox");
      expect(performance.now() - started).toBeLessThan(1000);
      expect(again).toEqual(built);
    },
    BUILD_TIMEOUT_MS,
  );
});
