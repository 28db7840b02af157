import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { downloadUrlRequest } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { LinkTokens } from "../auth/link-tokens.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { proxyDownload } from "./file-routes.js";

/** Public path of download links; served without an API key. */
export const LINK_PREFIX = "/links/";

const nameParams = z.object({ name: z.string().min(1).max(128) });
const tokenParams = z.object({ token: z.string().min(1).max(8192) });

/** Control plane: POST /boxes/{name}/download-url mints a link to one file. */
export function downloadUrlRoute(app: FastifyInstance, sandboxes: SandboxService, tokens: LinkTokens, publicUrl: () => string): void {
  app.post("/boxes/:name/download-url", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(downloadUrlRequest, req.body, "body");
    const sb = await sandboxes.get(req.workspaceId, name);
    const exp = body.expires_in_seconds !== undefined ? Math.floor(Date.now() / 1000) + body.expires_in_seconds : undefined;
    const token = tokens.sign({ s: sb.id, w: sb.workspace_id, p: body.path, e: exp, ct: body.content_type, cd: body.content_disposition });
    return {
      download_url: `${publicUrl()}${LINK_PREFIX}${token}`,
      token,
      expires_at: exp !== undefined ? new Date(exp * 1000).toISOString() : null,
    };
  });
}

/** GET/HEAD /links/{token}: the file, with Range support, for whoever holds the link. */
export function downloadLinkRoutes(app: FastifyInstance, sandboxes: SandboxService, tokens: LinkTokens): void {
  app.route({
    method: ["GET", "HEAD"],
    url: `${LINK_PREFIX}:token`,
    handler: async (req, reply) => {
      const { token } = parse(tokenParams, req.params, "params");
      const claims = tokens.verify(token);
      if (!claims) throw new SandbarError("UNAUTHENTICATED", "the download link is invalid or has expired");
      const { agent } = await sandboxes.agentFor(claims.w, claims.s);
      const override: Record<string, string> = {};
      if (claims.ct) override["content-type"] = claims.ct;
      const base = claims.p.split("/").pop() ?? "file";
      if (claims.cd) override["content-disposition"] = `${claims.cd}; filename="${base.replace(/[^A-Za-z0-9._-]/g, "_")}"`;
      return proxyDownload(req, reply, agent, claims.p, override);
    },
  });
}
