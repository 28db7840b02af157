import { boolFlag, client, CliError, flag, need, printJson, printTable, type Args } from "../../context.js";

/** All of stdin as text, without one trailing newline (as `docker login --password-stdin`). */
async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write("password (end with Ctrl-D): ");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

/**
 * `sandbar registry create|ls|rm`: private registry credentials of the key's workspace. The
 * password is read from stdin only (`--password-stdin`), never from the command line, where
 * `ps` and the shell history would show it.
 */
export async function registry(args: Args): Promise<void> {
  if (args.flags.password !== undefined) {
    throw new CliError("--password is not accepted (the command line shows in ps and shell history); pipe it in with --password-stdin");
  }
  const verb = need(args, 0, "registry verb (create, ls, rm)");
  switch (verb) {
    case "create": {
      const name = need(args, 1, "registry name: sandbar registry create NAME URL [--username U --password-stdin]");
      const url = need(args, 2, "registry URL: sandbar registry create NAME URL [--username U --password-stdin]");
      const username = flag(args, "username");
      const fromStdin = boolFlag(args, "password-stdin");
      if ((username === undefined) !== !fromStdin) throw new CliError("--username and --password-stdin go together");
      let password: string | undefined;
      if (fromStdin) {
        password = await readStdin();
        if (password === "") throw new CliError("--password-stdin: stdin held no password");
      }
      printJson(await client(args).registries.create({ name, url, username, password }));
      return;
    }
    case "ls": {
      const limit = flag(args, "limit");
      const list = await client(args).registries.list({ nameContains: flag(args, "name-contains"), limit: limit ? Number(limit) : undefined });
      printTable(list as unknown as Record<string, unknown>[], ["id", "name", "url", "username", "has_password", "created_at"]);
      return;
    }
    case "rm":
      await client(args).registries.delete(need(args, 1, "registry name or id"));
      return;
    default:
      throw new CliError(`unknown registry verb ${verb}`);
  }
}
