import { readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { describe, expect, it } from "vitest";

/** The SDK's root entry must run outside Node (browsers, Deno, workers): no Node built-ins. */
describe("SDK root entry", () => {
  const dir = new URL("./", import.meta.url);
  const files = readdirSync(dir).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

  it("has source files to check", () => {
    expect(files).toContain("index.ts");
  });

  it.each(files)("%s imports no Node-only module", (file) => {
    // Code only: JSDoc examples may well mention process.stdout.
    const text = readFileSync(new URL(file, dir), "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    const specifiers = [...text.matchAll(/(?:import|export)[^'"]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|require\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1] ?? m[2] ?? m[3] ?? "");
    for (const s of specifiers) {
      expect(builtins.has(s), `${file} imports ${s}`).toBe(false);
      expect(s.startsWith("node:"), `${file} imports ${s}`).toBe(false);
    }
    expect(text).not.toMatch(/\bprocess\.(?!env)/);
    expect(text).not.toMatch(/\bBuffer\./);
  });
});
