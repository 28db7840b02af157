import { describe, expect, it } from "vitest";
import { BadReferenceError, isLoopbackRegistry, parseImageRef } from "./image-ref.js";

describe("image references", () => {
  it.each([
    ["python:3.12-slim", "docker.io/library/python:3.12-slim"],
    ["python", "docker.io/library/python:latest"],
    ["org/app:1", "docker.io/org/app:1"],
    ["127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest"],
    ["localhost/x", "localhost/x:latest"],
    ["registry.example.com/internal/python:3.12", "registry.example.com/internal/python:3.12"],
    [`ghcr.io/a/b@sha256:${"a".repeat(64)}`, `ghcr.io/a/b@sha256:${"a".repeat(64)}`],
    ["docker://alpine:3", "docker.io/library/alpine:3"],
  ])("%s -> %s", (input, canonical) => {
    expect(parseImageRef(input).canonical).toBe(canonical);
  });

  it.each(["", "UPPER/Case::bad", "a b", "x@sha256:short", "repo:bad tag", "/leading"])("rejects %j", (input) => {
    expect(() => parseImageRef(input)).toThrow(BadReferenceError);
  });

  it("treats loopback registries as plain HTTP", () => {
    expect(isLoopbackRegistry("127.0.0.1:5000")).toBe(true);
    expect(isLoopbackRegistry("localhost:5000")).toBe(true);
    expect(isLoopbackRegistry("[::1]:5000")).toBe(true);
    expect(isLoopbackRegistry("registry.example.com")).toBe(false);
  });
});
