import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { ERROR_TABLE, errorBody, type ErrorCode } from "@sandbar/shared";
import { SandbarError } from "../util/errors.js";

/** Send a SandbarError as JSON with its stable status. */
export function sendError(reply: FastifyReply, err: SandbarError): FastifyReply {
  const body = { ...errorBody(err.code, err.message, err.issues), ...err.extra };
  return reply.status(ERROR_TABLE[err.code].status).type("application/json").send(body);
}

/** Map framework errors (bad JSON, body too large) to stable codes. */
function frameworkCode(err: FastifyError): ErrorCode {
  const status = err.statusCode ?? 500;
  if (status === 413) return "PAYLOAD_TOO_LARGE";
  if (status === 404) return "ROUTE_NOT_FOUND";
  if (status === 405) return "METHOD_NOT_ALLOWED";
  if (status >= 400 && status < 500) return "INVALID_REQUEST";
  return "INTERNAL_ERROR";
}

/** The one place errors become responses. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err instanceof SandbarError) return sendError(reply, err);
    const code = frameworkCode(err);
    if (code === "INTERNAL_ERROR") req.log.error({ err }, "unhandled error");
    const message = code === "INTERNAL_ERROR" ? "internal error" : err.message;
    return sendError(reply, new SandbarError(code, message));
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new SandbarError("ROUTE_NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0] ?? ""}`)));
}
