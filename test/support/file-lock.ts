/**
 * A cross-process lock on a file created with O_EXCL, for test-support work that several test
 * files (separate processes or worker threads) may start at once, such as building a cached image.
 *
 * The holder rewrites the file's mtime every few seconds. A lock is stale when its holder's pid
 * is gone (same host) or when its heartbeat stopped, which also covers a vitest worker thread
 * that was terminated while its process lives on. Breaking a stale lock can race with another
 * waiter breaking it too; callers must therefore publish their result atomically (rename) and
 * accept a result that appeared meanwhile, so the lock only saves duplicate work.
 */
import { open, readFile, stat, unlink, utimes } from "node:fs/promises";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";

import { isRecord } from "./json-guards.js";

export interface FileLockOptions {
  /** Give up waiting for another holder after this long. */
  waitTimeoutMs?: number;
  /** A lock whose mtime is older than this is considered abandoned. */
  staleAfterMs?: number;
  pollMs?: number;
}

interface LockOwner {
  pid: number;
  hostname: string;
  acquiredAt: string;
}

const DEFAULTS = { waitTimeoutMs: 15 * 60_000, staleAfterMs: 60_000, pollMs: 200 } as const;

export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  options: FileLockOptions = {},
): Promise<T> {
  const staleAfterMs = options.staleAfterMs ?? DEFAULTS.staleAfterMs;
  await acquire(lockPath, {
    waitTimeoutMs: options.waitTimeoutMs ?? DEFAULTS.waitTimeoutMs,
    staleAfterMs,
    pollMs: options.pollMs ?? DEFAULTS.pollMs,
  });
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(lockPath, now, now).catch(() => undefined);
  }, Math.max(1000, Math.floor(staleAfterMs / 4)));
  // A forgotten lock must not keep the test process alive.
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    await unlink(lockPath).catch(() => undefined);
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return errnoCode(error) === "EPERM";
  }
}

export function errnoCode(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error) {
    const { code } = error;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}

async function acquire(lockPath: string, options: Required<FileLockOptions>): Promise<void> {
  const deadline = Date.now() + options.waitTimeoutMs;
  for (;;) {
    if (await tryCreate(lockPath)) return;
    const state = await inspect(lockPath, options.staleAfterMs);
    if (state === "stale") {
      await unlink(lockPath).catch(() => undefined);
      continue;
    }
    if (state === "gone") continue;
    if (Date.now() > deadline) {
      const holder = await readFile(lockPath, "utf8").catch(() => "?");
      throw new Error(`timed out after ${options.waitTimeoutMs} ms waiting for ${lockPath} (held by ${holder})`);
    }
    await sleep(options.pollMs);
  }
}

async function tryCreate(lockPath: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(lockPath, "wx");
  } catch (error) {
    if (errnoCode(error) === "EEXIST") return false;
    throw error;
  }
  try {
    const owner: LockOwner = { pid: process.pid, hostname: hostname(), acquiredAt: new Date().toISOString() };
    await handle.writeFile(JSON.stringify(owner));
  } finally {
    await handle.close();
  }
  return true;
}

async function inspect(lockPath: string, staleAfterMs: number): Promise<"held" | "stale" | "gone"> {
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(lockPath)).mtimeMs;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return "gone";
    throw error;
  }
  if (Date.now() - mtimeMs > staleAfterMs) return "stale";
  const owner = parseOwner(await readFile(lockPath, "utf8").catch(() => ""));
  // An unparsable file is a holder between open() and write(); its heartbeat decides.
  if (owner !== undefined && owner.hostname === hostname() && !processAlive(owner.pid)) return "stale";
  return "held";
}

function parseOwner(text: string): LockOwner | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(value)) return undefined;
  const { pid, hostname: host, acquiredAt } = value;
  if (typeof pid !== "number" || typeof host !== "string" || typeof acquiredAt !== "string") return undefined;
  return { pid, hostname: host, acquiredAt };
}
