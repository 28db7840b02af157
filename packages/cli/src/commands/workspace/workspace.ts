import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { SqliteStore } from "@sandbar/server";
import type { QuotaNumbers } from "@sandbar/shared";
import { boolFlag, CliError, dataDir, flag, need, printTable, type Args } from "../../context.js";

const QUOTA_FLAGS: [string, keyof QuotaNumbers][] = [
  ["sandboxes", "sandboxes"],
  ["vcpus", "vcpus"],
  ["mem-bytes", "mem_bytes"],
  ["storage-bytes", "storage_bytes"],
];

/** A quota flag's value: a number > 0, or `none` for no limit. */
function quotaValue(value: string, name: string): number | null {
  if (value === "none") return null;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new CliError(`--${name} must be a number > 0 or 'none' (got ${value})`);
  return n;
}

/**
 * `sandbar workspace ls | quota NAME [--sandboxes N] [--vcpus N] [--mem-bytes B]
 * [--storage-bytes B] [--reset]`: workspaces and their quota overrides, on the data dir's
 * store directly (run on the server host; a running server reads them at the next create).
 */
export async function workspace(args: Args): Promise<void> {
  const dir = dataDir(args);
  mkdirSync(dir, { recursive: true });
  const store = new SqliteStore(join(dir, "sandbar.db"));
  try {
    const verb = need(args, 0, "workspace verb (ls, quota)");
    if (verb === "ls") {
      const rows = (await store.listWorkspaces()).map((w) => ({ id: w.id, name: w.name, quotas: w.quotas ? JSON.stringify(w.quotas) : "(server defaults)", created_at: w.created_at }));
      printTable(rows, ["id", "name", "quotas", "created_at"]);
      return;
    }
    if (verb !== "quota") throw new CliError(`unknown workspace verb ${verb}`);
    const name = need(args, 1, "workspace name: sandbar workspace quota NAME [--sandboxes N] [--vcpus N] [--mem-bytes B] [--storage-bytes B] [--reset]");
    const ws = await store.getWorkspaceByName(name);
    if (!ws) throw new CliError(`no workspace named '${name}' (sandbar workspace ls)`);
    let quotas: Partial<QuotaNumbers> | null = boolFlag(args, "reset") ? null : { ...(ws.quotas ?? {}) };
    for (const [f, key] of QUOTA_FLAGS) {
      const v = flag(args, f);
      if (v === undefined) continue;
      if (quotas === null) throw new CliError("--reset takes no other quota flags");
      quotas[key] = quotaValue(v, f);
    }
    if (quotas !== null && Object.keys(quotas).length === 0) quotas = null;
    await store.setWorkspaceQuotas(ws.id, quotas);
    process.stdout.write(`${JSON.stringify({ workspace: ws.name, quotas: quotas ?? "server defaults" })}\n`);
  } finally {
    store.close();
  }
}
