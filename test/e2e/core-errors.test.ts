/**
 * Bad input against a real server over raw HTTP: every answer is checked by its HTTP status and
 * the stable `code` of the JSON body (never by message, except where a status_message must name
 * a cause). Covers auth, validation, not-found, conflicts, body limits, the data plane's path
 * checks, workspace isolation and list paging.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { waitSnapshot } from "../support/sandbar-server.js";

interface ErrorJson {
  code?: string;
  message?: string;
  detail?: unknown;
  [k: string]: unknown;
}

interface Issue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Assert status and stable code of an error response; returns the body. */
async function expectError(res: Response, status: number, code: string): Promise<ErrorJson> {
  const text = await res.text();
  let body: ErrorJson;
  try {
    body = JSON.parse(text) as ErrorJson;
  } catch {
    throw new Error(`expected a JSON error body with code ${code}, got ${res.status}: ${text.slice(0, 300)}`);
  }
  expect({ status: res.status, code: body.code }, text.slice(0, 500)).toEqual({ status, code });
  expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json/);
  return body;
}

/** A 422 whose `detail` is a non-empty list of value_error issues; returns the issues. */
async function expectValidation(res: Response, field?: string): Promise<Issue[]> {
  const body = await expectError(res, 422, "VALIDATION_ERROR");
  expect(Array.isArray(body.detail)).toBe(true);
  const issues = body.detail as Issue[];
  expect(issues.length).toBeGreaterThan(0);
  for (const i of issues) {
    expect(i.type).toBe("value_error");
    expect(Array.isArray(i.loc)).toBe(true);
  }
  if (field) expect(issues.some((i) => i.loc.includes(field)), JSON.stringify(issues)).toBe(true);
  return issues;
}

/** The status (and body) of a WebSocket upgrade: 101 when it opens. */
function wsUpgrade(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on("unexpected-response", (req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body });
        req.destroy();
      });
    });
    ws.on("open", () => {
      resolve({ status: 101, body: "" });
      ws.close();
    });
    ws.on("error", reject);
  });
}

const wsUrl = (sb: SandboxJson): string => `${sb.dataplane_url.replace(/^http/, "ws")}/execute/ws`;

