import { join } from "node:path";
import { LocalImages } from "@sandbar/server";
import { CliError, dataDir, flag, need, printTable, type Args } from "../../context.js";

/**
 * `sandbar image import|build-debian|ls|rm`: the server's local image store, used on the
 * server's host. Snapshots are then built from `sandbar.local/NAME:TAG`, with no registry.
 */
export async function image(args: Args): Promise<void> {
  const store = new LocalImages(join(dataDir(args), "images"));
  const verb = need(args, 0, "image verb (import, build-debian, ls, rm)");
  switch (verb) {
    case "import": {
      const img = await store.import(need(args, 1, "image name"), need(args, 2, "source (oci:DIR:TAG, oci-archive:FILE, docker-archive:FILE)"), flag(args, "tag") ?? "latest");
      process.stdout.write(`${img.reference}\n`);
      return;
    }
    case "build-debian": {
      const packages = (flag(args, "packages") ?? "python3,bash").split(",").map((p) => p.trim()).filter(Boolean);
      const img = await store.buildDebian(need(args, 1, "image name"), {
        packages,
        suite: flag(args, "suite"),
        tag: flag(args, "tag"),
        onLog: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`${img.reference}\n`);
      return;
    }
    case "ls":
      printTable((await store.list()) as unknown as Record<string, unknown>[], ["reference", "name", "tag"]);
      return;
    case "rm":
      await store.remove(need(args, 1, "image name"));
      return;
    default:
      throw new CliError(`unknown image verb ${verb}`);
  }
}
