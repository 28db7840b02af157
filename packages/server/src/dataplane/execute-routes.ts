import type { FastifyInstance } from "fastify";
import { executeRequest } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import { parse } from "../http/validate.js";
import { SandbarError, validationError } from "../util/errors.js";
import { dataplaneParams } from "./params.js";

/** POST {dataplane}/execute: blocking command over plain HTTP. */
export function executeRoutes(app: FastifyInstance, sandboxes: SandboxService): void {
  app.post("/dataplane/:id/execute", async (req, reply) => {
    const { id } = parse(dataplaneParams, req.params, "params");
    const body = parse(executeRequest, req.body, "body");
    // exec(2) cannot take a NUL byte: the agent answered 500, which became 502
    // SANDBOX_CONNECTION_ERROR. It is the request that is wrong.
    if (body.command.includes("\0")) throw validationError("command", "must not contain NUL");
    const { agent } = await sandboxes.agentFor(req.workspaceId, id);
    // A client that goes away takes its command with it (the agent kills the group).
    const gone = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) gone.abort();
    };
    reply.raw.once("close", onClose);
    const r = await agent.exec({ command: body.command, shell: body.shell, env: body.env, cwd: body.cwd, timeout_seconds: body.timeout }, gone.signal).finally(() => reply.raw.off("close", onClose));
    if (r.timed_out) {
      throw new SandbarError("COMMAND_TIMEOUT", `command timed out after ${body.timeout}s and was killed`, undefined, { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code });
    }
    return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code };
  });
}
