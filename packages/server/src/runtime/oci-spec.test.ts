import { describe, expect, it } from "vitest";
import { AGENT_THREADS_RUNC, buildSpec, type SpecInput } from "./oci-spec.js";

const input = (runtime: SpecInput["runtime"]): SpecInput => ({
  runtime,
  rootfs: "/r",
  hostname: "h",
  netnsPath: "/run/netns/n",
  agentDir: "/a",
  agentToken: "tok",
  agentPort: 9000,
  image: { env: ["LANG=C"], workingDir: "/w", user: "app", entrypoint: [], cmd: [] },
  vcpus: 1,
  memBytes: 256 << 20,
  pidsLimit: 4096,
  cgroupsPath: "/sandbar/x",
  hostnameFile: "/f/hostname",
  hostsFile: "/f/hosts",
  resolvFile: "/f/resolv.conf",
});

const env = (runtime: SpecInput["runtime"]): string[] => (buildSpec(input(runtime)) as { process: { env: string[] } }).process.env;

describe("buildSpec", () => {
  it("passes the agent its settings and keeps the image's environment", () => {
    const e = env("runsc");
    expect(e).toContain("LANG=C");
    expect(e).toContain("SANDBAR_AGENT_TOKEN=tok");
    expect(e).toContain("SANDBAR_AGENT_ADDR=0.0.0.0:9000");
    expect(e).toContain("SANDBAR_AGENT_CWD=/w");
    expect(e).toContain("SANDBAR_AGENT_USER=app");
    expect(e.some((v) => v.startsWith("PATH="))).toBe(true);
  });
  it("asks the agent for threads ahead under runc only, whose pids limit counts them", () => {
    expect(env("runc")).toContain(`SANDBAR_AGENT_THREADS=${AGENT_THREADS_RUNC}`);
    expect(env("runsc").some((v) => v.startsWith("SANDBAR_AGENT_THREADS="))).toBe(false);
  });
});
