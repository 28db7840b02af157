import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, ERROR_TABLE } from "./error-codes.js";

describe("error registry", () => {
  it("gives every code a status in 4xx/5xx and a wire type", () => {
    for (const code of ERROR_CODES) {
      const info = ERROR_TABLE[code];
      expect(info.status, code).toBeGreaterThanOrEqual(400);
      expect(info.status, code).toBeLessThan(600);
      expect(info.wireType, code).toMatch(/^[A-Za-z]+$/);
      expect(info.description.length, code).toBeGreaterThan(10);
    }
  });

  it("documents every code in docs/api.md with its status and wire type", () => {
    const doc = readFileSync(new URL("../../../docs/api.md", import.meta.url), "utf8");
    for (const code of ERROR_CODES) {
      const { status, wireType } = ERROR_TABLE[code];
      expect(doc, code).toContain(`| \`${code}\` | ${status} | \`${wireType}\` |`);
    }
  });

  it("has no code twice", () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
  });
});
