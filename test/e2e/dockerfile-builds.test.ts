import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient } from "@sandbar/sdk";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { waitSnapshot } from "../support/sandbar-server.js";

const DOCKERFILE = `# the test image, from a snapshot of the same name
FROM python
ARG GREETING=hello
ENV APP_HOME=/srv/app \\
    GREETING_ENV=\${GREETING}-env
WORKDIR $APP_HOME
COPY app.txt ./
COPY --chown=1000:1000 data/ ./data/
RUN echo "built with $GREETING" > built.txt && mkdir -p /opt/out && python3 -c "print(6*7)" > /opt/out/answer
RUN useradd -m -u 1000 appuser
USER appuser
RUN whoami > /home/appuser/who && touch /home/appuser/made-by-user
LABEL org.example.purpose=test
CMD ["python3", "-m", "http.server", "8000"]
`;

const MULTI = `FROM python AS builder
RUN mkdir -p /out && echo "artifact from stage one" > /out/artifact.txt
FROM busybox
COPY --from=builder /out/artifact.txt /artifact.txt
`;

interface BuildResult {
  id: string;
  status: string;
  status_message: string | null;
  log: string;
}

describe("Dockerfile builds", () => {
  let w: World;
  let ctx: string;
  const made: string[] = [];

  const build = async (name: string, dockerfile: string, opts: { buildArgs?: Record<string, string>; target?: string; contextDir?: string } = {}): Promise<BuildResult> => {
    const form = new FormData();
    form.set("name", name);
    form.set("dockerfile", dockerfile);
    if (opts.buildArgs) form.set("build_args", JSON.stringify(opts.buildArgs));
    if (opts.target) form.set("target", opts.target);
    if (opts.contextDir) {
      const tar = `${opts.contextDir}.tar`;
      execFileSync("tar", ["-C", opts.contextDir, "-cf", tar, "."]);
      form.set("context", new Blob([await readFile(tar)]), "context.tar");
    }
    const res = await fetch(`${w.t.api}/snapshots/build`, { method: "POST", headers: { "x-api-key": w.t.apiKey }, body: form });
    const json = (await res.json()) as { id: string; code?: string; message?: string };
    if (res.status !== 201) return { id: "", status: `http ${res.status}`, status_message: `${json.code ?? ""}: ${json.message ?? ""}`, log: "" };
    made.push(json.id);
    // Follow the log as it is written; it ends with the build.
    const log = await (await fetch(`${w.t.api}/snapshots/${json.id}/build-log?follow=true`, { headers: { "x-api-key": w.t.apiKey } })).text();
    const s = await waitSnapshot(w.t, json.id, 600_000);
    return { id: json.id, status: s.status, status_message: s.status_message, log };
  };
  const out = async (sb: SandboxJson, cmd: string): Promise<string> => {
    const r = await w.exec(sb, cmd);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.stdout.trim();
  };

  beforeAll(async () => {
    w = await startWorld(["python", "busybox"]);
    ctx = await mkdtemp(join(tmpdir(), "sandbar-build-ctx-"));
    await writeFile(join(ctx, "app.txt"), "app v1\n");
    await mkdir(join(ctx, "data"));
    await writeFile(join(ctx, "data", "rows.csv"), "a,b\n1,2\n");
  }, 600_000);
  afterAll(async () => {
    await w?.stop();
    if (ctx) await rm(ctx, { recursive: true, force: true });
    if (ctx) await rm(`${ctx}.tar`, { force: true });
  });

  let first: BuildResult;
  it("builds a Dockerfile with ARG, ENV, WORKDIR, COPY, RUN and USER; a sandbox shows each effect", async () => {
    first = await build("built-app", DOCKERFILE, { buildArgs: { GREETING: "override" }, contextDir: ctx });
    expect(first.status, `${first.status_message}\n${first.log}`).toBe("ready");
    expect(first.log).toMatch(/Step 2\/\d+ : ARG GREETING=hello/);
    expect(first.log).toContain("Successfully built snapshot built-app");
    const sb = await w.createSandbox({ snapshot_id: first.id, name: "from-dockerfile" });
    expect(await out(sb, "pwd")).toBe("/srv/app");
    expect(await out(sb, "echo $APP_HOME $GREETING_ENV")).toBe("/srv/app override-env");
    expect(await out(sb, "cat /srv/app/app.txt")).toBe("app v1");
    expect(await out(sb, "cat /srv/app/built.txt")).toBe("built with override");
    expect(await out(sb, "cat /opt/out/answer")).toBe("42");
    expect(await out(sb, "stat -c '%u:%g' /srv/app/data/rows.csv")).toBe("1000:1000");
    // USER: commands in the sandbox run as that user, and the RUN after USER ran as it too.
    expect(await out(sb, "whoami")).toBe("appuser");
    expect(await out(sb, "cat /home/appuser/who")).toBe("appuser");
    expect(await out(sb, "stat -c '%U' /home/appuser/made-by-user")).toBe("appuser");
  });

  it("rebuilding unchanged is a cache hit for every step", async () => {
    const again = await build("built-app-again", DOCKERFILE, { buildArgs: { GREETING: "override" }, contextDir: ctx });
    expect(again.status, again.log).toBe("ready");
    const steps = [...again.log.matchAll(/^Step \d+\/\d+ : (.*)$/gm)].map((m) => m[1] as string).filter((s) => !s.startsWith("FROM"));
    const hits = again.log.match(/^ ---> Using cache$/gm) ?? [];
    expect(steps.length).toBeGreaterThan(8);
    expect(hits.length).toBe(steps.length);
  });

  it("changing one COPY source rebuilds from that step on", async () => {
    await writeFile(join(ctx, "app.txt"), "app v2\n");
    const changed = await build("built-app-v2", DOCKERFILE, { buildArgs: { GREETING: "override" }, contextDir: ctx });
    expect(changed.status, changed.log).toBe("ready");
    // Blocks of "Step N : X" followed by its result lines.
    const blocks = changed.log.split(/^(?=Step \d+\/\d+ : )/m).filter((b) => b.startsWith("Step"));
    const cached = (text: string): boolean => blocks.find((b) => b.includes(` : ${text}`))?.includes(" ---> Using cache") ?? false;
    expect(cached("ARG GREETING=hello")).toBe(true);
    expect(cached("WORKDIR $APP_HOME")).toBe(true);
    expect(cached("COPY app.txt ./")).toBe(false);
    expect(cached("COPY --chown=1000:1000 data/ ./data/")).toBe(false);
    expect(cached("RUN useradd -m -u 1000 appuser")).toBe(false);
    const sb = await w.createSandbox({ snapshot_id: changed.id, name: "from-dockerfile-v2" });
    expect(await out(sb, "cat /srv/app/app.txt")).toBe("app v2");
  });

  it("a multi-stage build copies an artifact from the first stage", async () => {
    const multi = await build("multi-stage", MULTI);
    expect(multi.status, multi.log).toBe("ready");
    const sb = await w.createSandbox({ snapshot_id: multi.id, name: "from-multi" });
    const r = await w.exec(sb, "cat /artifact.txt; test -e /usr/bin/python3 && echo has-python || echo no-python", { shell: "/bin/sh" });
    expect(r.body.stdout).toBe("artifact from stage one\nno-python\n");
  });

  it("target picks a stage", async () => {
    const builder = await build("multi-target", MULTI, { target: "builder" });
    expect(builder.status, builder.log).toBe("ready");
    const sb = await w.createSandbox({ snapshot_id: builder.id, name: "from-target" });
    expect(await out(sb, "cat /out/artifact.txt && test -e /usr/bin/python3 && echo has-python")).toBe("artifact from stage one\nhas-python");
  });

  it("a RUN's output reaches a following client while the step still runs", async () => {
    const form = new FormData();
    form.set("name", "streams");
    form.set("dockerfile", "FROM python\nRUN echo first-marker && sleep 3 && echo second-marker\n");
    const res = await fetch(`${w.t.api}/snapshots/build`, { method: "POST", headers: { "x-api-key": w.t.apiKey }, body: form });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const log = await fetch(`${w.t.api}/snapshots/${id}/build-log?follow=true`, { headers: { "x-api-key": w.t.apiKey } });
    const reader = (log.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    let firstAt = 0;
    let secondAt = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
      // Whole output lines (the step's own "Step 2/2 : RUN ..." line names both markers too).
      if (!firstAt && /^first-marker$/m.test(text)) firstAt = Date.now();
      if (!secondAt && /^second-marker$/m.test(text)) secondAt = Date.now();
    }
    expect(firstAt).toBeGreaterThan(0);
    expect(secondAt - firstAt).toBeGreaterThan(2000);
    expect((await waitSnapshot(w.t, id)).status).toBe("ready");
  });

  it("a failing RUN fails the build with its output in the log", async () => {
    const failed = await build("fails", "FROM python\nRUN echo about to fail && exit 3\n");
    expect(failed.status).toBe("failed");
    expect(failed.status_message).toMatch(/RUN exited 3/);
    expect(failed.log).toContain("about to fail");
    expect(failed.log).toMatch(/^ERROR: /m);
  });

  it("unsupported instructions and bad requests get clear errors", async () => {
    const unsupported = await build("nope", "FROM python\nHEALTHCHECK CMD true\n");
    expect(unsupported.status).toBe("http 422");
    expect(unsupported.status_message).toMatch(/HEALTHCHECK/);
    const noFrom = await build("nope2", "RUN true\n");
    expect(noFrom.status).toBe("http 422");
    const res = await fetch(`${w.t.api}/snapshots/build`, { method: "POST", headers: { "x-api-key": w.t.apiKey, "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(400);
    const missing = await build("missing-src", "FROM python\nCOPY nothing-here /x\n", { contextDir: ctx });
    expect(missing.status).toBe("failed");
    expect(missing.status_message).toMatch(/nothing-here/);
  });

  it("the SDK builds from a context directory and streams the log; a failure throws with the log tail", async () => {
    const sdk = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    const lines: string[] = [];
    const snap = await sdk.createSnapshotFromDockerfile("from-sdk", "FROM python\nCOPY app.txt /app.txt\nRUN cat /app.txt > /copied\n", { context: ctx, onBuildLog: (l) => lines.push(l) });
    expect(snap.status).toBe("ready");
    expect(lines.some((l) => l.startsWith("Step 3/3 : RUN cat /app.txt"))).toBe(true);
    const sb = await sdk.createSandbox(snap.id);
    expect((await sb.run("cat /copied")).stdout).toBe(await readFile(join(ctx, "app.txt"), "utf8"));
    await sb.delete();
    const err = await sdk.createSnapshotFromDockerfile("from-sdk-fails", "FROM python\nRUN echo sdk-failure-output && false\n").catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/RUN exited 1/);
    expect((err as Error).message).toContain("sdk-failure-output");
  });

  it("no builder sandbox or helper snapshot is left behind", async () => {
    const boxes = (await (await w.t.call("GET", "/boxes?limit=500")).json()) as { sandboxes: SandboxJson[] };
    expect(boxes.sandboxes.filter((b) => b.name.startsWith("build-"))).toEqual([]);
    const snaps = (await (await w.t.call("GET", "/snapshots?limit=500")).json()) as { snapshots: { name: string }[] };
    expect(snaps.snapshots.filter((s) => s.name.startsWith("."))).toEqual([]);
  });
});
