/**
 * File search (glob, ls, grep) and partial reads (stat, readRange) through both the official
 * LangSmith client (langsmith@0.12.0, unmodified) and @sandbar/sdk, against one sandbox.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { thrown } from "../support/thrown.js";
import * as ls from "langsmith/experimental/sandbox";
import { ResourceNotFoundError, SandboxClient, ValidationError, type Sandbox } from "@sandbar/sdk";
import { startWorld, type World } from "../support/fixture.js";


const ROOT = "/work/proj";
const NEEDLE = "a.b*c"; // regex-special: as a regex it would not even match itself
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** The two clients' sandbox handles, as one shape for the search calls. */
interface Searcher {
  name: string;
  glob(
    pattern: string,
    path: string,
    opts?: { limit?: number },
  ): Promise<{ matches: { path: string; is_dir: boolean; size_bytes: number; modified_at?: string }[]; truncated: boolean }>;
  ls(path: string): Promise<{ matches: { path: string; is_dir: boolean }[]; truncated: boolean }>;
  grep(
    pattern: string,
    path: string,
    opts?: { glob?: string; limit?: number },
  ): Promise<{ matches: { path: string; line: number; text: string }[]; truncated: boolean }>;
  stat(path: string): Promise<{ size_bytes: number; etag?: string; last_modified?: string }>;
  readRange(
    path: string,
    opts: { start?: number; end?: number; suffixBytes?: number; ifRange?: string; ifNoneMatch?: string },
  ): Promise<{ content: Uint8Array; etag?: string; total_bytes?: number; start: number; partial: boolean; unchanged: boolean }>;
  notFound(e: unknown): boolean;
}

