import { client, CliError, flag, need, printJson, printTable, type Args } from "../../context.js";

function count(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CliError(`${what} must be a number >= 0 (got ${value})`);
  return n;
}

/**
 * `sandbar pool create|ls|get|resize|rm`: warm pools of the key's workspace. A `sandbox create`
 * of the pool's snapshot and size is then served from the pool.
 */
export async function pool(args: Args): Promise<void> {
  const verb = need(args, 0, "pool verb (create, ls, get, resize, rm)");
  switch (verb) {
    case "create": {
      const snapshot = need(args, 1, "snapshot: sandbar pool create SNAPSHOT SIZE [--vcpus N] [--mem-bytes B] [--fs-capacity B]");
      const size = count(need(args, 2, "size: sandbar pool create SNAPSHOT SIZE"), "SIZE") as number;
      printJson(
        await client(args).pools.create({
          snapshotName: snapshot,
          size,
          vcpus: count(flag(args, "vcpus"), "--vcpus"),
          memBytes: count(flag(args, "mem-bytes"), "--mem-bytes"),
          fsCapacityBytes: count(flag(args, "fs-capacity"), "--fs-capacity"),
        }),
      );
      return;
    }
    case "ls":
      printTable((await client(args).pools.list()) as unknown as Record<string, unknown>[], ["id", "snapshot_id", "size", "ready", "booting", "vcpus", "mem_bytes", "source"]);
      return;
    case "get":
      printJson(await client(args).pools.get(need(args, 1, "pool id")));
      return;
    case "resize": {
      const id = need(args, 1, "pool id: sandbar pool resize ID SIZE");
      printJson(await client(args).pools.resize(id, count(need(args, 2, "size: sandbar pool resize ID SIZE"), "SIZE") as number));
      return;
    }
    case "rm":
      await client(args).pools.delete(need(args, 1, "pool id"));
      return;
    default:
      throw new CliError(`unknown pool verb ${verb}`);
  }
}
