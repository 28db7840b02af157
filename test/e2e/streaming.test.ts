/**
 * Streaming command sessions over WebSocket through @sandbar/sdk and through the official
 * LangSmith client: live output, stdin, kill, reconnect with offsets, lifetimes, pty.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient, CommandNotFoundError, SessionExpiredError, CommandTimeoutError, type Sandbox } from "@sandbar/sdk";
import * as ls from "langsmith/experimental/sandbox";
import { startWorld, type World } from "../support/fixture.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("streaming command sessions", () => {
  let w: World;
  let client: SandboxClient;
  let sb: Sandbox;

  beforeAll(async () => {
    w = await startWorld(["python"]);
    client = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    sb = await client.createSandbox({ snapshotId: w.snapshots.python, name: "stream-box" });
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("delivers output chunk by chunk while the command runs", async () => {
    const handle = await sb.run("for i in 1 2 3 4 5; do echo $i; sleep 0.3; done", { wait: false });
    const arrivals: [number, string][] = [];
    const t0 = Date.now();
    for await (const chunk of handle) arrivals.push([Date.now() - t0, chunk.data]);
    const result = await handle.result;
    expect(result.stdout).toBe("1\n2\n3\n4\n5\n");
    expect(result.exit_code).toBe(0);
    expect(arrivals.length).toBeGreaterThanOrEqual(4);
    // The first line arrived long before the last: it was streamed, not batched at exit.
    const first = arrivals[0]?.[0] ?? 0;
    const last = arrivals[arrivals.length - 1]?.[0] ?? 0;
    expect(last - first).toBeGreaterThan(900);
    expect(handle.pid).toBeGreaterThan(0);
  });

  it("calls onStdout/onStderr as output arrives when waiting", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const r = await sb.run("echo a; echo b >&2; sleep 0.2; echo c", { onStdout: (d) => out.push(d), onStderr: (d) => err.push(d) });
    expect(out.join("")).toBe("a\nc\n");
    expect(err.join("")).toBe("b\n");
    expect(r).toMatchObject({ stdout: "a\nc\n", stderr: "b\n", exit_code: 0, success: true });
  });

  it("completes the seed's stdin example with the sent input", async () => {
    const handle = await sb.run(`python3 -c 'name = input("Name: "); print(f"Hello {name}")'`, { wait: false, timeout: 30 });
    let seen = "";
    for await (const chunk of handle) {
      seen += chunk.data;
      if (seen.includes("Name:") && !seen.includes("Hello")) handle.sendInput("World\n");
    }
    const r = await handle.result;
    expect(r.stdout).toBe("Name: Hello World\n");
    expect(r.exit_code).toBe(0);
  });

  it("kill gives a non-zero exit and leaves no process of the command", async () => {
    const handle = await sb.run("sh -c 'sleep 301 & sleep 302 & wait'", { wait: false, timeout: 0 });
    await sleep(300);
    handle.kill();
    const r = await handle.result;
    expect(r.exit_code).not.toBe(0);
    const left = await sb.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
    expect(left.stdout).not.toMatch(/sleep 30[12]/);
  });

  it("reconnects with offsets from another client: together, exactly the bytes, no gap, no duplicate", async () => {
    const script = "for i in $(seq 1 40); do echo line-$i; echo err-$i >&2; sleep 0.05; done";
    const handle = await sb.run(script, { wait: false, timeout: 60 });
    let firstOut = "";
    let firstErr = "";
    for await (const chunk of handle) {
      if (chunk.stream === "stdout") firstOut += chunk.data;
      else firstErr += chunk.data;
      if (firstOut.split("\n").length > 10) break;
    }
    const { lastStdoutOffset, lastStderrOffset, commandId } = handle;
    handle.detach();
    expect(lastStdoutOffset).toBe(new TextEncoder().encode(firstOut).length);
    // A second client in another process picks the command up from those offsets.
    const child = `
      import { SandboxClient } from "@sandbar/sdk";
      const e = process.env;
      const c = new SandboxClient({ endpoint: e.T_ENDPOINT, apiKey: e.T_KEY });
      const h = await (await c.getSandbox("stream-box")).reconnect(e.T_ID, { stdoutOffset: Number(e.T_OUT), stderrOffset: Number(e.T_ERR) });
      let out = "", err = "";
      for await (const ch of h) { if (ch.stream === "stdout") out += ch.data; else err += ch.data; }
      const r = await h.result;
      process.stdout.write(JSON.stringify({ out, err, exit: r.exit_code }));`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", child], {
      cwd: fileURLToPath(new URL("../..", import.meta.url)),
      env: { ...process.env, T_ENDPOINT: w.t.url, T_KEY: w.t.apiKey, T_ID: commandId, T_OUT: String(lastStdoutOffset), T_ERR: String(lastStderrOffset) },
    });
    const rest = JSON.parse(stdout) as { out: string; err: string; exit: number };
    const all = Array.from({ length: 40 }, (_, i) => i + 1);
    expect(firstOut + rest.out).toBe(all.map((i) => `line-${i}\n`).join(""));
    expect(firstErr + rest.err).toBe(all.map((i) => `err-${i}\n`).join(""));
    expect(rest.exit).toBe(0);
  });

  it("kills an unwatched command after idle_timeout, and at once with kill_on_disconnect", async () => {
    const idle = await sb.run("sleep 120; echo survived", { wait: false, timeout: 0, idleTimeout: 1 });
    const idleId = idle.commandId;
    await sleep(200);
    idle.detach();
    const onDisconnect = await sb.run("sleep 120; echo survived", { wait: false, timeout: 0, killOnDisconnect: true });
    await sleep(200);
    onDisconnect.detach();
    await sleep(300);
    const r1 = await (await sb.reconnect(onDisconnect.commandId)).result;
    expect(r1.exit_code).not.toBe(0);
    expect(r1.stdout).toBe("");
    await sleep(2000);
    const r2 = await (await sb.reconnect(idleId)).result;
    expect(r2.exit_code).not.toBe(0);
    expect(r2.stdout).toBe("");
  });

  it("answers SessionExpired after ttl_seconds and CommandNotFound for an unknown id", async () => {
    const h = await sb.run("echo done", { wait: false, ttlSeconds: 1 });
    expect((await h.result).stdout).toBe("done\n");
    const soon = await (await sb.reconnect(h.commandId)).result;
    expect(soon.stdout).toBe("done\n");
    await sleep(2500);
    await expect((await sb.reconnect(h.commandId)).result).rejects.toBeInstanceOf(SessionExpiredError);
    await expect((await sb.reconnect("no-such-command")).result).rejects.toBeInstanceOf(CommandNotFoundError);
  });

  it("raises CommandTimeoutError for a streamed command past its timeout", async () => {
    await expect(sb.run("sleep 30", { timeout: 1, onStdout: () => undefined })).rejects.toBeInstanceOf(CommandTimeoutError);
  });

  it("runs under a pty: tty prints a /dev/pts path and stderr is merged", async () => {
    const h = await sb.run("tty; echo to-stderr >&2", { wait: false, pty: true });
    const r = await h.result;
    expect(r.stdout).toMatch(/^\/dev\/pts\/\d+\r?\n/);
    expect(r.stdout).toContain("to-stderr");
    expect(r.stderr).toBe("");
  });

  it("works the same through langsmith@0.12.0: wait:false iteration, sendInput, kill, reconnect", async () => {
    const c = new ls.SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey });
    const s = await c.getSandbox("stream-box");
    const h = await s.run(`python3 -c 'name = input("Name: "); print(f"Hello {name}")'`, { wait: false, closeInput: false });
    let seen = "";
    for await (const chunk of h) {
      seen += chunk.data;
      if (seen.includes("Name:") && !seen.includes("Hello")) h.sendInput("World\n");
    }
    expect((await h.result).stdout).toBe("Name: Hello World\n");

    const k = await s.run("sleep 300", { wait: false, timeout: 0 });
    await sleep(200);
    k.kill();
    expect((await k.result).exit_code).not.toBe(0);

    const long = await s.run("for i in 1 2 3 4 5 6; do echo n$i; sleep 0.2; done", { wait: false });
    let got = "";
    for await (const chunk of long) {
      got += chunk.data;
      if (got.includes("n2")) break;
    }
    const re = await s.reconnect(long.commandId ?? "", { stdoutOffset: long.lastStdoutOffset });
    let rest = "";
    for await (const chunk of re) rest += chunk.data;
    expect(got + rest).toBe("n1\nn2\nn3\nn4\nn5\nn6\n");
  });
});
