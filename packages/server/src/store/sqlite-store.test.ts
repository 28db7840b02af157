import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";
import { SqliteStore } from "./sqlite-store.js";
import { storeContract } from "./store-contract.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

storeContract("sqlite", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sandbar-store-"));
  dirs.push(dir);
  return new SqliteStore(join(dir, "db.sqlite"));
});
