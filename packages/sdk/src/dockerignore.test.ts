/** `.dockerignore` matching: Docker's rules (root-relative patterns, parents, `**`, `!`, last match wins). */
import { describe, expect, it } from "vitest";
import { DockerIgnore } from "./dockerignore.js";

function check(text: string, cases: Record<string, boolean>): void {
  const ig = new DockerIgnore(text);
  const got = Object.fromEntries(Object.keys(cases).map((p) => [p, ig.excludes(p)]));
  expect(got).toEqual(cases);
}

describe("DockerIgnore.excludes", () => {
  it("skips comments and blank lines; trims", () => {
    const ig = new DockerIgnore("# a comment\n\n   \n  secret.txt  \r\n");
    expect(ig.excludes("secret.txt")).toBe(true);
    expect(ig.excludes("# a comment")).toBe(false);
    expect(new DockerIgnore("# only\n").empty).toBe(true);
  });

  it("`*` stays within one directory and patterns are relative to the root", () => {
    check("*.md\n", { "README.md": true, "docs/x.md": false, "a.mdx": false });
    check("*/*.md\n", { "docs/x.md": true, "README.md": false, "a/b/c.md": false });
    check("?.txt\n", { "a.txt": true, "ab.txt": false });
  });

  it("a leading slash or ./ means the root, the same as none", () => {
    check("/build\n", { build: true, "build/out.o": true, "src/build": false });
    check("./build\n", { build: true, "src/build": false });
  });

  it("a matching directory excludes everything under it; a trailing slash changes nothing", () => {
    check("node_modules\n", { node_modules: true, "node_modules/x/index.js": true, "pkg/node_modules": false, node_modules2: false });
    check("dist/\n", { dist: true, "dist/a.js": true, distx: false });
    check("a/b\n", { "a/b": true, "a/b/c": true, a: false, "a/c": false });
  });

  it("`**` is any number of directories, none included", () => {
    check("**/*.pyc\n", { "x.pyc": true, "a/b/x.pyc": true, "x.py": false });
    check("**/node_modules\n", { node_modules: true, "a/node_modules/b": true });
    check("docs/**\n", { "docs/a": true, "docs/a/b.md": true, docs: false });
    check("a/**/z\n", { "a/z": true, "a/b/c/z": true, "b/z": false });
  });

  it("character classes and escapes", () => {
    check("file[0-9].txt\n", { "file1.txt": true, "filex.txt": false });
    check("file[^0-9].txt\n", { "file1.txt": false, "filex.txt": true });
    check("\\*.txt\n", { "*.txt": true, "a.txt": false });
    check("a.b\n", { "a.b": true, axb: false });
  });

  it("`!` re-includes, the last matching line wins", () => {
    check("*.md\n!README.md\n", { "CHANGES.md": true, "README.md": false });
    check("!README.md\n*.md\n", { "README.md": true });
    check("logs\n!logs/keep.log\n", { "logs/a.log": true, "logs/keep.log": false, logs: true });
    check("*\n!src\n", { "package.json": true, src: false, "src/a/b.ts": false });
  });
});

describe("DockerIgnore.mayIncludeBelow", () => {
  it("walks an excluded directory only when a `!` pattern could match under it", () => {
    const ig = new DockerIgnore("logs\nnode_modules\n!logs/keep.log\n!**/*.keep\n");
    expect(ig.mayIncludeBelow("logs")).toBe(true);
    const plain = new DockerIgnore("logs\nnode_modules\n!logs/keep.log\n!src/*.md\n");
    expect(plain.mayIncludeBelow("node_modules")).toBe(false);
    expect(plain.mayIncludeBelow("logs")).toBe(true);
    expect(plain.mayIncludeBelow("logs/deeper")).toBe(false);
    expect(new DockerIgnore("x\n!*.md\n").mayIncludeBelow("x")).toBe(false);
    expect(new DockerIgnore("x\n!*/keep\n").mayIncludeBelow("x")).toBe(true);
  });
});
