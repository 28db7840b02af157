import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { client, CliError, flag, flagValues, need, printJson, type Args } from "../../context.js";

const USAGE = "sandbar snapshot build NAME [CONTEXT_DIR] [-f DOCKERFILE] [--build-arg K=V]... [--target T] [--fs-capacity BYTES] [--timeout S]";

/** All of stdin as text (a Dockerfile given as `-f -`). */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * `--build-arg K=V` values as an object. `--build-arg K` alone takes K from the environment
 * and is left out when it is not set there (as `docker build` does).
 */
export function parseBuildArgs(values: string[]): Record<string, string> | undefined {
  if (values.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const key = eq < 0 ? v : v.slice(0, eq);
    if (!/^[^\s=]+$/.test(key)) throw new CliError(`--build-arg must be NAME=VALUE or NAME, not '${v}'`);
    if (eq >= 0) out[key] = v.slice(eq + 1);
    else if (process.env[key] !== undefined) out[key] = process.env[key];
  }
  return out;
}

/**
 * `sandbar snapshot build NAME [CONTEXT_DIR]`: send the Dockerfile and the context directory
 * (default `.`, its `.dockerignore` honoured), stream the build log to stdout, then print the
 * ready snapshot as JSON. A failed build throws (exit 1) with the reason and the log's tail.
 */
export async function snapshotBuild(args: Args): Promise<void> {
  const name = need(args, 1, `snapshot name: ${USAGE}`);
  if (args.positionals.length > 3) throw new CliError(`too many arguments: ${USAGE}`);
  const contextDir = args.positionals[2] ?? ".";
  let isDir = false;
  try {
    isDir = statSync(contextDir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new CliError(`build context ${contextDir} is not a directory`);
  const file = flag(args, "file");
  if (args.flags.file !== undefined && file === undefined) throw new CliError("-f needs a Dockerfile path (or - for stdin)");
  let dockerfile: string;
  if (file === "-") {
    dockerfile = await readStdin();
  } else {
    const path = file ?? join(contextDir, "Dockerfile");
    try {
      dockerfile = readFileSync(path, "utf8");
    } catch (e) {
      throw new CliError(
        `cannot read the Dockerfile ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file (name it with -f)" : (e as Error).message}`,
      );
    }
  }
  if (dockerfile.trim() === "") throw new CliError("the Dockerfile is empty");
  const cap = flag(args, "fs-capacity");
  if (cap !== undefined && !/^[1-9]\d*$/.test(cap)) throw new CliError(`--fs-capacity must be a number of bytes, not '${cap}'`);
  const timeout = flag(args, "timeout");
  if (timeout !== undefined && !(Number(timeout) > 0)) throw new CliError(`--timeout must be a number of seconds, not '${timeout}'`);
  const snap = await client(args).createSnapshotFromDockerfile(name, dockerfile, {
    context: contextDir,
    buildArgs: parseBuildArgs(flagValues(args, "build-arg")),
    target: flag(args, "target"),
    fsCapacityBytes: cap === undefined ? undefined : Number(cap),
    timeout: timeout === undefined ? 1800 : Number(timeout),
    onBuildLog: (line) => process.stdout.write(`${line}\n`),
  });
  printJson(snap);
}
