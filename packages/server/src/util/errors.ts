import type { ErrorCode, ValidationIssue } from "@sandbar/shared";

/** An error with a stable code; services throw it, the HTTP layer renders it. */
export class SandbarError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly issues?: ValidationIssue[],
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "SandbarError";
  }
}

/** Shorthand for a single-field validation error. */
export function validationError(field: string, msg: string): SandbarError {
  return new SandbarError("VALIDATION_ERROR", `${field}: ${msg}`, [
    { loc: ["body", field], msg: `${field}: ${msg}`, type: "value_error" },
  ]);
}

/**
 * Errors of the host that have a stable code of their own: the data disk full (SQLite's
 * SQLITE_FULL, a write's ENOSPC outside a sandbox). Undefined for anything else.
 */
export function hostFault(err: unknown): SandbarError | undefined {
  const code = typeof err === "object" && err !== null && "code" in err ? (err as { code: unknown }).code : undefined;
  if (code === "SQLITE_FULL" || code === "ENOSPC") {
    return new SandbarError("DISK_FULL", "the server's data disk is full; nothing was changed. Free space on it and retry");
  }
  return undefined;
}
