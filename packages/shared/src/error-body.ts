import type { z } from "zod";
import { ERROR_TABLE, type ErrorCode } from "./error-codes.js";

/** One entry of a validation error list (the shape the LangSmith clients parse). */
export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: "value_error";
}

/**
 * The JSON body of every error response.
 *
 * `detail` is an object `{error, message}` for ordinary errors and a list of
 * {@link ValidationIssue} for validation errors; `code` is always the stable code.
 */
export interface ErrorBody {
  code: ErrorCode;
  detail: { error: string; message: string } | ValidationIssue[];
  message: string;
}

/** Build the body for `code`. */
export function errorBody(code: ErrorCode, message: string, issues?: ValidationIssue[]): ErrorBody {
  if (issues && issues.length > 0) return { code, detail: issues, message };
  return { code, detail: { error: ERROR_TABLE[code].wireType, message }, message };
}

/** Turn zod issues into the list form clients parse. */
export function zodIssues(error: z.ZodError, prefix: "body" | "query" | "params"): ValidationIssue[] {
  return error.issues.map((issue) => ({
    loc: [prefix, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))],
    msg: issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message,
    type: "value_error" as const,
  }));
}
