import { SandboxConnectionError } from "./errors.js";
import type { WebSocketConstructor } from "./ws-stream.js";
import { errorFromResponse } from "./errors.js";

/** Connection settings shared by the client and its sandboxes. */
export interface HttpSettings {
  /** Control-plane base, e.g. http://127.0.0.1:8080/v2/sandboxes */
  baseUrl: string;
  apiKey: string | undefined;
  maxRetries: number;
  fetch: typeof fetch;
  /** WebSocket implementation for streaming; resolved lazily when absent. */
  webSocket: WebSocketConstructor | undefined;
}

const RETRY_STATUS = new Set([429, 502, 503, 504]);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * One HTTP call with the API key, retries (connection failures, 429/502/503/504 with
 * Retry-After) for idempotent calls only, and errors mapped to classes.
 */
export async function call(s: HttpSettings, url: string, init: RequestInit & { idempotent?: boolean } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (s.apiKey) headers.set("X-Api-Key", s.apiKey);
  const idempotent = init.idempotent ?? (init.method === undefined || init.method === "GET" || init.method === "HEAD" || init.method === "DELETE" || init.method === "PUT");
  for (let attempt = 0; ; attempt++) {
    let res: Response;
    try {
      res = await s.fetch(url, { ...init, headers });
    } catch (e) {
      if (idempotent && attempt < s.maxRetries && !(init.signal?.aborted ?? false)) {
        await sleep(backoff(attempt));
        continue;
      }
      throw new SandboxConnectionError(`cannot reach ${url}: ${(e as Error).message}`, undefined, undefined);
    }
    if (res.ok || res.status === 304) return res;
    if (RETRY_STATUS.has(res.status) && (idempotent || res.status === 429 || res.status === 503) && attempt < s.maxRetries) {
      const after = retryAfterMs(res.headers.get("retry-after"));
      await res.body?.cancel();
      await sleep(after !== undefined ? Math.min(after, 30_000) : backoff(attempt));
      continue;
    }
    throw await errorFromResponse(res);
  }
}

/** Retry-After as seconds or an HTTP date, in milliseconds. */
function retryAfterMs(value: string | null): number | undefined {
  if (!value) return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

function backoff(attempt: number): number {
  return Math.min(200 * 2 ** attempt, 5000) * (0.8 + Math.random() * 0.4);
}

/** POST/PATCH a JSON body and parse the JSON answer. */
export async function callJson<T>(s: HttpSettings, url: string, method: string, body?: unknown, init: RequestInit & { idempotent?: boolean } = {}): Promise<T> {
  const res = await call(s, url, {
    ...init,
    method,
    headers: body === undefined ? init.headers : { "content-type": "application/json", ...(init.headers as Record<string, string> | undefined) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}
