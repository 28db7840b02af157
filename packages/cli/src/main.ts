#!/usr/bin/env node
import { parseArgs } from "node:util";
import { SandboxClientError } from "@sandbar/sdk";
import { CliError, type Args } from "./context.js";
import { serve } from "./commands/serve.js";
import { key } from "./commands/key/key.js";
import { snapshot } from "./commands/snapshot/snapshot.js";
import { sandbox } from "./commands/sandbox/sandbox.js";
import { image } from "./commands/image/image.js";
import { registry } from "./commands/registry/registry.js";
import { pool } from "./commands/pool/pool.js";
import { workspace } from "./commands/workspace/workspace.js";
import { tunnel } from "./commands/tunnel.js";
import { serviceUrl } from "./commands/service-url.js";

const USAGE = `usage: sandbar <command>
  serve [--port P] [--host H] [--data-dir D] [--runtime runsc|runc] [--public-url URL]
  key create [--workspace W] [--name N] | key ls | key revoke ID_OR_PREFIX
  workspace ls | workspace quota NAME [--sandboxes N] [--vcpus N] [--mem-bytes B] [--storage-bytes B] [--reset]
                 (quota overrides per workspace on the data dir; 'none' = no limit, --reset = server defaults)
  image build-debian NAME [--packages python3,bash] [--suite bookworm] | image import NAME SOURCE [--tag T]
  image ls | image rm NAME          (local images: docker_image sandbar.local/NAME:TAG)
  snapshot create NAME --image IMAGE [--fs-capacity BYTES] [--registry R] | ls | get ID | rm ID
                 (--registry: pull a private image with a registry's credentials)
  snapshot build NAME [CONTEXT_DIR] [-f DOCKERFILE] [--build-arg K=V]... [--target T] [--fs-capacity BYTES] [--timeout S]
                 (build from a Dockerfile: CONTEXT_DIR default ., -f default CONTEXT_DIR/Dockerfile or - for
                  stdin; .dockerignore honoured; the build log streams to stdout, then the snapshot as JSON)
  registry create NAME URL [--username U --password-stdin] | registry ls | registry rm NAME
                 (private registry credentials; the password is read from stdin, never from argv)
  pool create SNAPSHOT SIZE [--vcpus N] [--mem-bytes B] [--fs-capacity B] | pool ls | get ID | resize ID SIZE | rm ID
                 (warm pools: creates of that snapshot and size are served from pre-booted sandboxes)
  sandbox create --snapshot S [--name N] [--egress deny_all|allow_all|allow_list]
                 [--allow-cidr CIDR]... [--allow-domain NAME]... [--no-restore-memory] [--preserve-memory]
  sandbox ls | get N | rm N | stop N | start N
  sandbox snapshot N SNAPSHOT_NAME [--memory] [--fs-capacity BYTES] [--timeout S]
                 (capture the sandbox's files, with --memory also its memory and processes; runsc only)
  sandbox exec NAME -- COMMAND... (streams) | sandbox shell NAME (interactive pty)
  sandbox cp SRC DST   (one side SANDBOX:/path)
  tunnel SANDBOX REMOTE_PORT [LOCAL_PORT] [--host H]   (forward a local port until Ctrl-C; default a free one)
  service-url SANDBOX PORT [--expires SECONDS]          (token URL for an HTTP service in the sandbox)
common flags: --endpoint URL (SANDBAR_ENDPOINT), --api-key K (SANDBAR_API_KEY), --data-dir D`;

const STRING_FLAGS = ["port", "host", "data-dir", "runtime", "public-url", "endpoint", "api-key", "workspace", "name", "image", "fs-capacity", "timeout", "name-contains", "limit", "snapshot", "vcpus", "mem-bytes", "cwd", "packages", "suite", "tag", "shell", "egress", "expires", "username", "registry", "target", "sandboxes", "storage-bytes"];
/** Flags that take no value: present or not. */
const BOOLEAN_FLAGS = ["memory", "no-restore-memory", "preserve-memory", "password-stdin", "reset"];
/** Flags that may be repeated (values collect in a list). */
const LIST_FLAGS = ["allow-cidr", "allow-domain", "build-arg"];
const OPTIONS = {
  ...Object.fromEntries(STRING_FLAGS.map((f) => [f, { type: "string" as const }])),
  file: { type: "string" as const, short: "f" },
  ...Object.fromEntries(LIST_FLAGS.map((f) => [f, { type: "string" as const, multiple: true }])),
  ...Object.fromEntries(BOOLEAN_FLAGS.map((f) => [f, { type: "boolean" as const }])),
};

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: false, options: OPTIONS });
  const [cmd, ...rest] = positionals;
  const args: Args = { positionals: rest, flags: values as Args["flags"] };
  switch (cmd) {
    case "serve":
      await serve(args);
      return 0;
    case "key":
      await key(args);
      return 0;
    case "snapshot":
      await snapshot(args);
      return 0;
    case "sandbox":
      return sandbox(args);
    case "image":
      await image(args);
      return 0;
    case "registry":
      await registry(args);
      return 0;
    case "pool":
      await pool(args);
      return 0;
    case "workspace":
      await workspace(args);
      return 0;
    case "tunnel":
      return tunnel(args);
    case "service-url":
      return serviceUrl(args);
    case undefined:
    case "help":
      process.stdout.write(`${USAGE}\n`);
      return cmd === undefined ? 2 : 0;
    default:
      throw new CliError(`unknown command '${cmd}'\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof SandboxClientError) process.stderr.write(`error: ${e.code ?? e.name}: ${e.message}\n`);
    else if (e instanceof CliError) process.stderr.write(`error: ${e.message}\n`);
    else process.stderr.write(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