describe("file search and partial reads, official client and @sandbar/sdk", () => {
  let w: World;
  let ours: Sandbox;
  const clients: Searcher[] = [];

  beforeAll(async () => {
    w = await startWorld(["python"]);
    const sdk = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    ours = await sdk.createSandbox({ snapshotId: w.snapshots.python, name: "search-box" });
    const official = await new ls.SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey }).getSandbox("search-box");
    clients.push(
      { name: "official", ...bind(official), notFound: (e) => e instanceof ls.LangSmithResourceNotFoundError },
      { name: "sdk", ...bind(ours), notFound: (e) => e instanceof ResourceNotFoundError && e.resourceType === "file" && e.code === "FILE_NOT_FOUND" },
    );
    await ours.write(`${ROOT}/main.py`, `import os\nprint('${NEEDLE}')\n`);
    await ours.write(`${ROOT}/README.md`, `${NEEDLE} in the docs\n`);
    await ours.write(`${ROOT}/src/util.py`, `def f():\n    return '${NEEDLE}'\n`);
    await ours.write(`${ROOT}/src/deep/mod.py`, `x = 1\ny = 2\n# ${NEEDLE}\n`);
    await ours.write(`${ROOT}/src/deep/data.txt`, `${NEEDLE} without a newline`);
    await ours.write(`${ROOT}/bin.dat`, new Uint8Array([...new TextEncoder().encode(NEEDLE), 0, 1, 2]));
    await ours.write(`${ROOT}/range.txt`, "0123456789");
    const setup = await ours.run(
      `ln -s /etc ${ROOT}/link && mkdir -p ${ROOT}/many && for i in 0 1 2 3 4 5 6 7 8 9; do echo "line $i" > ${ROOT}/many/f$i.txt; done`,
    );
    expect(setup.exit_code).toBe(0);
  });
  afterAll(async () => {
    await w?.stop();
  });

  /** Both clients' answers must be identical; returns one of them. */
  async function both<T>(f: (c: Searcher) => Promise<T>): Promise<T> {
    const [a, b] = await Promise.all(clients.map(f));
    expect(b).toEqual(a);
    return a as T;
  }
  const rel = (ms: { path: string }[]): string[] => ms.map((m) => m.path.slice(ROOT.length + 1)).sort();

  it("glob: a bare pattern matches the top level only, ** any depth; absolute paths and FileInfo", async () => {
    const bare = await both((c) => c.glob("*.py", ROOT));
    expect(bare.truncated).toBe(false);
    expect(bare.matches).toHaveLength(1);
    const main = bare.matches[0]!;
    expect(main).toMatchObject({ path: `${ROOT}/main.py`, is_dir: false, size_bytes: `import os\nprint('${NEEDLE}')\n`.length });
    expect(Date.parse(main.modified_at ?? "")).toBeGreaterThan(Date.now() - 3_600_000);

    expect(rel((await both((c) => c.glob("**/*.py", ROOT))).matches)).toEqual(["main.py", "src/deep/mod.py", "src/util.py"]);
    const tree = await both((c) => c.glob("src/**", ROOT));
    expect(rel(tree.matches)).toEqual(["src", "src/deep", "src/deep/data.txt", "src/deep/mod.py", "src/util.py"]);
    expect(tree.matches.find((m) => m.path === `${ROOT}/src/deep`)).toMatchObject({ is_dir: true });
    // A symlinked directory is listed but never walked into.
    expect((await both((c) => c.glob("link/*", ROOT))).matches).toEqual([]);
    expect((await both((c) => c.glob("*.go", ROOT))).matches).toEqual([]);
  });

  it("ls lists immediate entries", async () => {
    const r = await both((c) => c.ls(ROOT));
    expect(rel(r.matches)).toEqual(["README.md", "bin.dat", "link", "main.py", "many", "range.txt", "src"]);
    expect(r.matches.find((m) => m.path === `${ROOT}/src`)?.is_dir).toBe(true);
    expect(r.matches.find((m) => m.path === `${ROOT}/main.py`)?.is_dir).toBe(false);
  });

  it("grep: literal (not regex), glob filter by base name or by relative path, binary files skipped", async () => {
    const py = await both((c) => c.grep(NEEDLE, ROOT, { glob: "*.py" }));
    expect(py.truncated).toBe(false);
    expect([...py.matches].sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: `${ROOT}/main.py`, line: 2, text: `print('${NEEDLE}')` },
      { path: `${ROOT}/src/deep/mod.py`, line: 3, text: `# ${NEEDLE}` },
      { path: `${ROOT}/src/util.py`, line: 2, text: `    return '${NEEDLE}'` },
    ]);
    expect(rel((await both((c) => c.grep(NEEDLE, ROOT))).matches)).toEqual(["README.md", "main.py", "src/deep/data.txt", "src/deep/mod.py", "src/util.py"]);
    expect(rel((await both((c) => c.grep(NEEDLE, ROOT, { glob: "src/*.py" }))).matches)).toEqual(["src/util.py"]);
    // As a regex "a.*c" would match every line above; as a literal it matches nothing.
    expect((await both((c) => c.grep("a.*c", ROOT))).matches).toEqual([]);
  });

  it("limit caps the answer and says truncated only when more existed", async () => {
    const capped = await both((c) => c.glob("many/*", ROOT, { limit: 4 }));
    expect(capped.matches).toHaveLength(4);
    expect(capped.truncated).toBe(true);
    const exact = await both((c) => c.glob("many/*", ROOT, { limit: 10 }));
    expect(exact.matches).toHaveLength(10);
    expect(exact.truncated).toBe(false);
    const lines = await both((c) => c.grep("line", `${ROOT}/many`, { limit: 3 }));
    expect(lines.matches).toHaveLength(3);
    expect(lines.truncated).toBe(true);
  });

  it("a missing path is a file-not-found error for glob, grep and stat; bad requests", async () => {
    for (const c of clients) {
      for (const call of [() => c.glob("*", `${ROOT}/nope`), () => c.ls("/no/such/dir"), () => c.grep("x", `${ROOT}/nope`), () => c.stat(`${ROOT}/nope.txt`)]) {
        const e = await thrown(call());
        expect(c.notFound(e), `${c.name}: ${String(e)}`).toBe(true);
      }
    }
    // A relative path is refused before it reaches the sandbox; a malformed glob by the agent.
    expect(await thrown(ours.glob("*", "work/proj"))).toMatchObject({ code: "VALIDATION_ERROR", status: 422 });
    const bad = await thrown(ours.grep("x", ROOT, { glob: "[a-" }));
    expect(bad).toBeInstanceOf(ValidationError);
    expect(bad).toMatchObject({ code: "INVALID_REQUEST", status: 400 });
    // A limit above the cap is lowered, not refused.
    expect((await ours.glob("*", ROOT, { limit: 1_000_000 })).truncated).toBe(false);
  });

  it("stat and readRange: size and etag, ranges, suffix, If-None-Match, stale If-Range", async () => {
    const path = `${ROOT}/range.txt`;
    const st = await both((c) => c.stat(path));
    expect(st.size_bytes).toBe(10);
    expect(st.etag).toMatch(/^".+"$/);
    expect(st.last_modified).toBeDefined();

    const mid = await both((c) => c.readRange(path, { start: 2, end: 5 }));
    expect(text(mid.content)).toBe("2345");
    expect(mid).toMatchObject({ start: 2, partial: true, unchanged: false, total_bytes: 10, etag: st.etag });
    const rest = await both((c) => c.readRange(path, { start: 8 }));
    expect(text(rest.content)).toBe("89");
    expect(rest.start).toBe(8);
    const tail = await both((c) => c.readRange(path, { suffixBytes: 3 }));
    expect(text(tail.content)).toBe("789");
    expect(tail).toMatchObject({ start: 7, partial: true });

    const same = await both((c) => c.readRange(path, { start: 0, ifNoneMatch: st.etag }));
    expect(same).toMatchObject({ unchanged: true, partial: false });
    expect(same.content).toHaveLength(0);

    await ours.write(path, "changed contents");
    const stale = await both((c) => c.readRange(path, { start: 4, ifRange: st.etag }));
    expect(stale).toMatchObject({ partial: false, start: 0, unchanged: false, total_bytes: 16 });
    expect(text(stale.content)).toBe("changed contents");
    expect(stale.etag).not.toBe(st.etag);
  });
});

/** The search methods of either client's sandbox, unbound from it. */
function bind(s: Sandbox | ls.Sandbox): Omit<Searcher, "name" | "notFound"> {
  return {
    glob: (p, path, o) => s.glob(p, path, o),
    ls: (path) => s.ls(path),
    grep: (p, path, o) => s.grep(p, path, o),
    stat: (path) => s.stat(path),
    readRange: (path, o) => s.readRange(path, o),
  };
}
