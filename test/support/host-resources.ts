/**
 * Counts of the host resources sandboxes use, for leak assertions: containers of a
 * runtime, network namespaces, veths, mounts and loop devices under a data dir.
 */
import { readFile, readdir } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";

/** Host-side veths (ifindex and name) of this server's namespaces, to check later that they are gone. */
export async function hostVeths(dataDir: string): Promise<{ ifindex: number; name: string }[]> {
  const prefix = instancePrefix(dataDir);
  const out: { ifindex: number; name: string }[] = [];
  for (const ns of (await readdir("/run/netns").catch(() => [] as string[])).filter((n) => n.startsWith(prefix))) {
    for (const line of lines("ip", ["-n", ns, "-o", "link", "show", "eth0"])) {
      const peer = /eth0@if(\d+)/.exec(line)?.[1];
      if (!peer) continue;
      const host = lines("ip", ["-o", "link", "show"]).find((l) => l.startsWith(`${peer}: `));
      const name = host ? /^\d+: ([^@:]+)/.exec(host)?.[1] : undefined;
      if (name) out.push({ ifindex: Number(peer), name });
    }
  }
  return out;
}

/** Which of these host interfaces (by ifindex, never reused soon) still exist. */
export function stillPresent(veths: { ifindex: number; name: string }[]): string[] {
  const present = new Set(lines("ip", ["-o", "link", "show"]).map((l) => Number(l.split(":")[0])));
  return veths.filter((v) => present.has(v.ifindex)).map((v) => v.name);
}

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

/**
 * Of these veth indexes (sbxN), the ones whose per-sandbox firewall chains or set (fN, iN, pN,
 * aN in `inet sandbar`) still exist although no veth sbxN does: rules that outlived their sandbox.
 * An index another server's sandbox has claimed since (its veth exists) is not counted.
 */
export function orphanFirewallRules(indexes: number[]): number[] {
  let listing = "";
  try {
    listing = execFileSync("nft", ["list", "table", "inet", "sandbar"], { encoding: "utf8" });
  } catch {
    return [];
  }
  const names = new Set([...listing.matchAll(/^\s*(?:chain|set) ([fipa]\d+) \{/gm)].map((m) => m[1] as string));
  const links = new Set(lines("ip", ["-o", "link", "show"]).map((l) => /^\d+: ([^@:]+)/.exec(l)?.[1]));
  return indexes.filter((n) => !links.has(`sbx${n}`) && ["f", "i", "p", "a"].some((c) => names.has(`${c}${n}`)));
}
