import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

/** Every name the package exports has JSDoc with an example where it is declared. */
describe("public API docs", () => {
  const read = (f: string): string => readFileSync(new URL(f, import.meta.url), "utf8");
  const index = read("./index.ts");
  const exported: [string, string][] = [];
  for (const m of index.matchAll(/export (?:type )?\{([^}]+)\} from "\.\/([a-z-]+)\.js"/g)) {
    for (const raw of (m[1] ?? "").split(",")) {
      const name = raw.replace(/\btype\b/, "").trim();
      if (name) exported.push([name, `./${m[2] ?? ""}.ts`]);
    }
  }

  it("finds the exports", () => {
    expect(exported.length).toBeGreaterThan(20);
  });

  it.each(exported)("%s has JSDoc with @example", (name, file) => {
    const src = read(file);
    const decl = new RegExp(`(/\\*\\*(?:(?!\\*/)[\\s\\S])*\\*/)\\s*export (?:declare )?(?:abstract )?(?:class|interface|type|const|function|async function) ${name}\\b`);
    const doc = decl.exec(src)?.[1];
    expect(doc, `${name} in ${file} has no JSDoc`).toBeDefined();
    expect(doc, `${name} JSDoc has no @example`).toContain("@example");
  });
});
