import { client, CliError, flag, need, portArg, type Args } from "../context.js";

/**
 * `sandbar service-url SANDBOX PORT [--expires SECONDS]`: a token URL for an HTTP service in
 * the sandbox. Prints `browser_url` (open it in a browser), `service_url` and the `token` to send
 * with it in the X-Langsmith-Sandbox-Service-Token header, and `expires_at`.
 */
export async function serviceUrl(args: Args): Promise<number> {
  const usage = "sandbar service-url SANDBOX PORT [--expires SECONDS]";
  const name = need(args, 0, `sandbox name: ${usage}`);
  const port = portArg(need(args, 1, `port: ${usage}`), "PORT");
  const expires = flag(args, "expires");
  if (expires !== undefined && !/^[1-9]\d*$/.test(expires)) throw new CliError(`--expires must be a whole number of seconds, not '${expires}'`);
  const svc = await client(args).serviceUrl(name, port, { expiresInSeconds: expires === undefined ? undefined : Number(expires) });
  process.stdout.write(`browser_url  ${svc.browserUrl}\nservice_url  ${svc.serviceUrl}\ntoken        ${svc.token}\nexpires_at   ${svc.expiresAt}\n`);
  return 0;
}
