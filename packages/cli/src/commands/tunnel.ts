import { client, flag, need, portArg, type Args } from "../context.js";

/**
 * `sandbar tunnel SANDBOX REMOTE_PORT [LOCAL_PORT] [--host H]`: forward a local port (default:
 * a free one, on 127.0.0.1) to a port inside the sandbox until SIGINT or SIGTERM.
 */
export async function tunnel(args: Args): Promise<number> {
  const usage = "sandbar tunnel SANDBOX REMOTE_PORT [LOCAL_PORT]";
  const name = need(args, 0, `sandbox name: ${usage}`);
  const remotePort = portArg(need(args, 1, `remote port: ${usage}`), "REMOTE_PORT");
  const local = args.positionals[2];
  const localPort = local === undefined ? 0 : portArg(local, "LOCAL_PORT", 0);
  const sb = await client(args).getSandbox(name);
  const t = await sb.tunnel(remotePort, { localPort, host: flag(args, "host") });
  // Refused connections (nothing listening, port not allowed) are reported; the tunnel stays up.
  t.on("error", (e) => process.stderr.write(`tunnel: ${e.message}\n`));
  process.stdout.write(`forwarding ${t.host}:${t.localPort} -> ${name}:${remotePort}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await t.close();
  return 0;
}
