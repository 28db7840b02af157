/**
 * The SDK's HTTP layer with a scripted fetch: which calls are retried, how long it waits,
 * and which class each server error becomes. Waits are measured on fake timers (Date
 * advances with them), so the computed delays are checked exactly without sleeping; one
 * test sleeps for real to prove Retry-After is honoured end to end.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { ERROR_CODES, ERROR_TABLE, errorBody, type ErrorCode } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";
import {
  AuthenticationError,
  ERROR_CLASSES,
  QuotaExceededError,
  ResourceCreationError,
  ResourceNotFoundError,
  SandboxClientError,
  SandboxConnectionError,
  ValidationError,
  errorFromResponse,
} from "./errors.js";
import { SandboxClient } from "./client.js";

const URL_ = "http://sandbar.test/v2/sandboxes/boxes";

/** One scripted answer: a response factory, or an error the fetch rejects with. */
type Step = (() => Response) | Error;

function res(status: number, body?: unknown, headers: Record<string, string> = {}): () => Response {
  return () =>
    new Response(body === undefined || status === 204 ? null : typeof body === "string" ? body : JSON.stringify(body), {
      status,
      headers: { ...(body !== undefined && typeof body !== "string" ? { "content-type": "application/json" } : {}), ...headers },
    });
}

function errRes(code: ErrorCode, headers: Record<string, string> = {}): () => Response {
  return res(ERROR_TABLE[code].status, errorBody(code, `${code} happened`), headers);
}

const connRefused = (): Error => new TypeError("fetch failed");

/** A fetch that answers with `steps` in order, repeating the last; records each call and when it came. */
function scripted(steps: Step[]): { fetch: typeof fetch; calls: { url: string; init: RequestInit; at: number }[] } {
  const calls: { url: string; init: RequestInit; at: number }[] = [];
  const f = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    calls.push({ url: String(input), init, at: Date.now() });
    const step = steps[Math.min(calls.length - 1, steps.length - 1)];
    if (step === undefined) throw new Error("no scripted step");
    if (step instanceof Error) throw step;
    return step();
  };
  return { fetch: f as typeof fetch, calls };
}

function settings(f: typeof fetch, over: Partial<HttpSettings> = {}): HttpSettings {
  return { baseUrl: "http://sandbar.test/v2/sandboxes", apiKey: "k", maxRetries: 3, fetch: f, webSocket: undefined, ...over };
}

/** Gaps between consecutive calls, in ms. */
function gaps(calls: { at: number }[]): number[] {
  return calls.slice(1).map((c, i) => c.at - (calls[i]?.at ?? 0));
}

/** Run `p` to completion on fake timers and return how it settled. */
async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  const s = p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  await vi.runAllTimersAsync();
  return s;
}

