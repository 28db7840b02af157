import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

describe("commands in a sandbox (runsc, real agent)", () => {
  let w: World;
  let sb: SandboxJson;

  beforeAll(async () => {
    w = await startWorld(["python"]);
    sb = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "exec-box" });
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("runs python and returns its stdout and exit code", async () => {
    const r = await w.exec(sb, "python3 -c 'print(2 + 2)'");
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ stdout: "4\n", stderr: "", exit_code: 0 });
  });

  it("reports a non-zero exit code", async () => {
    const r = await w.exec(sb, "exit 3");
    expect(r.body.exit_code).toBe(3);
  });

  it("honours env and cwd, and the hostname is the sandbox name", async () => {
    const r = await w.exec(sb, 'echo "$MY_VAR"; pwd; hostname', { env: { MY_VAR: "test-value" }, cwd: "/tmp" });
    expect(r.body.stdout).toBe("test-value\n/tmp\nexec-box\n");
  });

  it("separates stderr from stdout", async () => {
    const r = await w.exec(sb, "echo out; echo err >&2");
    expect(r.body.stdout).toBe("out\n");
    expect(r.body.stderr).toBe("err\n");
  });

  it("kills a command past its timeout together with its children", async () => {
    const started = Date.now();
    const r = await w.exec(sb, "sleep 300 & sleep 301 & sleep 302", { timeout: 1 });
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(r.status).toBe(408);
    expect(r.body.code).toBe("COMMAND_TIMEOUT");
    const left = await w.exec(sb, "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done | grep -c '^sleep 30' || true");
    expect(left.body.stdout.trim()).toBe("0");
  });

  it("falls back to /bin/sh when the requested shell is missing", async () => {
    const r = await w.exec(sb, "echo fallback", { shell: "/bin/zsh-not-here" });
    expect(r.body).toMatchObject({ stdout: "fallback\n", exit_code: 0 });
  });

  it("limits memory to mem_bytes: under gVisor the whole sandbox is stopped, and starts again with its files", async () => {
    const small = await w.createSandbox({ snapshot_id: w.snapshots.python, mem_bytes: 64 * 1024 * 1024 });
    const up = await fetch(`${small.dataplane_url}/upload?path=/root/kept.txt`, { method: "POST", headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" }, body: "kept" });
    expect(up.status).toBe(200);
    const r = await w.exec(small, "python3 -c 'x = bytearray(300 * 1024 * 1024); print(len(x))'");
    // Either the process is killed (exit != 0) or the sandbox with it; it never gets the memory.
    expect(r.body.stdout ?? "").not.toContain("314572800");
    if (r.status === 200) expect(r.body.exit_code).not.toBe(0);
    let status = "";
    for (let i = 0; i < 50 && status !== "stopped"; i++) {
      status = ((await (await w.t.call("GET", `/boxes/${small.id}/status`)).json()) as { status: string }).status;
      if (status !== "stopped") await new Promise((res) => setTimeout(res, 200));
    }
    expect(status).toBe("stopped");
    expect((await w.t.call("POST", `/boxes/${small.id}/start`, {})).status).toBe(200);
    const back = await w.exec(small, "cat /root/kept.txt");
    expect(back.body.stdout).toBe("kept");
    expect((await w.t.call("DELETE", `/boxes/${small.id}`)).status).toBe(204);
  });
});
