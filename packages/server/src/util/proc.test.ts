import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcError, run, setHostExecHelper } from "./proc.js";

const agent = fileURLToPath(new URL("../../../../agent/bin/sandbar-agent", import.meta.url));

// The same behaviour through the host-exec helper and through a direct spawn.
for (const mode of ["helper", "spawn"] as const) {
  describe.skipIf(mode === "helper" && !existsSync(agent))(`run() via ${mode}`, () => {
    let dir = "";
    beforeAll(async () => {
      setHostExecHelper(mode === "helper" ? agent : null);
      dir = await mkdtemp(join(tmpdir(), "sandbar-proc-"));
    });
    afterAll(async () => {
      setHostExecHelper(null);
      await rm(dir, { recursive: true, force: true });
    });

    it("collects stdout and stderr and the exit code", async () => {
      const r = await run(["sh", "-c", "echo out; echo err >&2; exit 3"], { check: false });
      expect(r).toEqual({ code: 3, stdout: "out\n", stderr: "err\n" });
      await expect(run(["sh", "-c", "echo bad >&2; exit 2"])).rejects.toThrow(ProcError);
      await expect(run(["sh", "-c", "echo bad >&2; exit 2"])).rejects.toThrow(/exited 2: bad/);
    });

    it("feeds input, honours cwd and env, and passes bytes through", async () => {
      expect((await run(["cat"], { input: "héllo\n" })).stdout).toBe("héllo\n");
      expect((await run(["cat"], { input: Buffer.from([0x61, 0x00, 0x62]) })).stdout).toBe("a\0b");
      expect((await run(["pwd"], { cwd: dir })).stdout.trim()).toBe(dir);
      expect((await run(["sh", "-c", "echo $X_PROC_TEST"], { env: { ...process.env, X_PROC_TEST: "v1" } })).stdout).toBe("v1\n");
      // The environment as it is when the program starts, not when the helper did.
      process.env.X_PROC_TEST = "v2";
      try {
        expect((await run(["sh", "-c", "echo $X_PROC_TEST"])).stdout).toBe("v2\n");
      } finally {
        delete process.env.X_PROC_TEST;
      }
      // Without input, stdin is at its end at once.
      expect((await run(["cat"])).stdout).toBe("");
    });

    it("reports a missing program as Node does", async () => {
      await expect(run(["sandbar-no-such-program"])).rejects.toMatchObject({ code: "ENOENT" });
    });

    it("kills on timeout (code 128) and runs many at once", async () => {
      const t0 = Date.now();
      const r = await run(["sleep", "5"], { timeoutMs: 100, check: false });
      expect(r.code).toBe(128);
      expect(Date.now() - t0).toBeLessThan(3000);
      const all = await Promise.all(Array.from({ length: 20 }, (_, i) => run(["sh", "-c", `sleep 0.0${i % 5}; echo ${i}`])));
      expect(all.map((x) => x.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
    });

    it("appends to a log file, detached in a session of its own", async () => {
      const log = join(dir, "console.log");
      await run(["sh", "-c", "echo first"], { logFile: log });
      const r = await run(["sh", "-c", "echo second; echo sid $(ps -o sid= -p $$ | tr -d ' ') pid $$ >&2"], { logFile: log, detached: true });
      expect(r.stdout).toBe("");
      const text = await readFile(log, "utf8");
      expect(text.startsWith("first\nsecond\n")).toBe(true);
      const m = /sid (\d+) pid (\d+)/.exec(text);
      expect(m?.[1]).toBe(m?.[2]);
    });
  });
}
