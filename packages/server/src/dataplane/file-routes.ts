import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { IncomingMessage } from "node:http";
import { PassThrough, type Readable } from "node:stream";
import { filePathQuery } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import { agentError, readAll, type AgentClient } from "../agent/agent-client.js";
import { parse } from "../http/validate.js";
import { asMultipartError } from "../http/multipart.js";
import { SandbarError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";

/** Response headers of a download that pass through from the agent. */
const PASS_HEADERS = ["content-length", "content-range", "accept-ranges", "etag", "last-modified", "x-sandbar-mode", "x-sandbar-type"];
/** Request headers of a download that pass through to the agent. */
const FORWARD_HEADERS = ["range", "if-range", "if-none-match", "if-modified-since"];

/** Upload and download: bodies stream through; nothing is held whole in memory. */
export function fileRoutes(app: FastifyInstance, sandboxes: SandboxService, maxUploadBytes: number): void {
  app.post("/dataplane/:id/upload", async (req, reply) => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const { path } = parse(filePathQuery, req.query, "query");
    const { agent } = await sandboxes.agentFor(req.workspaceId, id);
    const { stream: body, drain } = await uploadStream(req, maxUploadBytes);
    const tooLarge = (): SandbarError => new SandbarError("PAYLOAD_TOO_LARGE", `upload exceeds ${maxUploadBytes} bytes`);
    let res: IncomingMessage;
    let text: string;
    try {
      res = await agent.request({ method: "PUT", path: `/files?path=${encodeURIComponent(path)}`, body, headers: { "content-type": "application/octet-stream" } });
      text = await readAll(res);
    } catch (e) {
      drain();
      if (body.limitHit) throw tooLarge();
      if (body.malformed) throw body.malformed;
      throw e;
    }
    // The agent may answer (say, 507 disk full) before reading everything: discard the rest
    // of the client's body so it can finish sending and read our answer.
    drain();
    if (body.limitHit) throw tooLarge();
    if (body.malformed) throw body.malformed;
    if ((res.statusCode ?? 500) >= 400) throw asWriteError(agentError(res.statusCode ?? 500, text));
    return reply.status(200).send({ path, ...(JSON.parse(text) as { size?: number }) });
  });

  const download = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const { path } = parse(filePathQuery, req.query, "query");
    const { agent } = await sandboxes.agentFor(req.workspaceId, id);
    return proxyDownload(req, reply, agent, path);
  };
  app.route({ method: ["GET", "HEAD"], url: "/dataplane/:id/download", handler: download });
}

/**
 * Serve one file of the sandbox through its agent: method, Range, If-Range and
 * If-None-Match pass through; the body streams.
 */
export async function proxyDownload(req: FastifyRequest, reply: FastifyReply, agent: AgentClient, path: string, override: Record<string, string> = {}): Promise<FastifyReply> {
  const headers: Record<string, string> = {};
  for (const h of FORWARD_HEADERS) {
    const v = req.headers[h];
    if (typeof v === "string") headers[h] = v;
  }
  const res = await agent.request({ method: req.method, path: `/files?path=${encodeURIComponent(path)}`, headers });
  const status = res.statusCode ?? 500;
  if (status >= 400) {
    const text = req.method === "HEAD" ? "" : await readAll(res);
    res.resume();
    if (status === 416) {
      reply.header("content-range", res.headers["content-range"] ?? "");
      throw new SandbarError("RANGE_NOT_SATISFIABLE", `requested range of '${path}' is past the end of the file`);
    }
    if (status === 404) throw new SandbarError("FILE_NOT_FOUND", `file '${path}' not found`);
    throw agentError(status, text);
  }
  copyHeaders(res, reply);
  reply.status(status).type("application/octet-stream");
  for (const [k, v] of Object.entries(override)) reply.header(k, v);
  if (req.method === "HEAD" || status === 304) {
    res.resume();
    return reply.send();
  }
  return reply.send(res);
}

function copyHeaders(res: IncomingMessage, reply: FastifyReply): void {
  for (const h of PASS_HEADERS) {
    const v = res.headers[h];
    if (v !== undefined) reply.header(h, v);
  }
}

function asWriteError(e: SandbarError): SandbarError {
  if (e.code === "COMMAND_ERROR" || e.code === "IS_A_DIRECTORY") return new SandbarError("WRITE_ERROR", e.message);
  return e;
}

/**
 * The upload's bytes as a stream: the `file` field of a multipart form (what the
 * LangSmith clients send) or a raw octet-stream body.
 */
type UploadBody = Readable & { limitHit?: boolean; malformed?: SandbarError };

async function uploadStream(req: FastifyRequest, max: number): Promise<{ stream: UploadBody; drain: () => void }> {
  if (req.isMultipart()) {
    // A Content-Type without a usable boundary throws here: 400, not 500.
    const part = await req.file({ limits: { fileSize: max, files: 1 } }).catch((e: unknown) => {
      throw asMultipartError(e);
    });
    if (!part) throw new SandbarError("VALIDATION_ERROR", "multipart body has no file field", [{ loc: ["body", "file"], msg: "file field is required", type: "value_error" }]);
    if (part.fieldname !== "file") throw new SandbarError("VALIDATION_ERROR", "the multipart field must be named 'file'", [{ loc: ["body", "file"], msg: "field must be named 'file'", type: "value_error" }]);
    const out = new PassThrough() as PassThrough & UploadBody;
    part.file.on("limit", () => {
      out.limitHit = true;
      out.destroy(new Error("upload too large"));
    });
    // A body that ends inside the part (no closing boundary) fails the file stream, which
    // pipe() does not pass on: the agent request waited for the rest forever and the client
    // never got an answer. End the upload with the error and answer 400.
    part.file.on("error", (e: Error) => {
      const mapped = asMultipartError(e);
      if (mapped instanceof SandbarError) out.malformed = mapped;
      if (!out.destroyed) out.destroy(e);
    });
    part.file.pipe(out);
    return { stream: out, drain: () => discard(part.file, out) };
  }
  const raw = req.body as Readable | undefined;
  if (!raw || typeof (raw as Readable).pipe !== "function") {
    throw new SandbarError("INVALID_REQUEST", "upload needs a multipart/form-data body with a 'file' field or an application/octet-stream body");
  }
  const out = new PassThrough() as PassThrough & { limitHit?: boolean };
  let seen = 0;
  raw.on("data", (c: Buffer) => {
    seen += c.length;
    if (seen > max && !out.limitHit) {
      out.limitHit = true;
      out.destroy(new Error("upload too large"));
    }
  });
  // A client that goes away mid-upload: pipe() does not pass that on, so the agent's request
  // waited for the rest forever (an open agent connection and a partial .sandbar-put-* file
  // left in the sandbox per aborted upload). End it with an error: the agent drops the file.
  raw.on("error", (e: Error) => {
    if (!out.destroyed) out.destroy(e);
  });
  raw.on("close", () => {
    if (!raw.readableEnded && !out.destroyed) out.destroy(new Error("the client went away mid-upload"));
  });
  raw.pipe(out);
  return { stream: out, drain: () => discard(raw, out) };
}

/** Stop forwarding `source` and throw away whatever of it is still to come. */
function discard(source: Readable, out: PassThrough): void {
  source.unpipe(out);
  if (!out.destroyed) out.destroy();
  source.resume();
}
