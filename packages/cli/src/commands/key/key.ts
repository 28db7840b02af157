import { ApiKeyService, SqliteStore } from "@sandbar/server";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { dataDir, flag, need, printTable, type Args } from "../../context.js";

/** `sandbar key create|ls|revoke`: operates on the data dir's store directly (run on the server host). */
export async function key(args: Args): Promise<void> {
  const dir = dataDir(args);
  mkdirSync(dir, { recursive: true });
  const store = new SqliteStore(join(dir, "sandbar.db"));
  try {
    const keys = new ApiKeyService(store);
    const verb = need(args, 0, "key verb (create, ls, revoke)");
    if (verb === "create") {
      const created = await keys.createKey(flag(args, "workspace") ?? "default", flag(args, "name") ?? "cli");
      process.stdout.write(`${created.key}\n`);
      process.stderr.write(`created key ${created.view.id} in workspace ${created.view.workspace}\n`);
    } else if (verb === "ls") {
      printTable((await keys.list()) as unknown as Record<string, unknown>[], ["id", "prefix", "workspace", "name", "created_at", "revoked_at"]);
    } else if (verb === "revoke") {
      const v = await keys.revoke(need(args, 1, "key id or prefix"));
      process.stdout.write(`revoked ${v.id}\n`);
    } else {
      throw new Error(`unknown key verb ${verb}`);
    }
  } finally {
    store.close();
  }
}
