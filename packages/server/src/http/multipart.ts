import { SandbarError } from "../util/errors.js";

/**
 * What busboy throws or emits for a malformed multipart body: no boundary in the
 * Content-Type, an empty or over-long boundary, a body that ends inside a part. These are plain
 * Errors without a status, so the error handler turned them into 500 INTERNAL_ERROR.
 */
const MALFORMED = [/boundary/i, /unexpected end of multipart data/i, /terminated early/i, /needle/i, /unsupported content-type/i];

/** A malformed-multipart error as 400 INVALID_REQUEST; anything else unchanged. */
export function asMultipartError(e: unknown): unknown {
  if (e instanceof SandbarError || !(e instanceof Error)) return e;
  if ((e as { statusCode?: unknown }).statusCode !== undefined) return e; // @fastify/multipart's own, mapped by status
  if (!MALFORMED.some((r) => r.test(e.message))) return e;
  return new SandbarError("INVALID_REQUEST", `malformed multipart body: ${e.message}`);
}
