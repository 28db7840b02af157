/**
 * The ustar writer: read back by a small reader here (headers, checksums, PAX records) and by
 * GNU tar (list and extract: long names, symlinks, modes, mtimes, empty directories).
 */
import { execFileSync } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { entriesFromFiles, normalizeTarPath, tarFromFiles, writeTar, type TarEntry } from "./tar.js";

interface ReadEntry {
  path: string;
  type: string;
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
  linkname: string;
  data: Uint8Array;
}

const decoder = new TextDecoder();

function str(b: Uint8Array, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const end = s.indexOf(0);
  return decoder.decode(end < 0 ? s : s.subarray(0, end));
}

function num(b: Uint8Array, off: number, len: number): number {
  return parseInt(str(b, off, len).trim() || "0", 8);
}

/** A minimal ustar + PAX reader: checks every checksum and the two end blocks. */
function readTar(tar: Uint8Array): ReadEntry[] {
  expect(tar.length % 512).toBe(0);
  const out: ReadEntry[] = [];
  let pax: Record<string, string> = {};
  let at = 0;
  for (;;) {
    const h = tar.subarray(at, at + 512);
    if (h.every((x) => x === 0)) {
      expect(tar.subarray(at, at + 1024).every((x) => x === 0)).toBe(true);
      expect(at + 1024).toBe(tar.length);
      return out;
    }
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : (h[i] as number);
    expect(num(h, 148, 8), `checksum at ${at}`).toBe(sum);
    expect(str(h, 257, 6)).toBe("ustar");
    expect(str(h, 263, 2)).toBe("00");
    const size = num(h, 124, 12);
    const data = tar.subarray(at + 512, at + 512 + size);
    at += 512 + Math.ceil(size / 512) * 512;
    const type = String.fromCharCode(h[156] as number);
    if (type === "x") {
      const text = decoder.decode(data);
      let i = 0;
      while (i < text.length) {
        const sp = text.indexOf(" ", i);
        const len = Number(text.slice(i, sp));
        const rec = text.slice(sp + 1, i + len - 1);
        const eq = rec.indexOf("=");
        pax[rec.slice(0, eq)] = rec.slice(eq + 1);
        expect(text[i + len - 1]).toBe("\n");
        i += len;
      }
      continue;
    }
    const prefix = str(h, 345, 155);
    const name = str(h, 0, 100);
    out.push({
      path: pax.path ?? (prefix ? `${prefix}/${name}` : name),
      type,
      mode: num(h, 100, 8),
      mtime: num(h, 136, 12),
      uid: num(h, 108, 8),
      gid: num(h, 116, 8),
      linkname: pax.linkpath ?? str(h, 157, 100),
      data,
    });
    pax = {};
  }
}

