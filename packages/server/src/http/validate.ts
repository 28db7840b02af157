import type { z } from "zod";
import { zodIssues } from "@sandbar/shared";
import { SandbarError } from "../util/errors.js";

/** Parse `value` with `schema` or throw VALIDATION_ERROR listing every bad field. */
export function parse<S extends z.ZodType>(schema: S, value: unknown, where: "body" | "query" | "params"): z.infer<S> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const issues = zodIssues(r.error, where);
  throw new SandbarError("VALIDATION_ERROR", issues.map((i) => i.msg).join("; "), issues);
}
