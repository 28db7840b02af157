/**
 * ServiceUrl against a fake fetch and fake clock: the token header on requests, URL joining,
 * and when the token is refreshed (within 60 s of expiry, or half the lifetime of short ones).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ServiceUrlView } from "@sandbar/shared";
import { SandboxClient } from "./client.js";
import { SERVICE_TOKEN_HEADER, ServiceUrl } from "./service-url.js";
import { SandboxConnectionError } from "./errors.js";

const T0 = Date.parse("2030-01-01T00:00:00Z");

interface Seen {
  url: string;
  method: string;
  body: unknown;
  token: string | null;
}

/**
 * A control plane minting tokens `tok-1`, `tok-2`, ... that expire `lifetime` seconds after
 * they are minted, and a service that records the requests it gets.
 */
function world(lifetime = 3600, serviceUrl = "http://svc.test/svc/sb-1/8000"): { fetch: typeof fetch; mints: unknown[]; requests: Seen[] } {
  const mints: unknown[] = [];
  const requests: Seen[] = [];
  const f = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = String(input);
    if (url.endsWith("/service-url")) {
      mints.push(JSON.parse(String(init.body)));
      const n = mints.length;
      const view: ServiceUrlView = {
        browser_url: `http://8000--sb-1.localhost/__sandbar/auth?token=tok-${n}`,
        service_url: serviceUrl,
        token: `tok-${n}`,
        expires_at: new Date(Date.now() + lifetime * 1000).toISOString(),
      };
      return new Response(JSON.stringify(view), { headers: { "content-type": "application/json" } });
    }
    requests.push({ url, method: init.method ?? "GET", body: init.body ?? null, token: new Headers(init.headers).get(SERVICE_TOKEN_HEADER) });
    return new Response("ok");
  };
  return { fetch: f as typeof fetch, mints, requests };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => {
  vi.useRealTimers();
});

describe("ServiceUrl", () => {
  it("fetch joins the path to service_url and sends the token header, keeping the caller's init", async () => {
    const w = world();
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000);
    await svc.fetch();
    await svc.fetch("api/items?limit=2");
    await svc.fetch("/x", { method: "POST", body: "{}", headers: { "content-type": "application/json", [SERVICE_TOKEN_HEADER]: "spoofed" } });
    expect(w.requests).toEqual([
      { url: "http://svc.test/svc/sb-1/8000/", method: "GET", body: null, token: "tok-1" },
      { url: "http://svc.test/svc/sb-1/8000/api/items?limit=2", method: "GET", body: null, token: "tok-1" },
      { url: "http://svc.test/svc/sb-1/8000/x", method: "POST", body: "{}", token: "tok-1" },
    ]);
    expect(w.mints).toEqual([{ port: 8000 }]);
  });

  it("works with a service_url that ends in a slash (host form)", async () => {
    const w = world(3600, "http://8000--sb-1.svc.test/");
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000);
    await svc.fetch("//a");
    expect(w.requests[0]?.url).toBe("http://8000--sb-1.svc.test/a");
  });

  it("refreshes the token once it is within 60 s of expiry, asking for the same lifetime", async () => {
    const w = world(600);
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000, { expiresInSeconds: 600 });
    expect(svc.expiresAt).toBe(new Date(T0 + 600_000).toISOString());
    vi.setSystemTime(T0 + 539_000); // 61 s left
    expect(svc.needsRefresh).toBe(false);
    await svc.fetch("/a");
    vi.setSystemTime(T0 + 540_000); // 60 s left
    expect(svc.needsRefresh).toBe(true);
    await svc.fetch("/b");
    expect(w.requests.map((r) => r.token)).toEqual(["tok-1", "tok-2"]);
    expect(svc.token).toBe("tok-2");
    expect(svc.browserUrl).toContain("token=tok-2");
    expect(svc.expiresAt).toBe(new Date(T0 + 540_000 + 600_000).toISOString());
    expect(w.mints).toEqual([
      { port: 8000, expires_in_seconds: 600 },
      { port: 8000, expires_in_seconds: 600 },
    ]);
    await svc.fetch("/c");
    expect(w.mints).toHaveLength(2);
  });

  it("refreshes an expired token too", async () => {
    const w = world(3600);
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000);
    vi.setSystemTime(T0 + 10 * 3600_000);
    await svc.fetch();
    expect(w.requests[0]?.token).toBe("tok-2");
  });

  it("a short-lived token is refreshed after half its lifetime, not on every request", async () => {
    const w = world(30);
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000, { expiresInSeconds: 30 });
    await svc.fetch();
    vi.setSystemTime(T0 + 14_000);
    await svc.fetch();
    vi.setSystemTime(T0 + 15_000);
    await svc.fetch();
    expect(w.requests.map((r) => r.token)).toEqual(["tok-1", "tok-1", "tok-2"]);
  });

  it("concurrent requests near expiry share one refresh", async () => {
    const w = world(600);
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: w.fetch }).serviceUrl("box", 8000);
    vi.setSystemTime(T0 + 590_000);
    await Promise.all([svc.fetch("/1"), svc.fetch("/2"), svc.fetch("/3")]);
    expect(w.mints).toHaveLength(2);
    expect(w.requests.map((r) => r.token)).toEqual(["tok-2", "tok-2", "tok-2"]);
  });

  it("refresh() and ensureFresh() on demand; a failed refresh throws and is retried next time", async () => {
    let fail = false;
    const w = world(600);
    const f = (async (input: string | URL | Request, init?: RequestInit) => {
      if (fail && String(input).endsWith("/service-url")) throw new TypeError("fetch failed");
      return w.fetch(input, init);
    }) as typeof fetch;
    const svc = await new SandboxClient({ endpoint: "http://h", fetch: f, maxRetries: 0 }).serviceUrl("box", 8000);
    await svc.refresh();
    expect(svc.token).toBe("tok-2");
    expect(await svc.ensureFresh()).toBe(svc);
    expect(svc.token).toBe("tok-2");
    vi.setSystemTime(T0 + 599_000);
    fail = true;
    await expect(svc.fetch()).rejects.toBeInstanceOf(SandboxConnectionError);
    expect(svc.token).toBe("tok-2");
    fail = false;
    await svc.fetch();
    expect(w.requests.map((r) => r.token)).toEqual(["tok-3"]);
  });

  it("an unparseable expiry counts as expired", () => {
    const svc = new ServiceUrl({ browser_url: "b", service_url: "s", token: "t", expires_at: "never" }, 1, () => Promise.reject(new Error("x")), fetch);
    expect(svc.needsRefresh).toBe(true);
  });
});
