import { readFile } from "node:fs/promises";
import { run } from "./proc.js";

/** Mount points currently in this mount namespace, decoded from /proc/self/mountinfo. */
export async function mountPoints(): Promise<Set<string>> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (field) out.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/** Unmount, retrying once and then lazily (a runtime process may hold it for a moment). */
export async function umount(target: string): Promise<void> {
  const r = await run(["umount", target], { check: false });
  if (r.code !== 0) {
    await new Promise((res) => setTimeout(res, 200));
    const again = await run(["umount", target], { check: false });
    if (again.code !== 0) await run(["umount", "-l", target]);
  }
}
