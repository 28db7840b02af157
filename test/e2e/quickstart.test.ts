/**
 * The README's quick start, command for command, through the CLI against a server started
 * with `sandbar serve`: offline (no registry), ending with python running in a sandbox.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";
import { hostResources } from "../support/host-resources.js";

const pexec = promisify(execFile);
const MAIN = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

describe("README quick start", () => {
  let dataDir: string;
  let server: ServerProcess;
  let env: NodeJS.ProcessEnv;
  const sandbar = async (...args: string[]): Promise<{ stdout: string; stderr: string }> =>
    pexec(process.execPath, [MAIN, "--data-dir", dataDir, ...args], { env, maxBuffer: 16 * 1024 * 1024 });

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-quickstart-"));
    const port = await freePort();
    // No SANDBAR_API_KEY: the first start generates one and keeps it in the data dir.
    const { SANDBAR_API_KEY: _drop, ...rest } = process.env;
    env = { ...rest, SANDBAR_PORT: String(port) };
    server = await startServerProcess(dataDir, "", port, {});
  });
  afterAll(async () => {
    await sandbar("sandbox", "rm", "hello").catch(() => undefined);
    await sandbar("snapshot", "rm", "python").catch(() => undefined);
    await server?.kill("SIGTERM");
    expect(await hostResources(dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
    await rm(dataDir, { recursive: true, force: true });
  });

  it("prints a generated API key on first start and keeps it in the data dir", async () => {
    const key = (await readFile(join(dataDir, "bootstrap-api-key"), "utf8")).trim();
    expect(key).toMatch(/^sb_/);
    expect(server.output()).toContain(key);
    const res = await fetch(`${server.url}/v2/sandboxes/boxes`, { headers: { "x-api-key": key } });
    expect(res.status).toBe(200);
  });

  it("builds a python image from Debian packages, snapshots it, and runs python in a sandbox", async () => {
    const built = await sandbar("image", "build-debian", "python", "--packages", "python3");
    expect(built.stdout.trim()).toBe("sandbar.local/python:latest");
    const snap = JSON.parse((await sandbar("snapshot", "create", "python", "--image", "sandbar.local/python:latest")).stdout) as { status: string };
    expect(snap.status).toBe("ready");
    const sb = JSON.parse((await sandbar("sandbox", "create", "--snapshot", "python", "--name", "hello")).stdout) as { status: string };
    expect(sb.status).toBe("ready");
    const out = await sandbar("sandbox", "exec", "hello", "--", "python3 -c 'print(2 + 2)'");
    expect(out.stdout).toBe("4\n");
    const local = join(dataDir, "..", `${join(dataDir).split("/").pop() ?? "x"}-hello.txt`);
    await writeFile(local, "from the host\n");
    await sandbar("sandbox", "cp", local, "hello:/root/hello.txt");
    await sandbar("sandbox", "cp", "hello:/root/hello.txt", `${local}.back`);
    expect(await readFile(`${local}.back`, "utf8")).toBe("from the host\n");
    await rm(local, { force: true });
    await rm(`${local}.back`, { force: true });
    const ls = await sandbar("sandbox", "ls");
    expect(ls.stdout).toContain("hello");
  });

  it("streams `sandbox exec` output as it comes and opens an interactive `sandbox shell`", async () => {
    const { spawn } = await import("node:child_process");
    const t0 = Date.now();
    const arrivals: number[] = [];
    const child = spawn(process.execPath, [MAIN, "--data-dir", dataDir, "sandbox", "exec", "hello", "--", "for i in 1 2 3; do echo $i; sleep 0.4; done"], { env });
    let out = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
      arrivals.push(Date.now() - t0);
    });
    const code = await new Promise<number>((r) => child.on("close", (c) => r(c ?? -1)));
    expect(code).toBe(0);
    expect(out).toBe("1\n2\n3\n");
    expect((arrivals[arrivals.length - 1] ?? 0) - (arrivals[0] ?? 0)).toBeGreaterThan(600);
    // `script` gives the CLI a real terminal; keystrokes come from its stdin.
    const sh = spawn("script", ["-qfec", `${process.execPath} ${MAIN} --data-dir ${dataDir} sandbox shell hello`, "/dev/null"], { env });
    let screen = "";
    sh.stdout.on("data", (b: Buffer) => (screen += b.toString()));
    const waitFor = async (re: RegExp): Promise<void> => {
      for (let i = 0; i < 100 && !re.test(screen); i++) await new Promise((r) => setTimeout(r, 100));
      expect(screen).toMatch(re);
    };
    await waitFor(/[#$] $/m);
    sh.stdin.write("tty; echo $((6 * 7))\r");
    await waitFor(/\/dev\/pts\/\d+/);
    await waitFor(/^42\r?$/m);
    sh.stdin.write("exit 5\r");
    const shellCode = await new Promise<number>((r) => sh.on("close", (c) => r(c ?? -1)));
    expect(shellCode).toBe(5);
  });

  it("manages API keys per workspace with `sandbar key`", async () => {
    const created = await sandbar("key", "create", "--workspace", "team-b", "--name", "ci");
    const key = created.stdout.trim();
    expect(key).toMatch(/^sb_/);
    const list = await sandbar("key", "ls");
    expect(list.stdout).toContain("team-b");
    expect(list.stdout).not.toContain(key); // only prefixes are shown
    const asB = (path: string): Promise<Response> => fetch(`${server.url}/v2/sandboxes${path}`, { headers: { "x-api-key": key } });
    // Workspace team-b sees none of the default workspace's sandboxes, and not even by name.
    expect(((await (await asB("/boxes")).json()) as { sandboxes: unknown[] }).sandboxes).toEqual([]);
    expect((await asB("/boxes/hello")).status).toBe(404);
    const id = /^(\S+)\s+\S+\s+team-b/m.exec(list.stdout)?.[1] ?? "";
    expect(id).not.toBe("");
    await sandbar("key", "revoke", id);
    expect((await asB("/boxes")).status).toBe(401);
  });

  it("exits non-zero with the command's exit code and a clear error for a missing sandbox", async () => {
    await expect(sandbar("sandbox", "exec", "hello", "--", "exit", "3")).rejects.toMatchObject({ code: 3 });
    await expect(sandbar("sandbox", "get", "nope")).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining("SANDBOX_NOT_FOUND") as unknown });
  });
});
