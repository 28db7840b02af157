/**
 * A throwaway OCI registry on 127.0.0.1 (Debian's docker-registry, the CNCF distribution
 * registry) for tests that pull images over HTTP, and skopeo helpers to push and inspect.
 *
 * The registry dies with its starter: stop() ends it; a process 'exit' hook kills what is left;
 * and it runs under `setpriv --pdeathsig KILL`, so even a SIGKILLed test process (or a terminated
 * vitest worker thread, the thread that spawned it) takes it down instead of leaking a daemon.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { get } from "node:http";
import { get as httpsGet } from "node:https";
import { Socket, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { processAlive } from "./file-lock.js";
import { parseJson, requireRecord, requireStringArray } from "./json-guards.js";
import { assertUsableInImageRef } from "./oci-build.js";
import { runCommand } from "./run-command.js";

export interface StartRegistryOptions {
  /** How long to wait for GET /v2/ to answer 200; 15 s unless given. */
  readyTimeoutMs?: number;
  /** Serve HTTPS with this certificate and key (PEM files). */
  tls?: { certFile: string; keyFile: string };
  /** Require basic auth against this htpasswd file (bcrypt entries). */
  htpasswdFile?: string;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT", the form image references use. */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  stop(): Promise<void>;
}

const DEFAULT_READY_TIMEOUT_MS = 15_000;
/** Temp dirs are named `${TEMP_PREFIX}${pid}-XXXXXX` so leftovers of dead runs can be found. */
const TEMP_PREFIX = "sandbar-registry-";
const PORT_ATTEMPTS = 5;
const LOG_TAIL_CHARS = 8000;

/** Registries not yet stopped, with their temp dirs, for the exit hook. */
const running = new Map<ChildProcess, string>();
let exitHookInstalled = false;

export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const readyTimeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  await removeLeftoversOfDeadRuns();
  for (let attempt = 1; ; attempt++) {
    // The port is free when probed but could be taken before the registry binds it: retry.
    const port = await findFreePort();
    try {
      return await startOnPort(port, readyTimeoutMs, options);
    } catch (error) {
      if (!(error instanceof PortTakenError) || attempt >= PORT_ATTEMPTS) throw error;
    }
  }
}

/** Copies an image from an OCI layout to the registry, keeping its blobs (and digests) as they are. */
export async function pushImage(layoutDir: string, tag: string, host: string, repoAndTag: string): Promise<void> {
  assertUsableInImageRef(layoutDir);
  await runCommand("skopeo", [
    // Ignores /etc/containers/policy.json, which may be missing or strict on other machines.
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    "--dest-no-creds",
    `oci:${layoutDir}:${tag}`,
    `docker://${host}/${repoAndTag}`,
  ]);
}

/** The layer digests the registry serves for an image, as `skopeo inspect` reports them. */
export async function remoteLayerDigests(host: string, repoAndTag: string): Promise<string[]> {
  const { stdout } = await runCommand("skopeo", [
    "--insecure-policy",
    "inspect",
    "--tls-verify=false",
    "--no-creds",
    `docker://${host}/${repoAndTag}`,
  ]);
  const what = `skopeo inspect docker://${host}/${repoAndTag}`;
  return requireStringArray(requireRecord(parseJson(stdout, what), what)["Layers"], `${what} Layers`);
}

class PortTakenError extends Error {}

async function startOnPort(port: number, readyTimeoutMs: number, options: StartRegistryOptions): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`));
  const host = `127.0.0.1:${port}`;
  const url = `${options.tls ? "https" : "http"}://${host}`;
  const configPath = join(dir, "config.yml");
  await writeFile(configPath, registryConfig(host, join(dir, "data"), options));

  const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", "docker-registry", "serve", configPath], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child, dir);
  const log = captureOutput(child);
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  let spawnError: Error | undefined;
  child.once("error", (error) => {
    spawnError = error;
  });

  const stop = async (): Promise<void> => {
    if (!running.has(child)) return;
    await terminate(child, exited);
    running.delete(child);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await waitUntilReady(url, child, readyTimeoutMs, () => spawnError);
  } catch (error) {
    await stop();
    const output = log();
    if (/address already in use/i.test(output)) throw new PortTakenError(`port ${port} was taken`);
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`docker-registry on ${host} did not start: ${reason}\n${output}`);
  }
  // Nothing should wait on a registry a test forgot to stop; the exit hook still kills it.
  child.unref();
  // The pipes are sockets, typed as plain streams; their handles would hold the loop too.
  for (const stream of [child.stdout, child.stderr]) {
    if (stream instanceof Socket) stream.unref();
  }
  return { host, url, stop };
}

function registryConfig(addr: string, dataDir: string, options: StartRegistryOptions = {}): string {
  const tls = options.tls ? ["  tls:", `    certificate: ${options.tls.certFile}`, `    key: ${options.tls.keyFile}`] : [];
  const auth = options.htpasswdFile ? ["auth:", "  htpasswd:", "    realm: sandbar-test", `    path: ${options.htpasswdFile}`] : [];
  return [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${dataDir}`,
    "  delete:",
    "    enabled: true",
    ...auth,
    "http:",
    `  addr: ${addr}`,
    ...tls,
    "",
  ].join("\n");
}

async function waitUntilReady(
  url: string,
  child: ChildProcess,
  timeoutMs: number,
  spawnError: () => Error | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const error = spawnError();
    if (error !== undefined) throw error;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`it exited (${child.exitCode ?? child.signalCode ?? "?"})`);
    }
    // A registry with auth answers 401 until credentials come: it is up.
    const status = await httpStatus(`${url}/v2/`);
    if (status === 200 || status === 401) return;
    if (Date.now() > deadline) throw new Error(`GET ${url}/v2/ did not answer 200 within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Status of a GET, or undefined when nothing answers; no keep-alive so no socket lingers. */
function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const getter = url.startsWith("https:") ? httpsGet : get;
    const request = getter(url, { agent: false, timeout: 1000, rejectUnauthorized: false }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolve(undefined));
  });
}

async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  // No pid: the spawn itself failed, so there is nothing to signal.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const stopped = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
  if (!stopped) {
    child.kill("SIGKILL");
    await exited;
  }
}

/** Keeps the last few KB of the registry's output for error messages. */
function captureOutput(child: ChildProcess): () => string {
  let text = "";
  const append = (chunk: Buffer): void => {
    text = (text + chunk.toString("utf8")).slice(-LOG_TAIL_CHARS);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  return () => text;
}

function track(child: ChildProcess, dir: string): void {
  running.set(child, dir);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: a signal and a sync rm are all that can run here.
  process.on("exit", () => {
    for (const [proc, tempDir] of running) {
      proc.kill("SIGKILL");
      rmSync(tempDir, { recursive: true, force: true });
    }
  });
}

/** Data of registries whose test process was SIGKILLed, when no exit hook could run. */
async function removeLeftoversOfDeadRuns(): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (!entry.startsWith(TEMP_PREFIX)) continue;
    const pid = Number.parseInt(entry.slice(TEMP_PREFIX.length), 10);
    if (!Number.isInteger(pid) || processAlive(pid)) continue;
    await rm(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : undefined;
      server.close(() => (port === undefined ? reject(new Error("no port assigned")) : resolve(port)));
    });
  });
}
