/**
 * Removes a build directory that may still have filesystems mounted inside it.
 *
 * mmdebstrap (root mode) mounts proc, sysfs, devpts and a bind of the host's /dev/shm into the
 * rootfs while it installs; if it dies mid-build those mounts stay. A plain recursive delete would
 * then walk into them and empty the host's /dev/shm. So mounts under the directory are detached
 * first, and rm never crosses into another filesystem.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { runCommand } from "./run-command.js";

const ATTEMPTS = 5;

export async function removeTree(dir: string): Promise<void> {
  const root = resolve(dir);
  const mounts = (await mountPoints()).filter((point) => point.startsWith(`${root}/`));
  // Deepest first, so a mount on top of another is detached before the one below it.
  for (const point of mounts.sort((a, b) => b.length - a.length)) {
    await runCommand("umount", ["--lazy", point]);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      await runCommand("rm", ["-rf", "--one-file-system", "--", root]);
      return;
    } catch (error) {
      // A dying build process may still be writing files here for a moment.
      if (attempt >= ATTEMPTS) throw error;
      await sleep(200 * attempt);
    }
  }
}

/** Mount points of this mount namespace, with mountinfo's octal escapes (\040 for space) undone. */
async function mountPoints(): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((field): field is string => field !== undefined)
    .map((field) => field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8))));
}
