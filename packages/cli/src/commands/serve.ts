import { loadConfig, startServer, type RuntimeName } from "@sandbar/server";
import { dataDir, flag, type Args } from "../context.js";

/** `sandbar serve [--port P] [--host H] [--data-dir D] [--runtime runsc|runc]` */
export async function serve(args: Args): Promise<void> {
  const port = flag(args, "port");
  const config = loadConfig({
    ...(port !== undefined ? { port: Number(port) } : {}),
    ...(flag(args, "host") ? { host: flag(args, "host") } : {}),
    dataDir: dataDir(args),
    ...(flag(args, "runtime") ? { runtime: flag(args, "runtime") as RuntimeName } : {}),
    ...(flag(args, "public-url") ? { publicUrl: flag(args, "public-url") } : {}),
  });
  const server = await startServer(config);
  if (server.generatedApiKey) {
    process.stdout.write(`\nGenerated API key (stored in ${config.dataDir}/bootstrap-api-key):\n  ${server.generatedApiKey}\n\n`);
  }
  let closing = false;
  const stop = (): void => {
    if (closing) return;
    closing = true;
    // Sandboxes keep running; the next start adopts them.
    void server.close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  await new Promise<never>(() => undefined);
}
