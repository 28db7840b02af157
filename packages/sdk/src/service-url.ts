import type { ServiceUrlView } from "@sandbar/shared";

/**
 * Header that carries a service token on requests to a `service_url` (the name the LangSmith
 * clients send).
 *
 * @example `await fetch(svc.serviceUrl, { headers: { [SERVICE_TOKEN_HEADER]: svc.token } })`
 */
export const SERVICE_TOKEN_HEADER = "X-Langsmith-Sandbox-Service-Token";

/** Refresh a token this long before it expires (or after half its life, if that is shorter). */
const REFRESH_MARGIN_MS = 60_000;

/**
 * Options of {@link Sandbox.service} and {@link SandboxClient.serviceUrl}.
 *
 * @example `const svc = await sb.service(8000, { expiresInSeconds: 600 })`
 */
export interface ServiceUrlOptions {
  /** Lifetime of each token in seconds, 1 to 604800 (default: the server's, 3600). Refreshes ask for the same. */
  expiresInSeconds?: number;
}

/**
 * An HTTP service listening on one port inside a sandbox, reachable through the server with a
 * signed token. `serviceUrl` takes the token in the {@link SERVICE_TOKEN_HEADER} header (what
 * {@link ServiceUrl.fetch} sends); `browserUrl` is for people: opening it stores the token in a
 * cookie and redirects to the service.
 *
 * The fields are those of the current token. {@link ServiceUrl.fetch} and
 * {@link ServiceUrl.ensureFresh} request a new one first when the current one expires within
 * 60 s (or within half its lifetime, for tokens shorter than 2 minutes); the fields then
 * change. A token that lapses is not revoked server-side, it simply stops working.
 *
 * @example
 * ```ts
 * await sb.run("python3 -m http.server 8000 >/dev/null 2>&1 &");
 * const svc = await sb.service(8000, { expiresInSeconds: 3600 });
 * console.log(svc.browserUrl);           // open in a browser
 * const res = await svc.fetch("/index.html");
 * console.log(res.status, await res.text());
 * ```
 */
export class ServiceUrl {
  /** The port inside the sandbox. */
  readonly port: number;
  private view: ServiceUrlView;
  /** When (local clock, ms) the current token arrived; with expires_at this gives its lifetime. */
  private receivedAt: number;
  private refreshing: Promise<void> | undefined;

  /** @internal Built by {@link SandboxClient.serviceUrl}; `mint` requests a new token. */
  constructor(
    view: ServiceUrlView,
    port: number,
    private readonly mint: () => Promise<ServiceUrlView>,
    private readonly fetchImpl: typeof fetch,
  ) {
    this.view = view;
    this.port = port;
    this.receivedAt = Date.now();
  }

  /** URL for a browser: it sets a cookie with the token and redirects to the service. @example `console.log("open", svc.browserUrl)` */
  get browserUrl(): string {
    return this.view.browser_url;
  }

  /** Base URL of the service; requests need the token header (see {@link ServiceUrl.fetch}). @example `const base = svc.serviceUrl` */
  get serviceUrl(): string {
    return this.view.service_url;
  }

  /** The current token, for {@link SERVICE_TOKEN_HEADER}. @example `const headers = { [SERVICE_TOKEN_HEADER]: svc.token }` */
  get token(): string {
    return this.view.token;
  }

  /** When the current token expires (ISO 8601). @example `new Date(svc.expiresAt).getTime() - Date.now()` */
  get expiresAt(): string {
    return this.view.expires_at;
  }

  /** Whether the token is close enough to its expiry that the next {@link ServiceUrl.fetch} refreshes it. @example `if (svc.needsRefresh) await svc.refresh()` */
  get needsRefresh(): boolean {
    const expires = Date.parse(this.view.expires_at);
    if (Number.isNaN(expires)) return true;
    const margin = Math.min(REFRESH_MARGIN_MS, Math.max(0, expires - this.receivedAt) / 2);
    return expires - Date.now() <= margin;
  }

  /**
   * Request a new token now (concurrent calls share one request).
   *
   * @example `await svc.refresh(); console.log(svc.expiresAt)`
   */
  refresh(): Promise<void> {
    this.refreshing ??= this.mint()
      .then((view) => {
        this.view = view;
        this.receivedAt = Date.now();
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  /**
   * Refresh the token if it is near expiry; returns this.
   *
   * @example
   * ```ts
   * const { serviceUrl, token } = await svc.ensureFresh();
   * ```
   */
  async ensureFresh(): Promise<this> {
    if (this.needsRefresh) await this.refresh();
    return this;
  }

  /**
   * `fetch` a path of the service with the token header set, refreshing the token first when it
   * is near expiry. `path` is relative to {@link ServiceUrl.serviceUrl} (a leading `/` is
   * optional) and may carry a query. The request is sent once, never retried.
   *
   * @example
   * ```ts
   * const res = await svc.fetch("/api/items?limit=10", { method: "POST", body: JSON.stringify({ a: 1 }), headers: { "content-type": "application/json" } });
   * ```
   */
  async fetch(path = "/", init: RequestInit = {}): Promise<Response> {
    await this.ensureFresh();
    const url = `${this.view.service_url.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`;
    const headers = new Headers(init.headers);
    headers.set(SERVICE_TOKEN_HEADER, this.view.token);
    return this.fetchImpl(url, { ...init, headers });
  }
}
