import { createHash, randomBytes, randomUUID } from "node:crypto";

/** A new resource id (UUID v4, the form LangSmith clients expect). */
export function newId(): string {
  return randomUUID();
}

/** `n` random bytes as lowercase hex. */
export function randomHex(n: number): string {
  return randomBytes(n).toString("hex");
}

/** A URL-safe secret of 32 random bytes. */
export function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

export function sha256Hex(value: string | Buffer): string {
  return createHash("sha256").update(value).digest("hex");
}

export function nowIso(): string {
  return new Date().toISOString();
}
