import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ApiKeyService } from "../auth/api-key-service.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Workspace of the caller's API key; set by the auth hook. */
    workspaceId: string;
  }
}

/** Paths served without an API key. */
const PUBLIC = new Set(["/healthz"]);

/** Every request but the public ones must carry a live X-Api-Key. */
export function installAuth(app: FastifyInstance, keys: ApiKeyService): void {
  app.decorateRequest("workspaceId", "");
  app.addHook("onRequest", async (req: FastifyRequest) => checkApiKey(req, keys));
}

/**
 * Set `req.workspaceId` from the request's X-Api-Key, or throw UNAUTHENTICATED; public paths
 * pass without a key. Also used for requests the router refuses before any hook runs.
 */
export async function checkApiKey(req: FastifyRequest, keys: ApiKeyService): Promise<void> {
  const path = req.url.split("?")[0] ?? "";
  if (PUBLIC.has(path) || path.startsWith("/links/")) return;
  const header = req.headers["x-api-key"];
  req.workspaceId = await keys.authenticate(Array.isArray(header) ? header[0] : header);
}
