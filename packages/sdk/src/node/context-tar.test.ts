/** Directory build contexts: the walk, .dockerignore, modes and mtimes, symlinks not followed; checked with GNU tar. */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contextEntries, tarDirectory } from "./context-tar.js";

const root = mkdtempSync(join(tmpdir(), "sandbar-ctx-"));
const ctx = join(root, "ctx");
afterAll(() => rmSync(root, { recursive: true, force: true }));

beforeAll(() => {
  const file = (p: string, data: string, mode = 0o644): void => {
    mkdirSync(join(ctx, p, ".."), { recursive: true });
    writeFileSync(join(ctx, p), data);
    chmodSync(join(ctx, p), mode);
  };
  file("Dockerfile", "FROM alpine\n");
  file("app/main.py", "print('hi')\n");
  file("app/run.sh", "#!/bin/sh\n", 0o755);
  file("app/__pycache__/main.cpython-312.pyc", "x");
  file("node_modules/dep/index.js", "x");
  file("logs/a.log", "a");
  file("logs/keep.log", "keep");
  file("secret.env", "TOKEN=1");
  file("docs/README.md", "docs");
  file("README.md", "readme");
  mkdirSync(join(ctx, "empty"));
  symlinkSync("app/main.py", join(ctx, "main-link"));
  symlinkSync("/etc", join(ctx, "etc-link")); // stored as a link, never followed
  utimesSync(join(ctx, "app/main.py"), 1700000000, 1700000000);
  writeFileSync(join(ctx, ".dockerignore"), "# build junk\n**/__pycache__\nnode_modules/\n/logs\n!logs/keep.log\n*.env\n*.md\n!README.md\n");
});

describe("contextEntries", () => {
  it("keeps what .dockerignore does not exclude, parents first, links as links", async () => {
    const entries = await contextEntries(ctx);
    expect(entries.map((e) => `${e.type[0]} ${e.path}`)).toEqual([
      "f .dockerignore",
      "f Dockerfile",
      "f README.md",
      "d app",
      "f app/main.py",
      "f app/run.sh",
      "d docs",
      "f docs/README.md", // *.md is root-level only
      "d empty",
      "s etc-link",
      "d logs",
      "f logs/keep.log",
      "s main-link",
    ]);
    const by = Object.fromEntries(entries.map((e) => [e.path, e]));
    expect(by["app/run.sh"]?.mode).toBe(0o755);
    expect(by["app/main.py"]).toMatchObject({ mode: 0o644, mtime: 1700000000 });
    expect(by["etc-link"]).toMatchObject({ type: "symlink", target: "/etc" });
    expect(by["main-link"]).toMatchObject({ type: "symlink", target: "app/main.py" });
  });

  it("without a .dockerignore keeps everything", async () => {
    const plain = join(root, "plain");
    mkdirSync(join(plain, "a"), { recursive: true });
    writeFileSync(join(plain, "a/b"), "b");
    expect((await contextEntries(plain)).map((e) => e.path)).toEqual(["a", "a/b"]);
  });

  it("fails clearly for a missing directory or a file", async () => {
    await expect(contextEntries(join(root, "nope"))).rejects.toThrow(/no such directory/);
    await expect(contextEntries(join(ctx, "Dockerfile"))).rejects.toThrow(/not a directory/);
  });
});

describe("tarDirectory", () => {
  it("GNU tar lists the archive with modes, owners 0/0 and links", async () => {
    const tarFile = join(root, "ctx.tar");
    writeFileSync(tarFile, Buffer.concat(await tarDirectory(ctx)));
    const listing = execFileSync("tar", ["-tvf", tarFile, "--numeric-owner"], { encoding: "utf8" });
    expect(listing).toMatch(/^-rwxr-xr-x 0\/0 +10 .* app\/run\.sh$/m);
    expect(listing).toMatch(/^lrwxrwxrwx 0\/0 +0 .* etc-link -> \/etc$/m);
    expect(listing).toMatch(/^drwx.* empty\/$/m);
    expect(listing).not.toContain("node_modules");
    expect(listing).not.toContain("secret.env");
    expect(listing).not.toContain("a.log");
  });
});
