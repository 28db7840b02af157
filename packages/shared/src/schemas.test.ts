import { describe, expect, it } from "vitest";
import { createSandboxRequest, executeRequest, filePathQuery, listSnapshotsQuery, sandboxName, ttlSeconds } from "./schemas.js";

describe("wire schemas", () => {
  it.each([
    [0, true],
    [60, true],
    [3600, true],
    [61, false],
    [-60, false],
    [1.5, false],
  ])("ttl %s valid=%s", (v, ok) => {
    expect(ttlSeconds.safeParse(v).success).toBe(ok);
  });

  it.each([
    ["box-1", true],
    ["a", true],
    ["Has Spaces", false],
    ["a/b", false],
    ["ñame", false],
    ["-lead", false],
    ["x".repeat(64), false],
  ])("sandbox name %j valid=%s", (v, ok) => {
    expect(sandboxName.safeParse(v).success).toBe(ok);
  });

  it("wants exactly one of snapshot_id and snapshot_name", () => {
    expect(createSandboxRequest.safeParse({ snapshot_id: "a" }).success).toBe(true);
    expect(createSandboxRequest.safeParse({ snapshot_name: "a" }).success).toBe(true);
    expect(createSandboxRequest.safeParse({ snapshot_id: "a", snapshot_name: "b" }).success).toBe(false);
    expect(createSandboxRequest.safeParse({}).success).toBe(false);
  });

  it("fills the protocol's defaults", () => {
    expect(createSandboxRequest.parse({ snapshot_id: "a" })).toMatchObject({ wait_for_ready: true, timeout: 30 });
    expect(executeRequest.parse({ command: "x" })).toMatchObject({ timeout: 60, shell: "/bin/bash" });
    expect(listSnapshotsQuery.parse({})).toEqual({ limit: 50, offset: 0 });
  });

  it("bounds list paging", () => {
    expect(listSnapshotsQuery.safeParse({ limit: "0" }).success).toBe(false);
    expect(listSnapshotsQuery.safeParse({ limit: "501" }).success).toBe(false);
    expect(listSnapshotsQuery.safeParse({ offset: "-1" }).success).toBe(false);
    expect(listSnapshotsQuery.parse({ limit: "500", offset: "10" })).toEqual({ limit: 500, offset: 10 });
  });

  it("takes only absolute file paths", () => {
    expect(filePathQuery.safeParse({ path: "/etc/passwd" }).success).toBe(true);
    expect(filePathQuery.safeParse({ path: "etc/passwd" }).success).toBe(false);
    expect(filePathQuery.safeParse({ path: "/a\0b" }).success).toBe(false);
  });
});
