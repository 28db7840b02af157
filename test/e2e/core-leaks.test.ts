import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorld, type World } from "../support/fixture.js";
import { hostResources, hostVeths, orphanFirewallRules, stillPresent } from "../support/host-resources.js";

describe("host resources after many sandboxes", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld(["busybox"]);
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("leaves no container, netns, firewall rule, mount, loop device or directory after 20 create/delete cycles", async () => {
    const ids: string[] = [];
    const veths: { ifindex: number; name: string }[] = [];
    for (let batch = 0; batch < 5; batch++) {
      const created = await Promise.all(Array.from({ length: 4 }, () => w.createSandbox({ snapshot_name: "busybox" })));
      for (const sb of created) {
        expect((await w.exec(sb, "echo alive")).body.stdout).toBe("alive\n");
        ids.push(sb.id);
      }
      const during = await hostResources(w.t.dataDir);
      expect(during.containers.length).toBe(4);
      expect(during.netns.length).toBe(4);
      const v = await hostVeths(w.t.dataDir);
      expect(v.length).toBe(4);
      veths.push(...v);
      await Promise.all(created.map(async (sb) => expect((await w.t.call("DELETE", `/boxes/${sb.id}`)).status).toBe(204)));
    }
    expect(new Set(ids).size).toBe(20);
    expect(veths.length).toBe(20);
    expect(stillPresent(veths)).toEqual([]);
    expect(orphanFirewallRules(veths.map((v) => Number(v.name.replace(/^sbx/, ""))))).toEqual([]);
    expect(await hostResources(w.t.dataDir)).toEqual({ containers: [], netns: [], mounts: [], loops: [], sandboxDirs: [] });
  });
});
