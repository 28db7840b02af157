import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient as LangSmithClient } from "langsmith/experimental/sandbox";
import { testImage } from "../support/images.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { freePort, startServerProcess, type ServerProcess } from "../support/server-process.js";

const USER = "sandbar-user";
/** Distinctive, so a leak anywhere is found by a plain text search. */
const PASSWORD = `pw-${randomBytes(12).toString("hex")}`;
const CERTS_D = "/etc/containers/certs.d";

interface SnapshotJson {
  id: string;
  status: string;
  status_message: string | null;
  registry_id: string | null;
}

describe("private registries: htpasswd auth and TLS from a test CA", () => {
  let work: string;
  let registry: TestRegistry;
  let server: ServerProcess;
  let dataDir: string;
  const apiKey = `sb_test_${randomBytes(8).toString("hex")}`;
  const bodies: string[] = [];

  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await fetch(`${server.url}/v2/sandboxes${path}`, {
      method,
      headers: { "x-api-key": apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    bodies.push(text);
    return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const build = async (body: Record<string, unknown>): Promise<SnapshotJson> => {
    const res = await call("POST", "/snapshots", { fs_capacity_bytes: 256 * 1024 * 1024, ...body });
    expect(res.status, JSON.stringify(res.json)).toBe(201);
    for (let i = 0; i < 600; i++) {
      const s = (await call("GET", `/snapshots/${String(res.json.id)}`)).json as unknown as SnapshotJson;
      if (s.status !== "building") return s;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("snapshot still building");
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "sandbar-private-registry-"));
    // A test CA and a server certificate for 127.0.0.1 signed by it.
    const sh = (cmd: string): void => void execFileSync("sh", ["-c", cmd], { cwd: work, stdio: "pipe" });
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=sandbar test CA' -keyout ca.key -out ca.crt");
    sh("openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout server.key -out server.csr");
    await writeFile(join(work, "san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
    sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt");
    sh(`htpasswd -Bbc htpasswd ${USER} ${PASSWORD}`);
    registry = await startRegistry({ tls: { certFile: join(work, "server.crt"), keyFile: join(work, "server.key") }, htpasswdFile: join(work, "htpasswd") });
    // The host trusts the test CA for this registry only (where skopeo looks).
    await mkdir(join(CERTS_D, registry.host), { recursive: true });
    await writeFile(join(CERTS_D, registry.host, "ca.crt"), await readFile(join(work, "ca.crt")));
    const img = await testImage("busybox");
    execFileSync("skopeo", ["--insecure-policy", "copy", `--dest-creds=${USER}:${PASSWORD}`, `oci:${img.layoutDir}:${img.tag}`, `docker://${registry.host}/private/busybox:1`], { stdio: "pipe" });
    dataDir = await mkdtemp(join(tmpdir(), "sandbar-test-"));
    server = await startServerProcess(dataDir, apiKey, await freePort(), { SANDBAR_LOG_LEVEL: "debug" });
  }, 300_000);

  afterAll(async () => {
    if (server) {
      const boxes = (await call("GET", "/boxes")).json as { sandboxes?: { id: string }[] };
      for (const b of boxes.sandboxes ?? []) await call("DELETE", `/boxes/${b.id}`);
      const snaps = (await call("GET", "/snapshots")).json as { snapshots?: { id: string }[] };
      for (const s of snaps.snapshots ?? []) await call("DELETE", `/snapshots/${s.id}`);
      await server.kill("SIGTERM");
    }
    await registry?.stop();
    if (registry) await rm(join(CERTS_D, registry.host), { recursive: true, force: true });
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the registry refuses anonymous pulls (control)", async () => {
    const s = await build({ name: "anon", docker_image: `${registry.host}/private/busybox:1` });
    expect(s.status).toBe("failed");
    expect(s.status_message).toMatch(/authentication/);
  });

  let registryId = "";
  it("registers credentials; no response carries the password", async () => {
    const res = await call("POST", "/registries", { name: "private", url: `https://${registry.host}`, username: USER, password: PASSWORD });
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ name: "private", url: `https://${registry.host}`, username: USER, has_password: true, auth_type: "DOCKER_CONFIG" });
    expect(res.json).not.toHaveProperty("password");
    registryId = String(res.json.id);
    expect((await call("GET", "/registries/private")).json).toMatchObject({ id: registryId });
    const list = (await call("GET", "/registries")).json as { items: { id: string }[]; registries: unknown[]; next_cursor: string | null };
    expect(list.items.map((r) => r.id)).toContain(registryId);
    expect(list.next_cursor).toBeNull();
  });

  it("builds a snapshot from the private image with registry_id, and a sandbox runs it", async () => {
    const s = await build({ name: "by-id", docker_image: `${registry.host}/private/busybox:1`, registry_id: registryId });
    expect(s.status, s.status_message ?? "").toBe("ready");
    expect(s.registry_id).toBe(registryId);
    const sb = await call("POST", "/boxes", { snapshot_id: s.id });
    expect(sb.status).toBe(201);
    const run = await fetch(`${String(sb.json.dataplane_url)}/execute`, {
      method: "POST",
      headers: { "x-api-key": apiKey, "content-type": "application/json" },
      body: JSON.stringify({ command: "echo from-private", shell: "/bin/sh" }),
    });
    expect(((await run.json()) as { stdout: string }).stdout).toBe("from-private\n");
  });

  it("builds with inline credentials (seed 000's form)", async () => {
    const s = await build({ name: "inline", docker_image: `${registry.host}/private/busybox:1`, registry_url: `https://${registry.host}`, registry_username: USER, registry_password: PASSWORD });
    expect(s.status, s.status_message ?? "").toBe("ready");
    expect(s.registry_id).toBeNull();
  });

  it("wrong credentials fail the pull with a message about authentication", async () => {
    const inline = await build({ name: "wrong-inline", docker_image: `${registry.host}/private/busybox:1`, registry_url: registry.host, registry_username: USER, registry_password: "not-the-password" });
    expect(inline.status).toBe("failed");
    expect(inline.status_message).toMatch(/refused authentication/);
    expect((await call("POST", "/registries", { name: "wrong", url: registry.host, username: USER, password: "nope-nope" })).status).toBe(201);
    const byId = await build({ name: "wrong-id", docker_image: `${registry.host}/private/busybox:1`, registry_id: "wrong" });
    expect(byId.status).toBe("failed");
    expect(byId.status_message).toMatch(/refused authentication/);
  });

  it("a password change by PATCH takes effect; bad requests get stable codes", async () => {
    expect((await call("PATCH", "/registries/wrong", { password: PASSWORD })).status).toBe(200);
    const s = await build({ name: "fixed", docker_image: `${registry.host}/private/busybox:1`, registry_id: "wrong" });
    expect(s.status, s.status_message ?? "").toBe("ready");
    expect((await call("POST", "/registries", { name: "private", url: registry.host })).status).toBe(409);
    expect((await call("POST", "/registries", { name: "aws", url: "x.example", auth_type: "AWS_ROLE" })).status).toBe(422);
    expect((await call("POST", "/registries", { name: "half", url: "x.example", username: "u" })).status).toBe(422);
    expect((await call("GET", "/registries/none")).json.code).toBe("REGISTRY_NOT_FOUND");
    const mismatch = await call("POST", "/snapshots", { name: "mismatch", docker_image: "other.example/x:1", registry_id: registryId });
    expect(mismatch.status).toBe(422);
    const both = await call("POST", "/snapshots", { name: "both", docker_image: `${registry.host}/x:1`, registry_id: registryId, registry_url: registry.host });
    expect(both.status).toBe(422);
    expect((await call("POST", "/snapshots", { name: "unknown-reg", docker_image: `${registry.host}/x:1`, registry_id: "no-such" })).status).toBe(404);
  });

  it("langsmith@0.12.0's client lists and creates registries", async () => {
    const client = new LangSmithClient({ apiEndpoint: `${server.url}/api/v2/sandboxes`, apiKey });
    const created = await client.registries.create({ name: "from-official", url: registry.host, username: USER, password: PASSWORD });
    expect(created.name).toBe("from-official");
    const page = await client.registries.list({ page_size: 2 });
    expect(page.items?.length).toBe(2);
    expect(page.next_cursor).toBeTruthy();
    await client.registries.delete("from-official");
    expect((await call("GET", "/registries/from-official")).status).toBe(404);
  });

  it("no password in any API response, log line or database file in clear", async () => {
    expect((await call("DELETE", "/registries/private")).status).toBe(204);
    for (const body of bodies) expect(body).not.toContain(PASSWORD);
    expect(server.output()).not.toContain(PASSWORD);
    expect(server.output().length).toBeGreaterThan(0);
    for (const f of (await readdir(dataDir)).filter((n) => n.startsWith("sandbar.db"))) {
      expect((await readFile(join(dataDir, f))).includes(Buffer.from(PASSWORD)), f).toBe(false);
    }
    // Nothing left in the server's scratch space either (auth files are removed after each pull).
    expect((await readdir(join(dataDir, "tmp"))).filter((n) => n.startsWith("auth-"))).toEqual([]);
  });
});
