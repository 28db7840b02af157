import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { captureSnapshotRequest, createSandboxRequest, listSandboxesQuery, updateSandboxRequest } from "@sandbar/shared";
import type { SandboxService } from "./sandbox-service.js";
import type { SnapshotService } from "../snapshots/snapshot-service.js";
import { parse } from "../http/validate.js";

const nameParams = z.object({ name: z.string().min(1).max(128) });
const startBody = z.object({ timeout: z.number().min(1).max(3600).optional() });

/** Control-plane routes of sandboxes (`/boxes`). */
export function sandboxRoutes(app: FastifyInstance, sandboxes: SandboxService, snapshots: SnapshotService): void {
  app.post("/boxes", async (req, reply) => {
    const body = parse(createSandboxRequest, req.body, "body");
    const { sandbox, claimed } = await sandboxes.createOrClaim(req.workspaceId, body);
    // Whether a warm pool served the create (benchmarks and operators read it).
    return reply.status(201).header("sandbar-pool", claimed ? "claimed" : "miss").send(sandboxes.view(sandbox));
  });

  app.get("/quotas", async (req) => sandboxes.quota(req.workspaceId));

  app.get("/boxes", async (req) => {
    const q = parse(listSandboxesQuery, req.query, "query");
    const list = await sandboxes.list(req.workspaceId, q);
    return { sandboxes: list.map((s) => sandboxes.view(s)), offset: q.offset + list.length };
  });

  app.get("/boxes/:name", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    return sandboxes.view(await sandboxes.get(req.workspaceId, name));
  });

  app.get("/boxes/:name/status", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const s = await sandboxes.get(req.workspaceId, name);
    return { status: s.status, status_message: s.status_message };
  });

  app.patch("/boxes/:name", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(updateSandboxRequest, req.body, "body");
    return sandboxes.view(await sandboxes.update(req.workspaceId, name, body));
  });

  app.delete("/boxes/:name", async (req, reply) => {
    const { name } = parse(nameParams, req.params, "params");
    await sandboxes.delete(req.workspaceId, name);
    return reply.status(204).send();
  });

  app.post("/boxes/:name/stop", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    return sandboxes.view(await sandboxes.stop(req.workspaceId, name));
  });

  app.post("/boxes/:name/snapshot", async (req, reply) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(captureSnapshotRequest, req.body, "body");
    const sb = await sandboxes.get(req.workspaceId, name);
    if (body.include_memory === true) sandboxes.assertCheckpointable(sb);
    const rec = await snapshots.capture(req.workspaceId, sb, body, (dest, memoryDir) => sandboxes.exportWritableLayer(sb, dest, memoryDir));
    await snapshots.settle(rec.id, 5000);
    return reply.status(201).send(snapshots.view(await snapshots.get(req.workspaceId, rec.id)));
  });

  app.post("/boxes/:name/start", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(startBody, req.body, "body");
    return sandboxes.view(await sandboxes.start(req.workspaceId, name, body.timeout));
  });
}
