/**
 * Counts of the host resources sandboxes use, for leak assertions: containers of a
 * runtime, network namespaces, veths, mounts and loop devices under a data dir.
 */
import { readFile, readdir } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";

export interface HostResources {
  containers: string[];
  netns: string[];
  mounts: string[];
  loops: string[];
  sandboxDirs: string[];
}

function lines(cmd: string, args: string[]): string[] {
  try {
    return execFileSync(cmd, args, { encoding: "utf8" }).split("\n").map((s) => s.trim()).filter(Boolean);
  } catch {
    return [];
  }
}

/** The per-data-dir tag the server puts in container and namespace names. */
export function instancePrefix(dataDir: string): string {
  return `sandbar-${createHash("sha256").update(dataDir).digest("hex").slice(0, 8)}-`;
}

/**
 * What currently exists on the host that belongs to the server with `dataDir` (other
 * servers of parallel test files are filtered out by their instance prefix).
 */
export async function hostResources(dataDir: string, runtime: "runsc" | "runc" = "runsc"): Promise<HostResources> {
  const prefix = instancePrefix(dataDir);
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
  let sandboxDirs: string[] = [];
  try {
    sandboxDirs = await readdir(`${dataDir}/sandboxes`);
  } catch {
    sandboxDirs = [];
  }
  const netnsNames = await readdir("/run/netns").catch(() => [] as string[]);
  return {
    containers: lines(runtime, ["list", "--quiet"]).filter((id) => id.startsWith(prefix)),
    netns: netnsNames.filter((n) => n.startsWith(prefix)),
    mounts: mountinfo.split("\n").filter((l) => l.includes(dataDir)),
    loops: lines("losetup", ["-a"]).filter((l) => l.includes(dataDir)),
    sandboxDirs,
  };
}
