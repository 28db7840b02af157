import { readFile, readdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type World } from "../support/fixture.js";
import { instancePrefix } from "../support/host-resources.js";

/** CPU time (ns) the sandbox's cgroup has used, read on the host. */
async function cpuUsageNs(containerId: string): Promise<number> {
  return Number((await readFile(`/sys/fs/cgroup/cpuacct/sandbar/${containerId}/cpuacct.usage`, "utf8")).trim());
}

describe("resource limits", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld(["busybox"]);
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("gives a CPU hog its vcpus and no more", async () => {
    const sb = await w.createSandbox({ snapshot_name: "busybox", vcpus: 0.5 });
    const cid = `${instancePrefix(w.t.dataDir)}${sb.id}`;
    expect((await readdir("/sys/fs/cgroup/cpu/sandbar")).includes(cid)).toBe(true);
    expect((await readFile(`/sys/fs/cgroup/cpu/sandbar/${cid}/cpu.cfs_quota_us`, "utf8")).trim()).toBe("50000");
    const before = await cpuUsageNs(cid);
    const t0 = Date.now();
    // Two busy loops: unlimited they would take ~2 CPU-seconds per wall second on 2 cores.
    const r = await w.exec(sb, "(timeout 3 sh -c 'while :; do :; done' &) ; timeout 3 sh -c 'while :; do :; done'; echo done");
    const wallS = (Date.now() - t0) / 1000;
    const usedS = ((await cpuUsageNs(cid)) - before) / 1e9;
    expect(r.body.stdout).toContain("done");
    expect(wallS).toBeGreaterThan(2.5);
    // 0.5 CPU for ~3 s is ~1.5 CPU-seconds; allow scheduling slack but far below 2 cores' 6.
    expect(usedS).toBeLessThan(wallS * 0.5 * 1.25 + 0.3);
    expect(usedS).toBeGreaterThan(wallS * 0.5 * 0.5);
  });
});
