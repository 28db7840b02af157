/**
 * The TypeScript examples of the LangSmith "Sandbox SDK usage" docs (seed 004) and the
 * snapshot flows of the "Snapshots" docs (seed 000, Python there, TypeScript here), run
 * through @sandbar/sdk against a real server, registry and runtime.
 *
 * Each example is the docs' code with only the import and the client construction changed
 * (`langsmith/experimental/sandbox` -> `@sandbar/sdk`, `LangSmith*Error` -> `*Error`), plus
 * assertions where the docs print. Two more changes, forced by the test image: it has
 * `python3` but neither `python` nor `node`, so `python ...` and `node -e ...` run as
 * `python3 ...`. Out of scope: streaming (onStdout, wait: false, CommandHandle), service
 * URLs and tunnels.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { thrown } from "../support/thrown.js";
import {
  AuthenticationError,
  CommandTimeoutError,
  ResourceNameConflictError,
  ResourceNotFoundError,
  ResourceTimeoutError,
  SandboxClient,
  SandboxClientError,
  ValidationError,
  type Sandbox,
} from "@sandbar/sdk";
import { startWorld, type World } from "../support/fixture.js";


describe("@sandbar/sdk runs the LangSmith SDK docs' TypeScript examples", () => {
  let w: World;
  let client: SandboxClient;
  let snapshotId: string;

  /** The sandbox is gone: getSandbox throws ResourceNotFoundError for it. */
  async function expectDeleted(nameOrId: string): Promise<void> {
    const e = await thrown(client.getSandbox(nameOrId));
    expect(e).toBeInstanceOf(ResourceNotFoundError);
    expect((e as ResourceNotFoundError).resourceType).toBe("sandbox");
  }

  beforeAll(async () => {
    w = await startWorld(["python"]);
    client = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    snapshotId = w.snapshots.python ?? "";
    expect(snapshotId).not.toBe("");
  });
  afterAll(async () => {
    await w?.stop();
  });

  describe("seed 004: Sandbox SDK usage", () => {
    it("create and run a sandbox, with the client configured from SANDBAR_ENDPOINT and SANDBAR_API_KEY", async () => {
      const saved = { SANDBAR_ENDPOINT: process.env.SANDBAR_ENDPOINT, SANDBAR_API_KEY: process.env.SANDBAR_API_KEY };
      process.env.SANDBAR_ENDPOINT = w.t.url;
      process.env.SANDBAR_API_KEY = w.t.apiKey;
      try {
        // Client uses SANDBAR_ENDPOINT and SANDBAR_API_KEY from environment
        const client = new SandboxClient();

        // Create a sandbox from the snapshot and run code
        const sandbox = await client.createSandbox(snapshotId);
        const result = await sandbox.run("python3 -c 'print(2 + 2)'");
        expect(result.stdout).toBe("4\n");
        expect(result.success).toBe(true);
        expect(sandbox.info.status).toBe("ready");
        expect(sandbox.info.snapshot_id).toBe(snapshotId);

        // Don't forget to clean up
        await sandbox.delete();
        await expectDeleted(sandbox.name);
        // Disposing an already deleted sandbox is a no-op, not an error.
        await expect(sandbox[Symbol.asyncDispose]()).resolves.toBeUndefined();
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
      expect(process.env.SANDBAR_API_KEY).toBe(saved.SANDBAR_API_KEY);
    });

    it("run commands: stdout, stderr, exit_code, success, env and cwd", async () => {
      const sandbox = await client.createSandbox(snapshotId);
      try {
        const result = await sandbox.run("echo 'Hello, World!'");

        expect(result.stdout).toBe("Hello, World!\n");
        expect(result.stderr).toBe("");
        expect(result.exit_code).toBe(0);
        expect(result.success).toBe(true);

        // Commands that fail return non-zero exit codes (the Python tab)
        const failed = await sandbox.run("exit 1");
        expect(failed.success).toBe(false);
        expect(failed.exit_code).toBe(1);

        // Pass environment variables and working directory
        const envResult = await sandbox.run("echo $MY_VAR", {
          env: { MY_VAR: "test-value" },
          cwd: "/tmp",
        });
        expect(envResult.stdout).toBe("test-value\n");
        expect((await sandbox.run("pwd", { cwd: "/tmp" })).stdout).toBe("/tmp\n");

        const both = await sandbox.run("echo out; echo err >&2; exit 3");
        expect(both).toEqual({ stdout: "out\n", stderr: "err\n", exit_code: 3, success: false });
      } finally {
        await sandbox.delete();
      }
    });

    it("file operations: write a string, run it, read bytes, write binary", async () => {
      const sandbox = await client.createSandbox(snapshotId);
      try {
        // Write a file (string content)
        await sandbox.write("/app/script.py", "print('Hello from file!')");

        // Run the script
        const result = await sandbox.run("python3 /app/script.py");
        expect(result.stdout).toBe("Hello from file!\n");

        // Read a file (returns Uint8Array)
        const content = await sandbox.read("/app/script.py");
        expect(content).toBeInstanceOf(Uint8Array);
        expect(new TextDecoder().decode(content)).toBe("print('Hello from file!')");

        // Write binary files
        await sandbox.write("/app/data.bin", new Uint8Array([0x00, 0x01, 0x02, 0x03]));
        expect([...(await sandbox.read("/app/data.bin"))]).toEqual([0, 1, 2, 3]);
        expect((await sandbox.run("od -An -tx1 /app/data.bin")).stdout.trim()).toBe("00 01 02 03");
      } finally {
        await sandbox.delete();
      }
    });

    it("lifetime and retention: createSandbox options, updateSandbox, stopSandbox sets stopped_at", async () => {
      const created: Sandbox[] = [];
      try {
        // Default retention (server defaults applied)
        const sandbox = await client.createSandbox(snapshotId);
        created.push(sandbox);
        expect(sandbox.info.idle_ttl_seconds).toBe(600);
        expect(sandbox.info.delete_after_stop_seconds).toBe(14 * 24 * 3600);

        // Aggressive: stop after 5 min idle, delete 1 hour after stop
        const sb = await client.createSandbox(snapshotId, {
          idleTtlSeconds: 300,
          deleteAfterStopSeconds: 3600,
        });
        created.push(sb);
        expect(sb.info).toMatchObject({ idle_ttl_seconds: 300, delete_after_stop_seconds: 3600 });

        // Long-running: never auto-stop, delete 7 days after manual stop
        const longRunning = await client.createSandbox(snapshotId, {
          idleTtlSeconds: 0,
          deleteAfterStopSeconds: 604800,
        });
        created.push(longRunning);
        expect(longRunning.info).toMatchObject({ idle_ttl_seconds: 0, delete_after_stop_seconds: 604800 });

        // Update retention on an existing sandbox
        const updated = await client.updateSandbox(sb.name, {
          idleTtlSeconds: 1800,
          deleteAfterStopSeconds: 2592000, // 30 days
        });
        expect(updated.name).toBe(sb.name);
        expect(updated.info).toMatchObject({ idle_ttl_seconds: 1800, delete_after_stop_seconds: 2592000 });
        expect((await client.getSandbox(sb.name)).info).toMatchObject({ idle_ttl_seconds: 1800, delete_after_stop_seconds: 2592000 });
        // The handle from createSandbox keeps what it saw until refresh().
        expect(sb.info.idle_ttl_seconds).toBe(300);
        expect((await sb.refresh()).idle_ttl_seconds).toBe(1800);

        // "You can also call stopSandbox explicitly — that also populates stopped_at"
        expect(longRunning.info.stopped_at).toBeNull();
        const stopped = await client.stopSandbox(longRunning.name);
        expect(stopped.info.status).toBe("stopped");
        expect(stopped.info.stopped_at).not.toBeNull();
        expect((await client.getSandboxStatus(longRunning.name)).status).toBe("stopped");
        // ...and client.startSandbox(name) brings it back, clearing stopped_at.
        const restarted = await client.startSandbox(longRunning.name);
        expect(restarted.info).toMatchObject({ status: "ready", stopped_at: null });
        expect((await restarted.run("echo back")).stdout).toBe("back\n");

        // Both timers are whole minutes.
        const bad = await thrown(client.createSandbox(snapshotId, { idleTtlSeconds: 61 }));
        expect(bad).toBeInstanceOf(ValidationError);
        expect((bad as ValidationError).fields).toContainEqual(["body", "idle_ttl_seconds"]);
      } finally {
        for (const s of created) await s.delete();
      }
    });

    it("error handling: the docs' example, a missing sandbox, a wrong key", async () => {
      const logs: string[] = [];
      let caught: unknown;
      try {
        const sandbox = await client.createSandbox("not-a-real-snapshot");
        await sandbox.delete();
      } catch (e) {
        caught = e;
        if (e instanceof ResourceNotFoundError) {
          logs.push(`${e.resourceType} not found: ${e.message}`);
        } else if (e instanceof ResourceTimeoutError) {
          // The docs print `e.resourceType` here; sandbar's ResourceTimeoutError has none.
          logs.push(`Timeout waiting: ${e.message}`);
        } else if (e instanceof SandboxClientError) {
          logs.push(`Error: ${e.message}`);
        }
      }
      expect(caught).toBeInstanceOf(ResourceNotFoundError);
      expect(caught).toBeInstanceOf(SandboxClientError);
      expect(caught).toMatchObject({ resourceType: "snapshot", code: "SNAPSHOT_NOT_FOUND", status: 404 });
      expect(logs).toHaveLength(1);
      expect(logs[0]).toMatch(/^snapshot not found: .*not-a-real-snapshot/);

      const missing = await thrown(client.getSandbox("no-such-sandbox"));
      expect(missing).toBeInstanceOf(ResourceNotFoundError);
      expect(missing).toMatchObject({ resourceType: "sandbox", code: "SANDBOX_NOT_FOUND", status: 404 });

      const wrongKey = new SandboxClient({ endpoint: w.t.url, apiKey: "wrong-key" });
      const auth = await thrown(wrongKey.listSnapshots());
      expect(auth).toBeInstanceOf(AuthenticationError);
      expect(auth).toMatchObject({ code: "UNAUTHENTICATED", status: 401 });
      expect(await thrown(wrongKey.createSandbox(snapshotId))).toBeInstanceOf(AuthenticationError);
    });

    it("scoped: `await using` deletes the sandbox at the end of the block", async () => {
      let name = "";
      {
        await using sb = await client.createSandbox(snapshotId);
        name = sb.name;
        expect((await sb.run("echo scoped")).stdout).toBe("scoped\n");
        expect((await client.getSandbox(name)).info.status).toBe("ready");
      }
      await expectDeleted(name);
    });

    it("scoped: withSandbox returns fn's value and deletes; a command timeout inside it is CommandTimeoutError and still deletes", async () => {
      let first = "";
      const out = await client.withSandbox({ snapshotId }, async (sb) => {
        first = sb.name;
        return (await sb.run("python3 -c 'print(1 + 1)'")).stdout;
      });
      expect(out).toBe("2\n");
      await expectDeleted(first);

      // The docs' `sb.run("sleep 999", timeout=10)`, shortened: the command is killed after 1 s.
      let second = "";
      let elapsed = 0;
      const e = await thrown(
        client.withSandbox({ snapshotId }, async (sb) => {
          second = sb.name;
          const started = Date.now();
          try {
            return await sb.run("sleep 5", { timeout: 1 });
          } finally {
            elapsed = Date.now() - started;
          }
        }),
      );
      expect(e).toBeInstanceOf(CommandTimeoutError);
      expect(e).toMatchObject({ code: "COMMAND_TIMEOUT", status: 408 });
      expect(elapsed).toBeGreaterThanOrEqual(900);
      expect(elapsed).toBeLessThan(4500);
      expect(second).not.toBe("");
      await expectDeleted(second);
    });
  });

  describe("docs/sdk.md: the client methods the seeds do not show", () => {
    it("waitForReady: false + waitForSandbox, listSandboxes, rename, getSandboxStatus, deleteSandbox", async () => {
      const sb = await client.createSandbox({ snapshotId, name: "docs-box", waitForReady: false, labels: { team: "docs" } });
      expect(sb.name).toBe("docs-box");
      const ready = await client.waitForSandbox(sb.name, { timeout: 60 });
      expect(ready.info).toMatchObject({ status: "ready", labels: { team: "docs" } });

      const listed = await client.listSandboxes({ nameContains: "docs-", status: "ready" });
      expect(listed.map((s) => s.name)).toEqual(["docs-box"]);

      const renamed = await client.updateSandbox("docs-box", "docs-box-2");
      expect(renamed.name).toBe("docs-box-2");
      expect(renamed.id).toBe(sb.id);
      expect(await client.getSandboxStatus("docs-box-2")).toMatchObject({ status: "ready" });
      const conflict = await thrown(client.createSandbox({ snapshotId, name: "docs-box-2" }));
      expect(conflict).toBeInstanceOf(ResourceNameConflictError);
      expect(conflict).toMatchObject({ code: "NAME_CONFLICT", status: 409 });

      const noFile = await thrown(renamed.read("/no/such/file"));
      expect(noFile).toBeInstanceOf(ResourceNotFoundError);
      expect(noFile).toMatchObject({ resourceType: "file", code: "FILE_NOT_FOUND" });

      await client.deleteSandbox("docs-box-2");
      await expectDeleted(sb.id);
    });
  });

  describe("seed 000: snapshots", () => {
    it("build, fetch, boot by id and by name, list with paging, delete refused while in use, stop/start keeps files", async () => {
      // Build a snapshot from a Docker image; the call blocks until the snapshot is ready.
      const snapshot = await client.createSnapshot(
        "py-seed",
        `${w.registry.host}/python:latest`,
        1 * 1024 ** 3, // 1 GiB
      );
      expect(snapshot.status).toBe("ready");
      expect(snapshot).toMatchObject({
        name: "py-seed",
        docker_image: `${w.registry.host}/python:latest`,
        fs_capacity_bytes: 1024 ** 3,
        source_sandbox_id: null,
      });

      // Fetch a single snapshot by ID (or by name)
      expect((await client.getSnapshot(snapshot.id)).name).toBe("py-seed");
      expect((await client.getSnapshot("py-seed")).id).toBe(snapshot.id);

      // Boot by ID and by name; pass exactly one of snapshotId / snapshotName
      const sb = await client.createSandbox({ snapshotId: snapshot.id, name: "my-vm" });
      expect(sb.name).toBe("my-vm");
      expect(sb.info.snapshot_id).toBe(snapshot.id);
      const byName = await client.createSandbox({ snapshotName: "py-seed" });
      expect(byName.info.snapshot_id).toBe(snapshot.id);
      const both = await thrown(client.createSandbox({ snapshotId: snapshot.id, snapshotName: "py-seed" }));
      expect(both).toBeInstanceOf(ValidationError);
      expect((both as ValidationError).fields).toContainEqual(["body", "snapshot_id"]);

      // List all snapshots in the workspace
      const snapshots = await client.listSnapshots();
      expect(snapshots.map((s) => [s.id, s.name, s.status])).toEqual(
        expect.arrayContaining([
          [snapshot.id, "py-seed", "ready"],
          [snapshotId, "python", "ready"],
        ]),
      );
      // Filter (case-insensitive substring) and page by advancing offset
      const page = await client.listSnapshots({ nameContains: "PY", limit: 100 });
      expect(page.map((s) => s.name).sort()).toEqual(["py-seed", "python"]);
      const pages: string[][] = [];
      for (let offset = 0; ; offset += 1) {
        const p = await client.listSnapshots({ nameContains: "py", limit: 1, offset });
        if (p.length === 0) break;
        expect(p).toHaveLength(1);
        pages.push(p.map((s) => s.id));
      }
      expect(pages.flat().sort()).toEqual([snapshot.id, snapshotId].sort());
      expect(await client.listSnapshots({ nameContains: "py-seed", limit: 1, offset: 1 })).toEqual([]);

      // Delete a snapshot (fails if any sandbox still references it)
      const inUse = await thrown(client.deleteSnapshot(snapshot.id));
      expect(inUse).toBeInstanceOf(ResourceNameConflictError);
      expect(inUse).toMatchObject({ code: "SNAPSHOT_IN_USE", status: 409 });
      expect((await client.getSnapshot(snapshot.id)).status).toBe("ready");

      // Stop and start: files on the persistent filesystem survive (/root, not /tmp: /tmp is a tmpfs)
      await sb.run("echo 'hello' > /root/state.txt");
      await sb.stop();
      expect(sb.info.status).toBe("stopped");
      await sb.start();
      expect(sb.info.status).toBe("ready");
      const result = await sb.run("cat /root/state.txt");
      expect(result.stdout.trim()).toBe("hello");

      await sb.delete();
      await client.deleteSandbox(byName.name);
      await client.deleteSnapshot(snapshot.id);
      const gone = await thrown(client.getSnapshot(snapshot.id));
      expect(gone).toBeInstanceOf(ResourceNotFoundError);
      expect((gone as ResourceNotFoundError).resourceType).toBe("snapshot");
    });
  });
});
