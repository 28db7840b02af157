/**
 * Dockerfile builds: the multipart request of `POST /snapshots/build` and the follow of
 * `GET /snapshots/{id}/build-log?follow=true`, for {@link SandboxClient.createSnapshotFromDockerfile}.
 * No Node built-ins: a directory context is archived by ./node/context-tar.ts, loaded on demand.
 */
import type { SnapshotView } from "@sandbar/shared";
import { call, type HttpSettings } from "./http.js";
import { ResourceCreationError, ResourceNotFoundError, ResourceTimeoutError, SandboxConnectionError, ValidationError } from "./errors.js";
import { tarFromFiles } from "./tar.js";
import type { DockerfileBuildOptions } from "./types.js";

/** Lines of the build log kept for the error of a failed build. */
export const LOG_TAIL_LINES = 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function invalid(message: string): ValidationError {
  return new ValidationError(message, undefined, undefined);
}

/** The build context as tar chunks: a directory (Node) or a map of path -> content. */
async function contextTar(context: string | Record<string, string | Uint8Array>): Promise<Uint8Array[]> {
  if (typeof context !== "string") {
    try {
      return tarFromFiles(context);
    } catch (e) {
      throw invalid((e as Error).message);
    }
  }
  let mod: { tarDirectory(root: string): Promise<Uint8Array[]> };
  try {
    mod = await import("./node/context-tar.js");
  } catch (e) {
    throw invalid(`a directory build context needs Node (${(e as Error).message}); pass context as a map of path -> content instead`);
  }
  try {
    return await mod.tarDirectory(context);
  } catch (e) {
    throw invalid((e as Error).message);
  }
}

/** The multipart body of `POST /snapshots/build`; fields left out of `opts` are not sent. */
export async function buildForm(name: string, dockerfile: string, opts: DockerfileBuildOptions): Promise<FormData> {
  if (opts.buildArgs !== undefined) {
    for (const [k, v] of Object.entries(opts.buildArgs)) {
      if (typeof v !== "string") throw invalid(`buildArgs.${k} must be a string`);
    }
  }
  if (opts.fsCapacityBytes !== undefined && !(Number.isSafeInteger(opts.fsCapacityBytes) && opts.fsCapacityBytes > 0)) {
    throw invalid(`fsCapacityBytes must be a positive integer, not ${opts.fsCapacityBytes}`);
  }
  const form = new FormData();
  form.append("name", name);
  form.append("dockerfile", dockerfile);
  if (opts.buildArgs !== undefined) form.append("build_args", JSON.stringify(opts.buildArgs));
  if (opts.target !== undefined) form.append("target", opts.target);
  if (opts.fsCapacityBytes !== undefined) form.append("fs_capacity_bytes", String(opts.fsCapacityBytes));
  if (opts.context !== undefined) {
    const chunks = await contextTar(opts.context);
    form.append("context", new Blob(chunks as BlobPart[], { type: "application/x-tar" }), "context.tar");
  }
  return form;
}

/** The body stream broke off (not a timeout): the follow can be opened again. */
class StreamDropped extends Error {}

/**
 * Reads build-log follows: hands each complete line to `onLine` once, across reconnects
 * (a new follow replays the log from its start; the lines already seen are skipped), and
 * keeps the last {@link LOG_TAIL_LINES}.
 */
export class BuildLogFollower {
  /** Lines handed out so far. */
  count = 0;
  readonly tail: string[] = [];

  constructor(private readonly onLine: ((line: string) => void) | undefined) {}

  private line(raw: string, index: number): void {
    if (index < this.count) return;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    this.count++;
    this.tail.push(line);
    if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
    this.onLine?.(line);
  }

  /** One follow request, read until the server ends it (the build ended). */
  async follow(http: HttpSettings, url: string, signal: AbortSignal): Promise<void> {
    const res = await call(http, url, { signal });
    if (!res.body) {
      const lines = (await res.text()).split("\n");
      const last = lines.pop() ?? "";
      lines.forEach((l, i) => this.line(l, i));
      if (last !== "") this.line(last, lines.length);
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    let index = 0;
    let done = false;
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw signal.aborted ? e : new StreamDropped((e as Error).message);
        }
        if (chunk.done) break;
        const parts = (pending + decoder.decode(chunk.value, { stream: true })).split("\n");
        pending = parts.pop() ?? "";
        for (const p of parts) this.line(p, index++);
      }
      done = true;
      pending += decoder.decode();
      // A last line without a newline, once the log has really ended.
      if (pending !== "") this.line(pending, index++);
    } finally {
      if (!done) await reader.cancel().catch(() => undefined);
    }
  }
}

/** What the build flow needs from the client. */
export interface BuildWaiter {
  getSnapshot(id: string): Promise<SnapshotView>;
  waitForSnapshot(id: string, opts: { timeout?: number }): Promise<SnapshotView>;
}

/** The error of a failed build: its status_message and the log's last lines. */
export function buildFailedError(s: SnapshotView, tail: string[]): ResourceCreationError {
  let message = s.status_message ?? `snapshot ${s.name} build failed`;
  if (tail.length > 0) message += `\n\nlast ${tail.length} lines of the build log:\n${tail.join("\n")}`;
  const err = new ResourceCreationError(message, undefined, undefined);
  err.buildLogTail = [...tail];
  return err;
}

/**
 * Follow the build log of snapshot `snap` to `onBuildLog` until the build ends, then return
 * the ready snapshot or throw for a failed one. A follow that breaks off is opened again;
 * a server without the build-log route is polled instead.
 */
export async function followBuild(
  http: HttpSettings,
  client: BuildWaiter,
  snap: SnapshotView,
  onBuildLog: ((line: string) => void) | undefined,
  deadline: number,
  timeoutError: (status: string) => ResourceTimeoutError,
): Promise<SnapshotView> {
  const follower = new BuildLogFollower(onBuildLog);
  const url = `${http.baseUrl}/snapshots/${encodeURIComponent(snap.id)}/build-log?follow=true`;
  let status: string = snap.status;
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw timeoutError(status);
    const before = follower.count;
    const signal = AbortSignal.timeout(remaining);
    try {
      await follower.follow(http, url, signal);
    } catch (e) {
      if (signal.aborted) throw timeoutError(status);
      if (e instanceof ResourceNotFoundError && e.code === "ROUTE_NOT_FOUND") {
        // A server without build logs: wait for the status alone.
        try {
          return await client.waitForSnapshot(snap.id, { timeout: Math.max(0, deadline - Date.now()) / 1000 });
        } catch (w) {
          if (w instanceof ResourceTimeoutError) throw timeoutError(status);
          throw w;
        }
      }
      // A dropped connection: look at the status, then follow again.
      // Anything else (an error status, or an exception of onBuildLog) is the caller's.
      if (!(e instanceof StreamDropped || e instanceof SandboxConnectionError)) throw e;
    }
    const s = await client.getSnapshot(snap.id);
    status = s.status;
    if (s.status === "ready") return s;
    if (s.status === "failed") throw buildFailedError(s, follower.tail);
    // Still building after the log ended or broke off: wait a little unless lines came.
    if (follower.count === before) await sleep(Math.min(1000, Math.max(0, deadline - Date.now())));
  }
}
