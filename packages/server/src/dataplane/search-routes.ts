import type { FastifyInstance, FastifyReply } from "fastify";
import { z } from "zod";
import { filePathQuery } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";

/** Largest `limit` the agent honours; larger values are lowered to it. */
export const MAX_SEARCH_LIMIT = 10_000;
/** The agent stops a search after 30 s (answering `truncated: true`); this only guards against a dead agent. */
const SEARCH_GUARD_MS = 60_000;

const searchLimit = z.number().int().min(1);
const globPattern = z.string().min(1).max(4096);

/** POST {dataplane}/glob (LangSmith `sandbox.glob()` / `ls()`). */
export const globRequest = z.object({
  pattern: globPattern,
  path: filePathQuery.shape.path,
  limit: searchLimit.optional(),
});
export type GlobRequest = z.infer<typeof globRequest>;

/** POST {dataplane}/grep (LangSmith `sandbox.grep()`): `pattern` is a literal string. */
export const grepRequest = z.object({
  pattern: z
    .string()
    .min(1)
    .max(64 * 1024),
  path: filePathQuery.shape.path,
  /** File filter; empty means none. */
  glob: z.string().max(4096).optional(),
  limit: searchLimit.optional(),
});
export type GrepRequest = z.infer<typeof grepRequest>;

/** One entry of a glob answer. */
export interface FileInfo {
  path: string;
  is_dir: boolean;
  size_bytes: number;
  modified_at?: string;
}
export interface GlobResponse {
  matches: FileInfo[];
  truncated: boolean;
}
export interface GrepResponse {
  matches: { path: string; line: number; text: string }[];
  truncated: boolean;
}

/** Read-only filesystem search: glob over paths, literal grep over contents. */
export function searchRoutes(app: FastifyInstance, sandboxes: SandboxService): void {
  const search = async <T>(reply: FastifyReply, workspaceId: string, id: string, op: "glob" | "grep", body: Record<string, unknown>): Promise<T> => {
    const { agent } = await sandboxes.agentFor(workspaceId, id);
    // A client that goes away stops the walk.
    const gone = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) gone.abort();
    };
    reply.raw.once("close", onClose);
    try {
      return await agent.json<T>("POST", `/${op}`, body, SEARCH_GUARD_MS, gone.signal);
    } catch (e) {
      // The agent's 400s here are about the request (a malformed glob), not a command.
      if (e instanceof SandbarError && e.code === "COMMAND_ERROR") throw new SandbarError("INVALID_REQUEST", e.message);
      throw e;
    } finally {
      reply.raw.off("close", onClose);
    }
  };

  app.post("/dataplane/:id/glob", async (req, reply) => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const body = parse(globRequest, req.body, "body");
    const limit = body.limit === undefined ? undefined : Math.min(body.limit, MAX_SEARCH_LIMIT);
    return search<GlobResponse>(reply, req.workspaceId, id, "glob", { pattern: body.pattern, path: body.path, limit });
  });

  app.post("/dataplane/:id/grep", async (req, reply) => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const body = parse(grepRequest, req.body, "body");
    const limit = body.limit === undefined ? undefined : Math.min(body.limit, MAX_SEARCH_LIMIT);
    return search<GrepResponse>(reply, req.workspaceId, id, "grep", { pattern: body.pattern, path: body.path, glob: body.glob || undefined, limit });
  });
}
