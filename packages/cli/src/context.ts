import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SandboxClient } from "@sandbar/sdk";

/** A CLI failure with a message for the user; main.ts turns it into exit code 1. */
export class CliError extends Error {}

/** Parsed command line: positional arguments and --flags. */
export interface Args {
  positionals: string[];
  flags: Record<string, string | boolean | (string | boolean)[] | undefined>;
}

export function flag(args: Args, name: string): string | undefined {
  const v = args.flags[name];
  return typeof v === "string" ? v : undefined;
}

/** A flag without a value (`--memory`): true when given. */
export function boolFlag(args: Args, name: string): boolean {
  return args.flags[name] === true;
}

/** All values of a repeatable flag; each may also hold a comma-separated list. */
export function flagList(args: Args, name: string): string[] {
  const v = args.flags[name];
  const all = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return all.flatMap((x) => (typeof x === "string" ? x.split(",") : [])).map((x) => x.trim()).filter((x) => x !== "");
}

/** All values of a repeatable flag as given (no comma splitting: `--build-arg K=a,b`). */
export function flagValues(args: Args, name: string): string[] {
  const v = args.flags[name];
  const all = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return all.filter((x): x is string => typeof x === "string");
}

/** A TCP port argument: an integer from `min` (1, or 0 for "any free port") to 65535. */
export function portArg(value: string, what: string, min = 1): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > 65535) throw new CliError(`${what} must be a port number from ${min} to 65535, not '${value}'`);
  return n;
}

export function need(args: Args, index: number, what: string): string {
  const v = args.positionals[index];
  if (v === undefined) throw new CliError(`missing ${what}`);
  return v;
}

/** Default data dir of `serve` and `key`. */
export function dataDir(args: Args): string {
  return flag(args, "data-dir") ?? process.env.SANDBAR_DATA_DIR ?? "/var/lib/sandbar";
}

/**
 * A client for the server named by --endpoint / SANDBAR_ENDPOINT, with the key from
 * --api-key / SANDBAR_API_KEY or, on the server's own machine, its bootstrap key file.
 */
export function client(args: Args): SandboxClient {
  const endpoint = flag(args, "endpoint") ?? process.env.SANDBAR_ENDPOINT ?? `http://127.0.0.1:${process.env.SANDBAR_PORT ?? "8080"}`;
  let apiKey = flag(args, "api-key") ?? process.env.SANDBAR_API_KEY;
  if (!apiKey) {
    try {
      apiKey = readFileSync(join(dataDir(args), "bootstrap-api-key"), "utf8").trim();
    } catch {
      apiKey = undefined;
    }
  }
  return new SandboxClient({ endpoint, apiKey });
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(rows: Record<string, unknown>[], cols: string[]): void {
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? "").length)));
  const line = (vals: string[]): string => vals.map((v, i) => v.padEnd(widths[i] ?? 0)).join("  ").trimEnd();
  process.stdout.write(`${line(cols.map((c) => c.toUpperCase()))}\n`);
  for (const r of rows) process.stdout.write(`${line(cols.map((c) => String(r[c] ?? "")))}\n`);
}
