import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { createSnapshotRequest, listSnapshotsQuery } from "@sandbar/shared";
import type { SnapshotService } from "./snapshot-service.js";
import { parse } from "../http/validate.js";

const idParams = z.object({ id: z.string().min(1).max(128) });

/** How long POST /snapshots waits for a quick build before answering `building`. */
const SETTLE_MS = 5000;

/** Control-plane routes of snapshots. */
export function snapshotRoutes(app: FastifyInstance, snapshots: SnapshotService): void {
  app.post("/snapshots", async (req, reply) => {
    const body = parse(createSnapshotRequest, req.body, "body");
    const rec = await snapshots.create(req.workspaceId, body);
    await snapshots.settle(rec.id, SETTLE_MS);
    return reply.status(201).send(snapshots.view(await snapshots.get(req.workspaceId, rec.id)));
  });

  app.get("/snapshots", async (req) => {
    const q = parse(listSnapshotsQuery, req.query, "query");
    const list = await snapshots.list(req.workspaceId, q);
    return { snapshots: list.map((s) => snapshots.view(s)), offset: q.offset + list.length };
  });

  app.get("/snapshots/:id", async (req) => {
    const { id } = parse(idParams, req.params, "params");
    return snapshots.view(await snapshots.get(req.workspaceId, id));
  });

  app.delete("/snapshots/:id", async (req, reply) => {
    const { id } = parse(idParams, req.params, "params");
    await snapshots.delete(req.workspaceId, id);
    return reply.status(204).send();
  });
}
