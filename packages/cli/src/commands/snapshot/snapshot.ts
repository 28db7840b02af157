import { client, CliError, flag, need, printJson, printTable, type Args } from "../../context.js";
import { snapshotBuild } from "./build.js";

/** `sandbar snapshot create|build|ls|get|rm` */
export async function snapshot(args: Args): Promise<void> {
  const c = client(args);
  const verb = need(args, 0, "snapshot verb (create, build, ls, get, rm)");
  switch (verb) {
    case "build":
      await snapshotBuild(args);
      return;
    case "create": {
      const name = need(args, 1, "snapshot name");
      const image = flag(args, "image");
      if (!image) throw new CliError("--image IMAGE is required");
      const cap = flag(args, "fs-capacity");
      let last = "";
      const s = await c.createSnapshot(name, image, cap ? Number(cap) : undefined, {
        registryId: flag(args, "registry"),
        timeout: Number(flag(args, "timeout") ?? 600),
        onProgress: (m) => {
          if (m !== last) process.stderr.write(`${m}\n`);
          last = m;
        },
      });
      printJson(s);
      return;
    }
    case "ls": {
      const list = await c.listSnapshots({ nameContains: flag(args, "name-contains"), limit: flag(args, "limit") ? Number(flag(args, "limit")) : undefined });
      printTable(list as unknown as Record<string, unknown>[], ["id", "name", "status", "docker_image", "fs_used_bytes", "created_at"]);
      return;
    }
    case "get":
      printJson(await c.getSnapshot(need(args, 1, "snapshot id or name")));
      return;
    case "rm":
      await c.deleteSnapshot(need(args, 1, "snapshot id or name"));
      return;
    default:
      throw new CliError(`unknown snapshot verb ${verb}`);
  }
}
