/**
 * The official LangSmith sandbox client (langsmith@0.12.0, unmodified) against a real sandbar
 * server: snapshots, sandboxes, commands over the WebSocket endpoint, files and its error
 * classes. Nothing here talks to the server except the client (and cleanup through the fixture).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { thrown } from "../support/thrown.js";
import {
  LangSmithCommandTimeoutError,
  LangSmithResourceCreationError,
  LangSmithResourceNameConflictError,
  LangSmithResourceNotFoundError,
  LangSmithSandboxAuthenticationError,
  LangSmithSandboxOperationError,
  SandboxClient,
  type Sandbox,
} from "langsmith/experimental/sandbox";
import { startWorld, type World } from "../support/fixture.js";

const GIB = 1024 ** 3;


describe("official langsmith@0.12.0 SandboxClient against sandbar", () => {
  let w: World;
  let client: SandboxClient;
  let sb: Sandbox;
  /** Snapshot built through the client's own createSnapshot. */
  let clientSnapId: string;

  beforeAll(async () => {
    w = await startWorld(["python"]);
    client = new SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey });
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("createSnapshot builds a ready snapshot from the registry image", async () => {
    const snap = await client.createSnapshot("client-python", `${w.registry.host}/python:latest`, GIB, { timeout: 60 });
    expect(snap.status).toBe("ready");
    expect(snap.name).toBe("client-python");
    expect(snap.fs_capacity_bytes).toBe(GIB);
    expect(snap.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(snap.id).not.toBe(w.snapshots.python);
    clientSnapId = snap.id;
    const again = await client.getSnapshot(snap.id);
    expect(again).toMatchObject({ id: snap.id, name: "client-python", status: "ready" });
    const listed = await client.listSnapshots({ nameContains: "CLIENT-PY" });
    expect(listed.map((s) => s.id)).toEqual([snap.id]);
  });

  it("createSnapshot of a missing image fails with the client's creation error", async () => {
    const e = await thrown(client.createSnapshot("client-nope", `${w.registry.host}/nope:latest`, GIB, { timeout: 30 }));
    expect(e).toBeInstanceOf(LangSmithResourceCreationError);
    expect((e as InstanceType<typeof LangSmithResourceCreationError>).resourceType).toBe("snapshot");
    expect((e as Error).message).toContain(`${w.registry.host}/nope:latest`);
    const failed = await client.listSnapshots({ nameContains: "client-nope" });
    expect(failed.map((s) => s.status)).toEqual(["failed"]);
    await client.deleteSnapshot(failed[0]!.id);
    expect(await client.listSnapshots({ nameContains: "client-nope" })).toEqual([]);
  });

  it("createSandbox(snapshotId) gives a ready sandbox with a data plane URL", async () => {
    sb = await client.createSandbox(clientSnapId, { name: "client-box" });
    expect(sb.name).toBe("client-box");
    expect(sb.status).toBe("ready");
    expect(sb.snapshot_id).toBe(clientSnapId);
    expect(sb.dataplane_url).toBe(`${w.t.url}/dataplane/${sb.id}`);
  });

  it("run() returns stdout and exit code 0", async () => {
    const r = await sb.run("python3 -c 'print(2 + 2)'");
    expect(r).toEqual({ stdout: "4\n", stderr: "", exit_code: 0 });
  });

  it("run() reports a non-zero exit code and stderr", async () => {
    const r = await sb.run("echo oops >&2; exit 3");
    expect(r.exit_code).toBe(3);
    expect(r.stderr).toBe("oops\n");
    expect(r.stdout).toBe("");
  });

  // run() sends close_stdin: true (the client's default for non-PTY commands). A command that
  // exits before the server forwards close-stdin to the agent must still succeed.
  it("run() of fast-exiting commands never fails (close_stdin race)", async () => {
    const failures: string[] = [];
    for (let i = 0; i < 30; i++) {
      try {
        const r = await sb.run(`exit ${i % 5}`);
        if (r.exit_code !== i % 5) failures.push(`#${i}: exit_code ${r.exit_code}`);
      } catch (e) {
        failures.push(`#${i}: ${(e as Error).name}: ${(e as Error).message}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it("run() honours env and cwd", async () => {
    const r = await sb.run('echo "$MY_VAR"; pwd', { env: { MY_VAR: "from-client" }, cwd: "/tmp" });
    expect(r).toMatchObject({ stdout: "from-client\n/tmp\n", exit_code: 0 });
  });

  it("run() with onStdout/onStderr streams chunks whose concatenation is the result", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const firstChunkAt: number[] = [];
    const r = await sb.run("for i in 1 2 3; do echo line-$i; echo err-$i >&2; sleep 0.4; done", {
      onStdout: (d: string) => {
        if (out.length === 0) firstChunkAt.push(Date.now());
        out.push(d);
      },
      onStderr: (d: string) => err.push(d),
    });
    const doneAt = Date.now();
    expect(r.exit_code).toBe(0);
    expect(r.stdout).toBe("line-1\nline-2\nline-3\n");
    expect(out.join("")).toBe(r.stdout);
    expect(err.join("")).toBe("err-1\nerr-2\nerr-3\n");
    expect(r.stderr).toBe(err.join(""));
    // Streamed, not delivered at exit: more than one chunk, the first well before the end.
    expect(out.length).toBeGreaterThanOrEqual(2);
    expect(doneAt - (firstChunkAt[0] ?? doneAt)).toBeGreaterThan(500);
  });

  it("run() past its timeout raises LangSmithCommandTimeoutError", async () => {
    const started = Date.now();
    const e = await thrown(sb.run("sleep 30", { timeout: 1 }));
    expect(e).toBeInstanceOf(LangSmithCommandTimeoutError);
    expect(Date.now() - started).toBeLessThan(15_000);
    // The sandbox is still usable afterwards.
    expect((await sb.run("echo alive")).stdout).toBe("alive\n");
  });

  it("write() a string and read() it back", async () => {
    const text = "hello from the official client\nünïcödé ✓\n";
    await sb.write("/tmp/client/hello.txt", text);
    const back = await sb.read("/tmp/client/hello.txt");
    expect(back).toBeInstanceOf(Uint8Array);
    expect(new TextDecoder().decode(back)).toBe(text);
    // The file is really there for commands too.
    expect((await sb.run("cat /tmp/client/hello.txt")).stdout).toBe(text);
  });

  it("write() binary bytes and read() back identical bytes", async () => {
    const bytes = new Uint8Array(256 * 1024 + 7);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 8)) & 0xff;
    // Every byte value, including NUL and invalid UTF-8 sequences.
    for (let i = 0; i < 256; i++) bytes[i] = i;
    await sb.write("/root/blob.bin", bytes);
    const back = await sb.read("/root/blob.bin");
    expect(back.length).toBe(bytes.length);
    expect(Buffer.from(back).equals(Buffer.from(bytes))).toBe(true);
    const size = await sb.run("stat -c %s /root/blob.bin");
    expect(size.stdout.trim()).toBe(String(bytes.length));
  });

  it("write() onto a directory raises LangSmithSandboxOperationError and leaves the directory", async () => {
    await sb.run("mkdir -p /tmp/a-dir && echo keep > /tmp/a-dir/f");
    const e = await thrown(sb.write("/tmp/a-dir", "x"));
    expect(e).toBeInstanceOf(LangSmithSandboxOperationError);
    // The server's wire type for IS_A_DIRECTORY is "ReadError" even on upload, so the client
    // reports operation "read" for this write; only the class is asserted.
    expect((await sb.run("cat /tmp/a-dir/f")).stdout).toBe("keep\n");
  });

  it("read() of a missing file throws LangSmithResourceNotFoundError", async () => {
    const e = await thrown(sb.read("/tmp/definitely/not/here.txt"));
    expect(e).toBeInstanceOf(LangSmithResourceNotFoundError);
    expect((e as InstanceType<typeof LangSmithResourceNotFoundError>).resourceType).toBe("file");
  });

  it("getSandbox and listSandboxes include the sandbox", async () => {
    const got = await client.getSandbox("client-box");
    expect(got.id).toBe(sb.id);
    expect(got.status).toBe("ready");
    expect(got.dataplane_url).toBe(sb.dataplane_url);
    const all = await client.listSandboxes();
    expect(all.map((s) => s.id)).toContain(sb.id);
    expect(all.find((s) => s.id === sb.id)?.name).toBe("client-box");
  });

  it("the /api/v2/sandboxes endpoint works too", async () => {
    const apiClient = new SandboxClient({ apiEndpoint: `${w.t.url}/api/v2/sandboxes`, apiKey: w.t.apiKey });
    const got = await apiClient.getSandbox("client-box");
    expect(got.id).toBe(sb.id);
    expect((await got.run("echo via-api")).stdout).toBe("via-api\n");
    const snaps = await apiClient.listSnapshots();
    expect(snaps.map((s) => s.id).sort()).toEqual([clientSnapId, w.snapshots.python].sort());
  });

  it("a wrong API key raises LangSmithSandboxAuthenticationError", async () => {
    const bad = new SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: "sb_wrong_key", maxRetries: 0 });
    expect(await thrown(bad.listSandboxes())).toBeInstanceOf(LangSmithSandboxAuthenticationError);
    expect(await thrown(bad.getSnapshot(clientSnapId))).toBeInstanceOf(LangSmithSandboxAuthenticationError);
  });

  it("createSandbox({ snapshotName }) works, and renaming onto a taken name is a name conflict", async () => {
    const byName = await client.createSandbox({ snapshotName: "python", name: "client-by-name" });
    try {
      expect(byName.snapshot_id).toBe(w.snapshots.python);
      expect(byName.status).toBe("ready");
      expect((await byName.run("python3 -c 'import sys; print(sys.version_info[0])'")).stdout).toBe("3\n");
      const e = await thrown(client.updateSandbox("client-by-name", { newName: "client-box" }));
      expect(e).toBeInstanceOf(LangSmithResourceNameConflictError);
    } finally {
      await client.deleteSandbox("client-by-name");
    }
    const e = await thrown(client.getSandbox("client-by-name"));
    expect(e).toBeInstanceOf(LangSmithResourceNotFoundError);
  });

  it("deleteSandbox, then deleteSnapshot; a deleted sandbox is not found", async () => {
    await client.deleteSandbox("client-box");
    const e = await thrown(client.getSandbox("client-box"));
    expect(e).toBeInstanceOf(LangSmithResourceNotFoundError);
    expect((e as InstanceType<typeof LangSmithResourceNotFoundError>).resourceType).toBe("sandbox");
    expect((await client.listSandboxes()).map((s) => s.id)).not.toContain(sb.id);

    await client.deleteSnapshot(clientSnapId);
    const e2 = await thrown(client.getSnapshot(clientSnapId));
    expect(e2).toBeInstanceOf(LangSmithResourceNotFoundError);
    expect((e2 as InstanceType<typeof LangSmithResourceNotFoundError>).resourceType).toBe("snapshot");
    expect((await client.listSnapshots()).map((s) => s.id)).toEqual([w.snapshots.python]);
  });
});
