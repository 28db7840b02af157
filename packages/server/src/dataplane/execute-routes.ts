import type { FastifyInstance } from "fastify";
import { executeRequest } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import { parse } from "../http/validate.js";
import { SandbarError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";

/** POST {dataplane}/execute: blocking command over plain HTTP. */
export function executeRoutes(app: FastifyInstance, sandboxes: SandboxService): void {
  app.post("/dataplane/:id/execute", async (req) => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const body = parse(executeRequest, req.body, "body");
    const { agent } = await sandboxes.agentFor(req.workspaceId, id);
    const r = await agent.exec({ command: body.command, shell: body.shell, env: body.env, cwd: body.cwd, timeout_seconds: body.timeout });
    if (r.timed_out) {
      throw new SandbarError("COMMAND_TIMEOUT", `command timed out after ${body.timeout}s and was killed`, undefined, { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code });
    }
    return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code };
  });
}