const tmp = mkdtempSync(join(tmpdir(), "sandbar-tar-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const LONG_SPLIT = `${"d".repeat(60)}/${"e".repeat(60)}/${"f".repeat(80)}.txt`; // 203 bytes: ustar prefix
const LONG_PAX = `${"g".repeat(120)}/${"h".repeat(120)}.txt`; // the name part alone is over 100: PAX
const LONG_TARGET = `../${"t".repeat(150)}`;

const ENTRIES: TarEntry[] = [
  { type: "directory", path: "app", mode: 0o750, mtime: 1700000000 },
  { type: "file", path: "app/run.sh", data: "#!/bin/sh\necho hi\n", mode: 0o755, mtime: 1700000001 },
  { type: "file", path: "app/data.bin", data: new Uint8Array([0, 1, 2, 255]), mode: 0o600 },
  { type: "file", path: "app/empty", data: "" },
  { type: "directory", path: "empty-dir" },
  { type: "symlink", path: "app/link", target: "run.sh" },
  { type: "symlink", path: "app/far", target: LONG_TARGET },
  { type: "file", path: "naïve ünïcode.txt", data: "ü" },
  { type: "directory", path: LONG_SPLIT.slice(0, 121) },
  { type: "file", path: LONG_SPLIT, data: "split" },
  { type: "directory", path: LONG_PAX.slice(0, 120) },
  { type: "file", path: LONG_PAX, data: "pax" },
];

describe("writeTar", () => {
  const tar = writeTar(ENTRIES);

  it("reads back: paths, types, modes, mtimes, owners, contents, links", () => {
    const read = readTar(tar);
    expect(read.map((e) => [e.path, e.type])).toEqual([
      ["app/", "5"],
      ["app/run.sh", "0"],
      ["app/data.bin", "0"],
      ["app/empty", "0"],
      ["empty-dir/", "5"],
      ["app/link", "2"],
      ["app/far", "2"],
      ["naïve ünïcode.txt", "0"],
      [`${LONG_SPLIT.slice(0, 121)}/`, "5"],
      [LONG_SPLIT, "0"],
      [`${LONG_PAX.slice(0, 120)}/`, "5"],
      [LONG_PAX, "0"],
    ]);
    const by = Object.fromEntries(read.map((e) => [e.path, e]));
    expect(by["app/"]).toMatchObject({ mode: 0o750, mtime: 1700000000, uid: 0, gid: 0 });
    expect(by["app/run.sh"]).toMatchObject({ mode: 0o755, mtime: 1700000001 });
    expect(decoder.decode(by["app/run.sh"]?.data)).toBe("#!/bin/sh\necho hi\n");
    expect([...(by["app/data.bin"]?.data ?? [])]).toEqual([0, 1, 2, 255]);
    expect(by["app/data.bin"]?.mode).toBe(0o600);
    expect(by["app/empty"]).toMatchObject({ mode: 0o644, mtime: 0 });
    expect(by["app/empty"]?.data.length).toBe(0);
    expect(by["empty-dir/"]?.mode).toBe(0o755);
    expect(by["app/link"]).toMatchObject({ linkname: "run.sh", mode: 0o777 });
    expect(by["app/far"]?.linkname).toBe(LONG_TARGET);
  });

  it("splits a long path into ustar prefix and name when it can, else writes a PAX header", () => {
    // The split name has no PAX header before it; the other long one does.
    const text = decoder.decode(tar);
    const m = new RegExp(`(\\d+) path=${LONG_PAX}\n`).exec(text);
    expect(Number(m?.[1])).toBe(`${m?.[1]} path=${LONG_PAX}\n`.length);
    expect(text).not.toContain(`path=${LONG_SPLIT}`);
    expect(text).toContain(`linkpath=${LONG_TARGET}\n`);
  });

  it("GNU tar lists and extracts it", () => {
    const file = join(tmp, "a.tar");
    require_tar();
    execFileSync("sh", ["-c", `cat > ${file}`], { input: tar });
    const listing = execFileSync("tar", ["-tvf", file, "--numeric-owner"], { encoding: "utf8" });
    expect(listing).toMatch(/^drwxr-x--- 0\/0 +0 2023-11-1\d \d\d:\d\d app\/$/m);
    expect(listing).toMatch(/^-rwxr-xr-x 0\/0 +18 .* app\/run\.sh$/m);
    expect(listing).toMatch(/^lrwxrwxrwx 0\/0 +0 .* app\/link -> run\.sh$/m);
    expect(listing).toContain(`app/far -> ${LONG_TARGET}`);
    expect(listing).toContain(LONG_SPLIT);
    expect(listing).toContain(LONG_PAX);
    expect(listing).toMatch(/^drwxr-xr-x .* empty-dir\/$/m);
    const out = join(tmp, "x");
    execFileSync("mkdir", ["-p", out]);
    execFileSync("tar", ["-xf", file, "-C", out, "--no-same-owner"]);
    expect(readFileSync(join(out, "app/run.sh"), "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(lstatSync(join(out, "app/run.sh")).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(out, "app/run.sh")).mtimeMs).toBe(1700000001000);
    expect(readlinkSync(join(out, "app/link"))).toBe("run.sh");
    expect(readlinkSync(join(out, "app/far"))).toBe(LONG_TARGET);
    expect(readFileSync(join(out, LONG_SPLIT), "utf8")).toBe("split");
    expect(readFileSync(join(out, LONG_PAX), "utf8")).toBe("pax");
    expect(readFileSync(join(out, "naïve ünïcode.txt"), "utf8")).toBe("ü");
    expect(lstatSync(join(out, "empty-dir")).isDirectory()).toBe(true);
  });
});

function require_tar(): void {
  try {
    execFileSync("tar", ["--version"]);
  } catch {
    throw new Error("this test needs tar on PATH");
  }
}

describe("tarFromFiles (the map form of a build context)", () => {
  it("adds parent directories, sorts, and is deterministic", () => {
    const files = { "src/b.py": "b", "./src/a.py": new Uint8Array([97]), "README.md": "r", "cache/": "", "deep/x/y/z.txt": "z" };
    const read = readTar(concat(tarFromFiles(files)));
    expect(read.map((e) => e.path)).toEqual(["README.md", "cache/", "deep/", "deep/x/", "deep/x/y/", "deep/x/y/z.txt", "src/", "src/a.py", "src/b.py"]);
    expect(read.every((e) => e.mtime === 0 && e.uid === 0)).toBe(true);
    expect(read.find((e) => e.path === "src/a.py")?.mode).toBe(0o644);
    expect(concat(tarFromFiles(files))).toEqual(concat(tarFromFiles({ ...files })));
  });

  it.each([["../x"], ["a/../../x"], [""], ["./"]])("refuses the path %j", (p) => {
    expect(() => entriesFromFiles({ [p]: "x" })).toThrow();
  });

  it("refuses a path that is both a file and a directory", () => {
    expect(() => entriesFromFiles({ a: "x", "a/b": "y" })).toThrow(/both a file and a directory/);
  });

  it("normalizes paths", () => {
    expect(normalizeTarPath("/a//b/./c")).toBe("a/b/c");
  });
});

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
