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