describe("core errors: status and stable code of bad requests", () => {
  let w: World;
  let sbA: SandboxJson;
  let sbLong: SandboxJson;
  const longName = `err-box-${"l".repeat(55)}`; // 63 chars: the longest DNS label

  /** fetch with an arbitrary key (or none) against a full URL. */
  const req = (key: string | undefined, method: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(url, {
      method,
      headers: { ...(key === undefined ? {} : { "x-api-key": key }), ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });

  beforeAll(async () => {
    w = await startWorld(["python"]);
    sbA = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "err-box-a" });
    sbLong = await w.createSandbox({ snapshot_id: w.snapshots.python, name: longName });
  });
  afterAll(async () => {
    await w?.stop();
  });

  describe("POST /boxes snapshot reference", () => {
    it("an unknown snapshot_id or snapshot_name is 404 SNAPSHOT_NOT_FOUND", async () => {
      await expectError(await w.t.call("POST", "/boxes", { snapshot_id: randomUUID() }), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await w.t.call("POST", "/boxes", { snapshot_name: "no-such-snapshot" }), 404, "SNAPSHOT_NOT_FOUND");
      // A snapshot's name passed as snapshot_id is not a match for the id.
      await expectError(await w.t.call("POST", "/boxes", { snapshot_id: "python" }), 404, "SNAPSHOT_NOT_FOUND");
    });

    it("snapshot_id and snapshot_name together is 422 VALIDATION_ERROR with value_error issues", async () => {
      await expectValidation(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, snapshot_name: "python" }), "snapshot_id");
    });

    it("neither snapshot_id nor snapshot_name is 422 VALIDATION_ERROR", async () => {
      await expectValidation(await w.t.call("POST", "/boxes", {}));
      await expectValidation(await w.t.call("POST", "/boxes", { name: "no-snapshot-given" }));
      const list = (await (await w.t.call("GET", "/boxes?name_contains=no-snapshot")).json()) as { sandboxes: unknown[] };
      expect(list.sandboxes).toEqual([]);
    });
  });

  describe("POST /snapshots of bad images", () => {
    it("an image missing from the registry ends failed, naming the image; it cannot boot a sandbox", async () => {
      const image = `${w.registry.host}/nope:latest`;
      const res = await w.t.call("POST", "/snapshots", { name: "err-nope", docker_image: image });
      expect(res.status).toBe(201);
      const s = await waitSnapshot(w.t, ((await res.json()) as { id: string }).id, 60_000);
      expect(s.status).toBe("failed");
      expect(s.status_message ?? "").toContain(image);
      expect(s.status_message ?? "").toMatch(/not found/i);
      await expectError(await w.t.call("POST", "/boxes", { snapshot_id: s.id }), 409, "SNAPSHOT_NOT_READY");
      expect((await w.t.call("DELETE", `/snapshots/${s.id}`)).status).toBe(204);
    });

    it("an image on a dead registry ends failed with 'unreachable'", async () => {
      const res = await w.t.call("POST", "/snapshots", { name: "err-dead", docker_image: "127.0.0.1:1/x:latest" });
      expect(res.status).toBe(201);
      const s = await waitSnapshot(w.t, ((await res.json()) as { id: string }).id, 60_000);
      expect(s.status).toBe("failed");
      expect(s.status_message ?? "").toMatch(/unreachable/i);
      expect(s.status_message ?? "").toContain("127.0.0.1:1");
      expect((await w.t.call("DELETE", `/snapshots/${s.id}`)).status).toBe(204);
    });

    it("a malformed reference is accepted (201) and ends failed with 'bad image reference'", async () => {
      const res = await w.t.call("POST", "/snapshots", { name: "err-malformed", docker_image: "UPPER/Case::bad" });
      expect(res.status).toBe(201);
      const s = await waitSnapshot(w.t, ((await res.json()) as { id: string }).id, 60_000);
      expect(s.status).toBe("failed");
      expect(s.status_message ?? "").toContain("bad image reference");
      expect((await w.t.call("DELETE", `/snapshots/${s.id}`)).status).toBe(204);
    });

    it("bad snapshot bodies are 422", async () => {
      await expectValidation(await w.t.call("POST", "/snapshots", { name: "has spaces", docker_image: "x" }), "name");
      await expectValidation(await w.t.call("POST", "/snapshots", { name: "ok-name" }), "docker_image");
      await expectValidation(await w.t.call("POST", "/snapshots", { name: "ok-name", docker_image: "" }), "docker_image");
      await expectValidation(await w.t.call("POST", "/snapshots", { name: "ok-name", docker_image: "x", fs_capacity_bytes: 1 }), "fs_capacity_bytes");
    });
  });

  describe("authentication", () => {
    it("GET /healthz needs no key", async () => {
      const res = await fetch(`${w.t.url}/healthz`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ok" });
    });

    it("a wrong key is 401 UNAUTHENTICATED on the control plane", async () => {
      await expectError(await req("sb_wrong", "GET", `${w.t.api}/boxes`), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "GET", `${w.t.api}/boxes/${sbA.name}`), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "GET", `${w.t.api}/snapshots`), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "POST", `${w.t.api}/boxes`, { snapshot_id: w.snapshots.python }), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "DELETE", `${w.t.api}/boxes/${sbA.name}`), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "GET", `${w.t.url}/api/v2/sandboxes/boxes`), 401, "UNAUTHENTICATED");
      // Nothing was deleted.
      expect((await w.t.call("GET", `/boxes/${sbA.name}`)).status).toBe(200);
    });

    it("a wrong key is 401 UNAUTHENTICATED on the data plane (execute, upload, download)", async () => {
      await expectError(await req("sb_wrong", "POST", `${sbA.dataplane_url}/execute`, { command: "touch /tmp/wrong-key" }), 401, "UNAUTHENTICATED");
      await expectError(await req("sb_wrong", "GET", `${sbA.dataplane_url}/download?path=/etc/hostname`), 401, "UNAUTHENTICATED");
      await expectError(
        await req("sb_wrong", "POST", `${sbA.dataplane_url}/upload?path=/tmp/wrong-key-upload`, "x", { "content-type": "application/octet-stream" }),
        401,
        "UNAUTHENTICATED",
      );
      // Auth is checked before the sandbox is looked up: an unknown id does not leak as 404.
      await expectError(await req("sb_wrong", "POST", `${w.t.url}/dataplane/${randomUUID()}/execute`, { command: "true" }), 401, "UNAUTHENTICATED");
      const check = await w.exec(sbA, "for f in /tmp/wrong-key /tmp/wrong-key-upload; do test -e $f && echo $f; done; true");
      expect(check.body).toMatchObject({ stdout: "", exit_code: 0 });
    });

    it("a wrong or missing key is 401 on the WebSocket upgrade; the right key opens it", async () => {
      const wrong = await wsUpgrade(wsUrl(sbA), { "x-api-key": "sb_wrong" });
      expect(wrong.status).toBe(401);
      expect((JSON.parse(wrong.body) as ErrorJson).code).toBe("UNAUTHENTICATED");
      const missing = await wsUpgrade(wsUrl(sbA), {});
      expect(missing.status).toBe(401);
      expect((JSON.parse(missing.body) as ErrorJson).code).toBe("UNAUTHENTICATED");
      const right = await wsUpgrade(wsUrl(sbA), { "x-api-key": w.t.apiKey });
      expect(right.status).toBe(101);
    });

    it("a missing key is 401 UNAUTHENTICATED on both planes", async () => {
      await expectError(await req(undefined, "GET", `${w.t.api}/boxes`), 401, "UNAUTHENTICATED");
      await expectError(await req(undefined, "GET", `${w.t.api}/snapshots/${w.snapshots.python}`), 401, "UNAUTHENTICATED");
      await expectError(await req(undefined, "POST", `${sbA.dataplane_url}/execute`, { command: "true" }), 401, "UNAUTHENTICATED");
      await expectError(await req(undefined, "GET", `${sbA.dataplane_url}/download?path=/etc/hostname`), 401, "UNAUTHENTICATED");
      await expectError(await req("", "GET", `${w.t.api}/boxes`), 401, "UNAUTHENTICATED");
    });

    it("a revoked key is 401 on both planes", async () => {
      const { key, view } = await w.t.server.keys.createKey("default", "to-revoke");
      const before = await req(key, "GET", `${w.t.api}/boxes/${sbA.name}`);
      expect(before.status).toBe(200);
      const ran = await req(key, "POST", `${sbA.dataplane_url}/execute`, { command: "echo live" });
      expect(ran.status).toBe(200);
      await w.t.server.keys.revoke(view.id);
      await expectError(await req(key, "GET", `${w.t.api}/boxes/${sbA.name}`), 401, "UNAUTHENTICATED");
      await expectError(await req(key, "POST", `${sbA.dataplane_url}/execute`, { command: "echo live" }), 401, "UNAUTHENTICATED");
      expect((await wsUpgrade(wsUrl(sbA), { "x-api-key": key })).status).toBe(401);
      // The bootstrap key is unaffected.
      expect((await w.t.call("GET", `/boxes/${sbA.name}`)).status).toBe(200);
    });
  });

  describe("field validation", () => {
    it("idle_ttl_seconds: 61 and delete_after_stop_seconds: -60 are 422", async () => {
      await expectValidation(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, idle_ttl_seconds: 61 }), "idle_ttl_seconds");
      await expectValidation(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, delete_after_stop_seconds: -60 }), "delete_after_stop_seconds");
      await expectValidation(await w.t.call("PATCH", `/boxes/${sbA.name}`, { idle_ttl_seconds: 61 }), "idle_ttl_seconds");
      await expectValidation(await w.t.call("PATCH", `/boxes/${sbA.name}`, { delete_after_stop_seconds: -60 }), "delete_after_stop_seconds");
      // Unchanged.
      const got = (await (await w.t.call("GET", `/boxes/${sbA.name}`)).json()) as SandboxJson;
      expect(got.idle_ttl_seconds).not.toBe(61);
      expect(got.delete_after_stop_seconds).not.toBe(-60);
    });

    it("bad sandbox names are 422 on create and rename; a 63-char name is fine", async () => {
      for (const name of ["Has Spaces", "a/b", "ñame", "x".repeat(64), "-leading", "trailing-", "UPPER", ""]) {
        await expectValidation(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, name }), "name");
        await expectValidation(await w.t.call("PATCH", `/boxes/${sbA.name}`, { name }), "name");
      }
      expect(sbLong.name).toBe(longName);
      expect(sbLong.name.length).toBe(63);
      expect(sbLong.status).toBe("ready");
      const list = (await (await w.t.call("GET", "/boxes?limit=500")).json()) as { sandboxes: SandboxJson[] };
      expect(list.sandboxes.map((s) => s.name).sort()).toEqual([longName, "err-box-a"].sort());
    });

    it("malformed JSON is 400 INVALID_REQUEST", async () => {
      await expectError(await req(w.t.apiKey, "POST", `${w.t.api}/boxes`, "{not json"), 400, "INVALID_REQUEST");
      await expectError(await req(w.t.apiKey, "PATCH", `${w.t.api}/boxes/${sbA.name}`, '{"name": '), 400, "INVALID_REQUEST");
      await expectError(await req(w.t.apiKey, "POST", `${w.t.api}/snapshots`, "[1,"), 400, "INVALID_REQUEST");
      await expectError(await req(w.t.apiKey, "POST", `${sbA.dataplane_url}/execute`, "{command: echo}"), 400, "INVALID_REQUEST");
    });

    // error-codes.ts and docs/api.md: INVALID_REQUEST is "malformed (bad JSON, wrong content
    // type)"; "other 4xx (invalid JSON, empty JSON body, unsupported content type)".
    it("a body with a non-JSON content type is 400 INVALID_REQUEST", async () => {
      const form = await req(w.t.apiKey, "POST", `${w.t.api}/boxes`, "snapshot_id=x", { "content-type": "application/x-www-form-urlencoded" });
      await expectError(form, 400, "INVALID_REQUEST");
      const text = await req(w.t.apiKey, "POST", `${w.t.api}/boxes`, "snapshot_id=x", { "content-type": "text/plain" });
      await expectError(text, 400, "INVALID_REQUEST");
    });

    it("a JSON body over 4 MiB is 413 PAYLOAD_TOO_LARGE", async () => {
      const big = "a".repeat(4 * 1024 * 1024 + 1024);
      await expectError(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, labels: { big } }), 413, "PAYLOAD_TOO_LARGE");
      await expectError(await req(w.t.apiKey, "POST", `${sbA.dataplane_url}/execute`, { command: `echo ${big}` }), 413, "PAYLOAD_TOO_LARGE");
      // The server is fine afterwards.
      expect((await w.exec(sbA, "echo ok")).body.stdout).toBe("ok\n");
    });
  });

  describe("not found and conflicts", () => {
    it("unknown sandboxes are 404 SANDBOX_NOT_FOUND on every /boxes route", async () => {
      await expectError(await w.t.call("GET", "/boxes/does-not-exist"), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("GET", `/boxes/${randomUUID()}`), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("GET", "/boxes/does-not-exist/status"), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("PATCH", "/boxes/does-not-exist", { idle_ttl_seconds: 60 }), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("DELETE", "/boxes/does-not-exist"), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("POST", "/boxes/does-not-exist/stop", {}), 404, "SANDBOX_NOT_FOUND");
      await expectError(await w.t.call("POST", "/boxes/does-not-exist/start", {}), 404, "SANDBOX_NOT_FOUND");
    });

    it("unknown snapshots are 404 SNAPSHOT_NOT_FOUND", async () => {
      await expectError(await w.t.call("GET", `/snapshots/${randomUUID()}`), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await w.t.call("DELETE", "/snapshots/no-such-snapshot"), 404, "SNAPSHOT_NOT_FOUND");
    });

    it("a duplicate sandbox name is 409 NAME_CONFLICT and creates nothing", async () => {
      await expectError(await w.t.call("POST", "/boxes", { snapshot_id: w.snapshots.python, name: "err-box-a" }), 409, "NAME_CONFLICT");
      const list = (await (await w.t.call("GET", "/boxes?name_contains=err-box-a")).json()) as { sandboxes: SandboxJson[] };
      expect(list.sandboxes.map((s) => s.id)).toEqual([sbA.id]);
    });

    it("a duplicate snapshot name is 409 NAME_CONFLICT", async () => {
      await expectError(await w.t.call("POST", "/snapshots", { name: "python", docker_image: `${w.registry.host}/python:latest` }), 409, "NAME_CONFLICT");
      const list = (await (await w.t.call("GET", "/snapshots?name_contains=python")).json()) as { snapshots: { id: string }[] };
      expect(list.snapshots.map((s) => s.id)).toEqual([w.snapshots.python]);
    });

    it("renaming onto a taken name is 409 NAME_CONFLICT and keeps the old name", async () => {
      await expectError(await w.t.call("PATCH", `/boxes/${sbA.name}`, { name: longName }), 409, "NAME_CONFLICT");
      const got = (await (await w.t.call("GET", `/boxes/${sbA.id}`)).json()) as SandboxJson;
      expect(got.name).toBe("err-box-a");
    });

    it("deleting a snapshot a sandbox uses is 409 SNAPSHOT_IN_USE and keeps it", async () => {
      await expectError(await w.t.call("DELETE", `/snapshots/${w.snapshots.python}`), 409, "SNAPSHOT_IN_USE");
      await expectError(await w.t.call("DELETE", "/snapshots/python"), 409, "SNAPSHOT_IN_USE");
      const s = (await (await w.t.call("GET", `/snapshots/${w.snapshots.python}`)).json()) as { status: string };
      expect(s.status).toBe("ready");
    });

    // docs/api.md: a known path with a method it does not serve is ROUTE_NOT_FOUND (never 405).
    it("a known route with the wrong method is 404 ROUTE_NOT_FOUND and does nothing", async () => {
      await expectError(await w.t.call("PUT", "/boxes"), 404, "ROUTE_NOT_FOUND");
      await expectError(await w.t.call("PATCH", `/snapshots/${w.snapshots.python}`, { name: "renamed" }), 404, "ROUTE_NOT_FOUND");
      await expectError(await w.t.call("PUT", `/boxes/${sbA.name}`, { name: "renamed" }), 404, "ROUTE_NOT_FOUND");
      expect((await w.t.call("GET", `/snapshots/python`)).status).toBe(200);
      expect((await w.t.call("GET", `/boxes/${sbA.name}`)).status).toBe(200);
    });

    it("unknown routes are 404 ROUTE_NOT_FOUND", async () => {
      await expectError(await w.t.call("GET", "/no-such-route"), 404, "ROUTE_NOT_FOUND");
      await expectError(await req(w.t.apiKey, "GET", `${w.t.url}/v3/sandboxes/boxes`), 404, "ROUTE_NOT_FOUND");
      await expectError(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/no-such-op`), 404, "ROUTE_NOT_FOUND");
    });
  });

  describe("data plane paths and ids", () => {
    it("a relative or missing download path is 422 VALIDATION_ERROR", async () => {
      await expectValidation(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download?path=etc/passwd`), "path");
      await expectValidation(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download`), "path");
      await expectValidation(
        await req(w.t.apiKey, "POST", `${sbA.dataplane_url}/upload?path=tmp/rel.txt`, "x", { "content-type": "application/octet-stream" }),
        "path",
      );
    });

    it("downloading a directory is 400 IS_A_DIRECTORY; a missing file is 404 FILE_NOT_FOUND", async () => {
      await expectError(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download?path=/etc`), 400, "IS_A_DIRECTORY");
      await expectError(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download?path=/etc/no-such-file`), 404, "FILE_NOT_FOUND");
      // Positive control: a real file downloads.
      expect((await w.exec(sbA, "mkdir -p /tmp/dl && echo payload > /tmp/dl/f.txt")).body.exit_code).toBe(0);
      await expectError(await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download?path=/tmp/dl`), 400, "IS_A_DIRECTORY");
      const ok = await req(w.t.apiKey, "GET", `${sbA.dataplane_url}/download?path=/tmp/dl/f.txt`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toBe("payload\n");
      // Uploading onto a directory is refused too, and leaves it a directory.
      const up = await req(w.t.apiKey, "POST", `${sbA.dataplane_url}/upload?path=/tmp/dl`, "x", { "content-type": "application/octet-stream" });
      const upBody = await expectError(up, 400, "WRITE_ERROR");
      // The wire type tells the official client it was a write that failed.
      expect(upBody.detail).toMatchObject({ error: "WriteError" });
      expect((await w.exec(sbA, "test -d /tmp/dl && cat /tmp/dl/f.txt")).body.stdout).toBe("payload\n");
    });

    it("an unknown sandbox id is 404 SANDBOX_NOT_FOUND on the data plane", async () => {
      const base = `${w.t.url}/dataplane/${randomUUID()}`;
      await expectError(await req(w.t.apiKey, "POST", `${base}/execute`, { command: "true" }), 404, "SANDBOX_NOT_FOUND");
      await expectError(await req(w.t.apiKey, "GET", `${base}/download?path=/etc/hostname`), 404, "SANDBOX_NOT_FOUND");
      await expectError(await req(w.t.apiKey, "POST", `${base}/upload?path=/tmp/x`, "x", { "content-type": "application/octet-stream" }), 404, "SANDBOX_NOT_FOUND");
    });

    it("a data plane id that is not a uuid is 422 VALIDATION_ERROR (the name is not accepted)", async () => {
      await expectValidation(await req(w.t.apiKey, "POST", `${w.t.url}/dataplane/not-a-uuid/execute`, { command: "true" }));
      await expectValidation(await req(w.t.apiKey, "POST", `${w.t.url}/dataplane/${sbA.name}/execute`, { command: "true" }));
      await expectValidation(await req(w.t.apiKey, "GET", `${w.t.url}/dataplane/not-a-uuid/download?path=/etc/hostname`));
    });
  });

  describe("workspace isolation", () => {
    let otherKey: string;

    beforeAll(async () => {
      otherKey = (await w.t.server.keys.createKey("other-ws", "k")).key;
    });

    it("another workspace's key gets 404 (not 403) for our sandbox by name and by id, and changes nothing", async () => {
      for (const ref of [sbA.name, sbA.id]) {
        await expectError(await req(otherKey, "GET", `${w.t.api}/boxes/${ref}`), 404, "SANDBOX_NOT_FOUND");
        await expectError(await req(otherKey, "GET", `${w.t.api}/boxes/${ref}/status`), 404, "SANDBOX_NOT_FOUND");
        await expectError(await req(otherKey, "PATCH", `${w.t.api}/boxes/${ref}`, { name: "stolen" }), 404, "SANDBOX_NOT_FOUND");
        await expectError(await req(otherKey, "POST", `${w.t.api}/boxes/${ref}/stop`, {}), 404, "SANDBOX_NOT_FOUND");
        await expectError(await req(otherKey, "DELETE", `${w.t.api}/boxes/${ref}`), 404, "SANDBOX_NOT_FOUND");
      }
      const got = (await (await w.t.call("GET", `/boxes/${sbA.id}`)).json()) as SandboxJson;
      expect(got).toMatchObject({ name: "err-box-a", status: "ready" });
    });

    it("another workspace's key gets 404 for our snapshot and cannot boot from it", async () => {
      await expectError(await req(otherKey, "GET", `${w.t.api}/snapshots/${w.snapshots.python}`), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await req(otherKey, "GET", `${w.t.api}/snapshots/python`), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await req(otherKey, "DELETE", `${w.t.api}/snapshots/${w.snapshots.python}`), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await req(otherKey, "POST", `${w.t.api}/boxes`, { snapshot_id: w.snapshots.python }), 404, "SNAPSHOT_NOT_FOUND");
      await expectError(await req(otherKey, "POST", `${w.t.api}/boxes`, { snapshot_name: "python" }), 404, "SNAPSHOT_NOT_FOUND");
    });

    it("another workspace's key gets 404 on our data plane and runs nothing over the WebSocket", async () => {
      await expectError(await req(otherKey, "POST", `${sbA.dataplane_url}/execute`, { command: "touch /tmp/pwned-http" }), 404, "SANDBOX_NOT_FOUND");
      await expectError(await req(otherKey, "GET", `${sbA.dataplane_url}/download?path=/etc/hostname`), 404, "SANDBOX_NOT_FOUND");
      await expectError(
        await req(otherKey, "POST", `${sbA.dataplane_url}/upload?path=/tmp/pwned-upload`, "x", { "content-type": "application/octet-stream" }),
        404,
        "SANDBOX_NOT_FOUND",
      );
      // Over the WebSocket the command is refused with an error message, never started.
      const messages = await new Promise<Record<string, unknown>[]>((resolve, reject) => {
        const got: Record<string, unknown>[] = [];
        const ws = new WebSocket(wsUrl(sbA), { headers: { "x-api-key": otherKey } });
        ws.on("open", () => ws.send(JSON.stringify({ type: "execute", command: "touch /tmp/pwned-ws", close_stdin: true })));
        ws.on("message", (d: Buffer) => got.push(JSON.parse(d.toString("utf8")) as Record<string, unknown>));
        ws.on("close", () => resolve(got));
        ws.on("unexpected-response", (_r, res) => resolve([{ type: "http", status: res.statusCode }]));
        ws.on("error", reject);
        setTimeout(() => {
          ws.terminate();
          resolve(got);
        }, 10_000);
      });
      expect(messages.some((m) => m.type === "started" || m.type === "exit")).toBe(false);
      expect(messages.length).toBeGreaterThan(0);
      const check = await w.exec(sbA, "for f in /tmp/pwned-http /tmp/pwned-upload /tmp/pwned-ws; do test -e $f && echo $f; done; true");
      expect(check.body.stdout).toBe("");
    });

    it("another workspace's lists are empty, and names are per workspace", async () => {
      const boxes = await req(otherKey, "GET", `${w.t.api}/boxes`);
      expect(boxes.status).toBe(200);
      expect(((await boxes.json()) as { sandboxes: unknown[] }).sandboxes).toEqual([]);
      const snaps = await req(otherKey, "GET", `${w.t.api}/snapshots?limit=500`);
      expect(snaps.status).toBe(200);
      expect(((await snaps.json()) as { snapshots: unknown[] }).snapshots).toEqual([]);
      // The other workspace can use the name "python" for its own snapshot.
      const created = await req(otherKey, "POST", `${w.t.api}/snapshots`, { name: "python", docker_image: `${w.registry.host}/python:latest` });
      expect(created.status).toBe(201);
      const theirs = (await created.json()) as { id: string };
      expect(theirs.id).not.toBe(w.snapshots.python);
      const ours = (await (await w.t.call("GET", "/snapshots/python")).json()) as { id: string };
      expect(ours.id).toBe(w.snapshots.python);
      await expectError(await w.t.call("GET", `/snapshots/${theirs.id}`), 404, "SNAPSHOT_NOT_FOUND");
      // Wait for the build to settle before deleting it (the fixture only cleans our workspace).
      for (let i = 0; i < 600; i++) {
        const s = (await (await req(otherKey, "GET", `${w.t.api}/snapshots/${theirs.id}`)).json()) as { status: string };
        if (s.status !== "building") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect((await req(otherKey, "DELETE", `${w.t.api}/snapshots/${theirs.id}`)).status).toBe(204);
    });
  });

  describe("list endpoints", () => {
    const pagedNames = ["Paged-A", "paged_b", "PAGED.c"];
    const pagedIds: string[] = [];

    beforeAll(async () => {
      for (const name of pagedNames) {
        const res = await w.t.call("POST", "/snapshots", { name, docker_image: `${w.registry.host}/python:latest` });
        if (res.status !== 201) throw new Error(`snapshot ${name}: ${res.status} ${await res.text()}`);
        const s = await waitSnapshot(w.t, ((await res.json()) as { id: string }).id);
        pagedIds.push(s.id);
      }
    });
    afterAll(async () => {
      for (const id of pagedIds) await w.t.call("DELETE", `/snapshots/${id}`);
    });

    const snapPage = async (query: string): Promise<{ snapshots: { id: string; name: string }[]; offset: number }> => {
      const res = await w.t.call("GET", `/snapshots?${query}`);
      expect(res.status).toBe(200);
      return (await res.json()) as { snapshots: { id: string; name: string }[]; offset: number };
    };

    it("snapshots: name_contains is a case-insensitive substring match, with no wildcards", async () => {
      expect((await snapPage("name_contains=pAgEd")).snapshots.map((s) => s.name).sort()).toEqual([...pagedNames].sort());
      expect((await snapPage("name_contains=PAGED-a")).snapshots.map((s) => s.name)).toEqual(["Paged-A"]);
      expect((await snapPage("name_contains=_")).snapshots.map((s) => s.name)).toEqual(["paged_b"]);
      expect((await snapPage("name_contains=%25")).snapshots).toEqual([]);
      expect((await snapPage("name_contains=zzz-nothing")).snapshots).toEqual([]);
    });

    it("snapshots: limit and offset page through every match exactly once", async () => {
      const p1 = await snapPage("name_contains=paged&limit=2&offset=0");
      const p2 = await snapPage("name_contains=paged&limit=2&offset=2");
      const p3 = await snapPage("name_contains=paged&limit=2&offset=4");
      expect(p1.snapshots.length).toBe(2);
      expect(p1.offset).toBe(2);
      expect(p2.snapshots.length).toBe(1);
      expect(p2.offset).toBe(3);
      expect(p3.snapshots).toEqual([]);
      const ids = [...p1.snapshots, ...p2.snapshots].map((s) => s.id);
      expect(new Set(ids).size).toBe(3);
      expect([...ids].sort()).toEqual([...pagedIds].sort());
      // limit=1 walks the same set one by one.
      const walked: string[] = [];
      for (let off = 0; off < 3; off++) walked.push(...(await snapPage(`name_contains=paged&limit=1&offset=${off}`)).snapshots.map((s) => s.id));
      expect(walked).toEqual(ids);
      // Without a filter all four of ours are there (python + 3).
      expect((await snapPage("limit=500")).snapshots.length).toBe(4);
    });

    it("limit outside 1..500 and a negative or non-numeric offset are 422 on both lists", async () => {
      for (const path of ["/snapshots", "/boxes"]) {
        for (const q of ["limit=0", "limit=501", "limit=-1", "limit=abc", "offset=-1", "offset=x"]) {
          const field = q.split("=")[0];
          await expectValidation(await w.t.call("GET", `${path}?${q}`), field);
        }
        expect((await w.t.call("GET", `${path}?limit=500`)).status).toBe(200);
        expect((await w.t.call("GET", `${path}?limit=1`)).status).toBe(200);
      }
      await expectValidation(await w.t.call("GET", "/boxes?status=bogus"), "status");
      await expectValidation(await w.t.call("GET", "/boxes?sort_by=bogus"), "sort_by");
    });

    it("sandboxes: name_contains is case-insensitive and limit/offset page", async () => {
      const page = async (q: string): Promise<SandboxJson[]> => {
        const res = await w.t.call("GET", `/boxes?${q}`);
        expect(res.status).toBe(200);
        return ((await res.json()) as { sandboxes: SandboxJson[] }).sandboxes;
      };
      expect((await page("name_contains=ERR-BOX-A")).map((s) => s.id)).toEqual([sbA.id]);
      expect((await page("name_contains=LLLLL")).map((s) => s.id)).toEqual([sbLong.id]);
      expect((await page("name_contains=Err-Box")).map((s) => s.id).sort()).toEqual([sbA.id, sbLong.id].sort());
      const a = await page("name_contains=err-box&limit=1&offset=0");
      const b = await page("name_contains=err-box&limit=1&offset=1");
      const c = await page("name_contains=err-box&limit=1&offset=2");
      expect(a.length).toBe(1);
      expect(b.length).toBe(1);
      expect(c).toEqual([]);
      expect([a[0]?.id, b[0]?.id].sort()).toEqual([sbA.id, sbLong.id].sort());
      const asc = await page("sort_by=name&sort_direction=asc");
      expect(asc.map((s) => s.name)).toEqual(["err-box-a", longName]);
      const desc = await page("sort_by=name&sort_direction=desc");
      expect(desc.map((s) => s.name)).toEqual([longName, "err-box-a"]);
    });
  });
});
