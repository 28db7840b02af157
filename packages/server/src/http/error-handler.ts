import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ERROR_TABLE, errorBody, type ErrorCode } from "@sandbar/shared";
import { hostFault, SandbarError } from "../util/errors.js";
import type { ApiKeyService } from "../auth/api-key-service.js";
import { checkApiKey } from "./auth.js";

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
    const fault = hostFault(err);
    if (fault) {
      req.log.warn({ err: err.message }, "request failed: data disk full");
      return sendError(reply, fault);
    }
    const code = frameworkCode(err);
    if (code === "INTERNAL_ERROR") req.log.error({ err }, "unhandled error");
    const message = code === "INTERNAL_ERROR" ? "internal error" : err.message;
    return sendError(reply, new SandbarError(code, message));
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new SandbarError("ROUTE_NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0] ?? ""}`)));
}

/**
 * Fastify's `frameworkErrors`: what the router refuses before any hook runs (a malformed
 * percent-escape such as `/boxes/%`, a path parameter longer than maxParamLength). Without
 * this, Fastify answered in its own body shape (and 414 for a long parameter), and before the
 * API key was checked. Now: the key check the route would have made, then 400 INVALID_REQUEST.
 */
export function frameworkErrorHandler(keys: ApiKeyService): (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => void {
  return (err, req, reply) => {
    const message =
      err.code === "FST_ERR_BAD_URL"
        ? "the URL is not valid: malformed percent-encoding"
        : err.code === "FST_ERR_MAX_PARAM_LENGTH"
          ? "the URL is not valid: a path parameter is too long"
          : "the URL is not valid";
    // An Upgrade request's socket left HTTP's hands: nothing else closes it after this answer
    // (the WebSocket plugin only does for requests that reached its hooks), and a half-closed
    // socket per such request stayed open for good, holding up the server's close().
    if (req.raw.headers.upgrade !== undefined) reply.raw.once("finish", () => req.raw.socket.destroy());
    checkApiKey(req, keys).then(
      () => sendError(reply, new SandbarError("INVALID_REQUEST", message)),
      (e: unknown) => sendError(reply, e instanceof SandbarError ? e : new SandbarError("INTERNAL_ERROR", "internal error")),
    );
  };
}