/** Fake timers with jitter pinned to its middle (factor 1.0). */
function fakeTime(random = 0.5): void {
  vi.useFakeTimers();
  vi.spyOn(Math, "random").mockReturnValue(random);
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("retries of idempotent calls (GET)", () => {
  it("retries a connection failure with exponential backoff up to maxRetries, then throws SandboxConnectionError", async () => {
    fakeTime();
    const { fetch, calls } = scripted([connRefused()]);
    const r = await settle(call(settings(fetch), URL_));
    expect(calls).toHaveLength(4); // 1 + maxRetries
    expect(gaps(calls)).toEqual([200, 400, 800]);
    expect(r.ok).toBe(false);
    const e = (r as { error: unknown }).error;
    expect(e).toBeInstanceOf(SandboxConnectionError);
    expect(e).toBeInstanceOf(SandboxClientError);
    expect(e).toMatchObject({ code: undefined, status: undefined, name: "SandboxConnectionError" });
    expect((e as Error).message).toContain(URL_);
    expect((e as Error).message).toContain("fetch failed");
  });

  it("returns the first good answer after failures", async () => {
    fakeTime();
    const { fetch, calls } = scripted([connRefused(), connRefused(), res(200, { ok: 1 })]);
    const r = await settle(callJson<{ ok: number }>(settings(fetch), URL_, "GET"));
    expect(r).toEqual({ ok: true, value: { ok: 1 } });
    expect(calls).toHaveLength(3);
  });

  it("honours maxRetries (0 = one attempt, 5 = six)", async () => {
    fakeTime();
    const none = scripted([connRefused()]);
    expect((await settle(call(settings(none.fetch, { maxRetries: 0 }), URL_))).ok).toBe(false);
    expect(none.calls).toHaveLength(1);
    const five = scripted([connRefused()]);
    await settle(call(settings(five.fetch, { maxRetries: 5 }), URL_));
    expect(five.calls).toHaveLength(6);
  });

  it("caps the backoff at 5 s", async () => {
    fakeTime();
    const { fetch, calls } = scripted([connRefused()]);
    await settle(call(settings(fetch, { maxRetries: 7 }), URL_));
    expect(gaps(calls)).toEqual([200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  it("jitters the backoff by ±20%", async () => {
    fakeTime(0);
    const low = scripted([connRefused()]);
    await settle(call(settings(low.fetch, { maxRetries: 2 }), URL_));
    expect(gaps(low.calls)).toEqual([160, 320]);
    vi.spyOn(Math, "random").mockReturnValue(0.999);
    const high = scripted([connRefused()]);
    await settle(call(settings(high.fetch, { maxRetries: 2 }), URL_));
    const [a = 0, b = 0] = gaps(high.calls);
    expect(a).toBeGreaterThanOrEqual(239);
    expect(a).toBeLessThanOrEqual(240);
    expect(b).toBeGreaterThanOrEqual(479);
    expect(b).toBeLessThanOrEqual(480);
  });

  it.each([502, 503, 504])("retries %i and returns the answer after it", async (status) => {
    fakeTime();
    const { fetch, calls } = scripted([res(status, "upstream down"), res(200, { ok: 1 })]);
    const r = await settle(callJson(settings(fetch), URL_, "GET"));
    expect(r).toEqual({ ok: true, value: { ok: 1 } });
    expect(calls).toHaveLength(2);
    expect(gaps(calls)).toEqual([200]);
  });

  it("retries 429 on GET too", async () => {
    fakeTime();
    const { fetch, calls } = scripted([errRes("QUOTA_EXCEEDED"), res(200, {})]);
    expect((await settle(call(settings(fetch), URL_))).ok).toBe(true);
    expect(calls).toHaveLength(2);
  });

  it("throws the mapped error once the retries of a 503 are used up", async () => {
    fakeTime();
    const { fetch, calls } = scripted([errRes("UNSCHEDULABLE")]);
    const r = await settle(call(settings(fetch), URL_));
    expect(calls).toHaveLength(4);
    expect((r as { error: unknown }).error).toBeInstanceOf(ResourceCreationError);
    expect((r as { error: unknown }).error).toMatchObject({ code: "UNSCHEDULABLE", status: 503 });
  });

  it.each([400, 401, 404, 409, 500])("does not retry %i", async (status) => {
    fakeTime();
    const { fetch, calls } = scripted([res(status, "no")]);
    expect((await settle(call(settings(fetch), URL_))).ok).toBe(false);
    expect(calls).toHaveLength(1);
  });

  it("treats DELETE and PUT as idempotent, PATCH not unless asked", async () => {
    fakeTime();
    for (const method of ["DELETE", "PUT", "HEAD"]) {
      const s = scripted([connRefused(), res(204)]);
      expect((await settle(call(settings(s.fetch), URL_, { method }))).ok).toBe(true);
      expect(s.calls, method).toHaveLength(2);
    }
    const patch = scripted([res(502, "x")]);
    expect((await settle(call(settings(patch.fetch), URL_, { method: "PATCH" }))).ok).toBe(false);
    expect(patch.calls).toHaveLength(1);
    const patchIdem = scripted([res(502, "x"), res(200, {})]);
    expect((await settle(call(settings(patchIdem.fetch), URL_, { method: "PATCH", idempotent: true }))).ok).toBe(true);
    expect(patchIdem.calls).toHaveLength(2);
  });

  it("does not retry once the caller's signal has aborted", async () => {
    fakeTime();
    const ac = new AbortController();
    ac.abort();
    const { fetch, calls } = scripted([new DOMException("aborted", "AbortError")]);
    const r = await settle(call(settings(fetch), URL_, { signal: ac.signal }));
    expect(calls).toHaveLength(1);
    expect((r as { error: unknown }).error).toBeInstanceOf(SandboxConnectionError);
  });
});

describe("retries of non-idempotent calls (POST)", () => {
  it.each([
    [429, "2", 2000],
    [503, "1", 1000],
  ])("retries %i after Retry-After: %s (%i ms)", async (status, after, ms) => {
    fakeTime();
    const { fetch, calls } = scripted([res(status, "busy", { "Retry-After": after }), res(201, { id: "x" })]);
    const r = await settle(callJson(settings(fetch), URL_, "POST", { a: 1 }));
    expect(r).toEqual({ ok: true, value: { id: "x" } });
    expect(calls).toHaveLength(2);
    expect(gaps(calls)).toEqual([ms]);
    // The same body is sent again.
    expect(calls[1]?.init.body).toBe(JSON.stringify({ a: 1 }));
  });

  it("caps Retry-After at 30 s", async () => {
    fakeTime();
    const { fetch, calls } = scripted([res(429, "busy", { "Retry-After": "120" }), res(200, {})]);
    await settle(call(settings(fetch), URL_, { method: "POST" }));
    expect(gaps(calls)).toEqual([30_000]);
  });

  it("backs off without Retry-After, retries at once for 0, and caps an HTTP-date Retry-After at 30 s", async () => {
    fakeTime();
    const cases: [Record<string, string>, number][] = [
      [{}, 200],
      [{ "Retry-After": "0" }, 0],
      [{ "Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT" }, 30_000],
    ];
    for (const [headers, gap] of cases) {
      const { fetch, calls } = scripted([res(503, "busy", headers), res(200, {})]);
      await settle(call(settings(fetch), URL_, { method: "POST" }));
      expect(gaps(calls), JSON.stringify(headers)).toEqual([gap]);
    }
  });

  it("gives up on a persistent 429 after maxRetries and throws QuotaExceededError", async () => {
    fakeTime();
    const { fetch, calls } = scripted([errRes("QUOTA_EXCEEDED", { "Retry-After": "1" })]);
    const r = await settle(call(settings(fetch, { maxRetries: 2 }), URL_, { method: "POST" }));
    expect(calls).toHaveLength(3);
    expect(gaps(calls)).toEqual([1000, 1000]);
    expect((r as { error: unknown }).error).toBeInstanceOf(QuotaExceededError);
  });

  it("does not retry a connection failure: exactly one call, SandboxConnectionError", async () => {
    fakeTime();
    const { fetch, calls } = scripted([connRefused(), res(201, {})]);
    const r = await settle(call(settings(fetch), URL_, { method: "POST", body: "{}" }));
    expect(calls).toHaveLength(1);
    expect((r as { error: unknown }).error).toBeInstanceOf(SandboxConnectionError);
  });

  it.each([502, 504])("does not retry %i: exactly one call", async (status) => {
    fakeTime();
    const { fetch, calls } = scripted([status === 502 ? errRes("SANDBOX_CONNECTION_ERROR") : res(504, "gateway timeout"), res(201, {})]);
    const r = await settle(call(settings(fetch), URL_, { method: "POST", body: "{}" }));
    expect(calls).toHaveLength(1);
    const e = (r as { error: unknown }).error;
    expect(e).toBeInstanceOf(status === 502 ? SandboxConnectionError : SandboxClientError);
    expect(e).toMatchObject({ status });
  });

  it("retries a POST marked idempotent (Sandbox.write) like a GET", async () => {
    fakeTime();
    const { fetch, calls } = scripted([connRefused(), res(502, "x"), res(200, {})]);
    expect((await settle(call(settings(fetch), URL_, { method: "POST", body: new Uint8Array([1]), idempotent: true }))).ok).toBe(true);
    expect(calls).toHaveLength(3);
  });

  it("really waits about Retry-After seconds (real timers, through SandboxClient's fetch option)", async () => {
    const { fetch, calls } = scripted([
      res(429, errorBody("QUOTA_EXCEEDED", "slow down"), { "Retry-After": "1" }),
      res(201, { id: "sb-1", name: "a", status: "ready", dataplane_url: "http://sandbar.test/dataplane/sb-1" }),
    ]);
    const client = new SandboxClient({ endpoint: "http://sandbar.test", apiKey: "k", fetch });
    const started = performance.now();
    const sb = await client.createSandbox("snap");
    const elapsed = performance.now() - started;
    expect(sb.id).toBe("sb-1");
    expect(calls).toHaveLength(2);
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(3000);
  });
});

describe("SandboxClient uses its options for every call", () => {
  it("sends X-Api-Key, and none without a key", async () => {
    const withKey = scripted([res(200, { snapshots: [] })]);
    await new SandboxClient({ endpoint: "http://sandbar.test", apiKey: "secret", fetch: withKey.fetch }).listSnapshots();
    expect(new Headers(withKey.calls[0]?.init.headers).get("x-api-key")).toBe("secret");
    const saved = process.env.SANDBAR_API_KEY;
    delete process.env.SANDBAR_API_KEY;
    try {
      const noKey = scripted([res(200, { snapshots: [] })]);
      await new SandboxClient({ endpoint: "http://sandbar.test", fetch: noKey.fetch }).listSnapshots();
      expect(new Headers(noKey.calls[0]?.init.headers).has("x-api-key")).toBe(false);
    } finally {
      if (saved !== undefined) process.env.SANDBAR_API_KEY = saved;
    }
  });

  it("applies maxRetries", async () => {
    fakeTime();
    const { fetch, calls } = scripted([res(503, "busy")]);
    const client = new SandboxClient({ endpoint: "http://sandbar.test", apiKey: "k", maxRetries: 1, fetch });
    const r = await settle(client.getSandbox("a"));
    expect(calls).toHaveLength(2);
    expect(calls[0]?.url).toBe("http://sandbar.test/v2/sandboxes/boxes/a");
    expect((r as { error: unknown }).error).toBeInstanceOf(SandboxClientError);
  });
});

describe("callJson", () => {
  it("sends JSON with its content type and parses the answer; 204 is undefined", async () => {
    const { fetch, calls } = scripted([res(200, { x: 1 }), res(204)]);
    expect(await callJson(settings(fetch), URL_, "POST", { a: [1] })).toEqual({ x: 1 });
    expect(calls[0]?.init).toMatchObject({ method: "POST", body: '{"a":[1]}' });
    expect(new Headers(calls[0]?.init.headers).get("content-type")).toBe("application/json");
    expect(await callJson(settings(fetch), URL_, "DELETE")).toBeUndefined();
    expect(calls[1]?.init.body).toBeUndefined();
  });
});

describe("errorFromResponse: one class per server code", () => {
  it("ERROR_CLASSES covers exactly ERROR_CODES", () => {
    expect(Object.keys(ERROR_CLASSES).sort()).toEqual([...ERROR_CODES].sort());
  });

  it.each([...ERROR_CODES])("%s maps to its class, a SandboxClientError, with code, status and message", async (code) => {
    const e = await errorFromResponse(errRes(code)());
    const Cls = ERROR_CLASSES[code];
    expect(e).toBeInstanceOf(Cls);
    expect(e).toBeInstanceOf(SandboxClientError);
    expect(e).toBeInstanceOf(Error);
    expect(e.constructor).toBe(Cls);
    expect(e.name).toBe(Cls.name);
    expect(e.code).toBe(code);
    expect(e.status).toBe(ERROR_TABLE[code].status);
    expect(e.message).toBe(`${code} happened`);
    if (e instanceof ResourceNotFoundError) expect(e.resourceType).not.toBe("resource");
  });

  it.each([
    ["SANDBOX_NOT_FOUND", "sandbox"],
    ["SNAPSHOT_NOT_FOUND", "snapshot"],
    ["FILE_NOT_FOUND", "file"],
    ["API_KEY_NOT_FOUND", "api_key"],
    ["ROUTE_NOT_FOUND", "route"],
  ] as const)("%s is a ResourceNotFoundError with resourceType %s", async (code, resourceType) => {
    const e = await errorFromResponse(errRes(code)());
    expect(e).toBeInstanceOf(ResourceNotFoundError);
    expect((e as ResourceNotFoundError).resourceType).toBe(resourceType);
  });

  it("a validation error exposes the fields of its detail list", async () => {
    const body = errorBody("VALIDATION_ERROR", "invalid request", [
      { loc: ["body", "idle_ttl_seconds"], msg: "idle_ttl_seconds: must be a multiple of 60 seconds", type: "value_error" },
      { loc: ["body", "labels", 0], msg: "bad", type: "value_error" },
    ]);
    const e = await errorFromResponse(res(422, body)());
    expect(e).toBeInstanceOf(ValidationError);
    expect((e as ValidationError).fields).toEqual([
      ["body", "idle_ttl_seconds"],
      ["body", "labels", 0],
    ]);
    // A ValidationError whose detail is not a list has no fields.
    const plain = await errorFromResponse(errRes("INVALID_REQUEST")());
    expect((plain as ValidationError).fields).toEqual([]);
  });

  it("without a known code, falls back on the status", async () => {
    const auth401 = await errorFromResponse(res(401, "nope")());
    expect(auth401).toBeInstanceOf(AuthenticationError);
    expect(auth401).toMatchObject({ code: undefined, status: 401, message: "HTTP 401" });
    expect(await errorFromResponse(res(403, { message: "forbidden" })())).toBeInstanceOf(AuthenticationError);
    const nf = await errorFromResponse(res(404, { code: "SOMETHING_NEW", message: "gone" })());
    expect(nf).toBeInstanceOf(ResourceNotFoundError);
    expect(nf).toMatchObject({ code: undefined, message: "gone", resourceType: "resource" });
    const html = await errorFromResponse(res(500, "<html>oops</html>", { "content-type": "text/html" })());
    expect(html.constructor).toBe(SandboxClientError);
    expect(html).toMatchObject({ code: undefined, status: 500, message: "HTTP 500" });
  });
});
