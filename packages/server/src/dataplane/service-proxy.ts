import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { ERROR_TABLE, errorBody, serviceUrlRequest } from "@sandbar/shared";
import type { SandboxService } from "../sandboxes/sandbox-service.js";
import type { LinkTokens, ServiceClaims } from "../auth/link-tokens.js";
import { parse } from "../http/validate.js";
import { SandbarError, validationError } from "../util/errors.js";

/** Header carrying a service token (the name the LangSmith clients send). */
export const SERVICE_TOKEN_HEADER = "x-langsmith-sandbox-service-token";
/** Cookie set by browser_url; HttpOnly, scoped to the service's host (or path). */
export const SERVICE_COOKIE = "sandbar_service_token";
/** Path on a service host that turns `?token=` into the cookie and redirects. */
export const AUTH_PATH = "/__sandbar/auth";
/** Path form of service URLs: `/svc/{sandbox id}/{port}/...` on the server's own address. */
export const PATH_PREFIX = "/svc/";

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const HOST_FORM = new RegExp(`^(\\d{1,5})--(${UUID})\\.`, "i");
const PATH_FORM = new RegExp(`^/svc/(${UUID})/(\\d{1,5})(/[^?]*)?(\\?.*)?$`, "i");

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);
const DEFAULT_EXPIRY_SECONDS = 3600;

/** Which service a request is for, and the path to forward. */
interface Target {
  sandboxId: string;
  port: number;
  /** Path and query as the service sees them. */
  path: string;
  /** Cookie path: "/" on a service host, the prefix in the path form. */
  cookiePath: string;
  /** Path prefix the service is mounted at ("" on a service host). */
  prefix: string;
}

/** Builds the URLs a service-url response carries. */
export interface ServiceUrlBuilder {
  publicUrl: () => string;
  /** Wildcard domain (host[:port]) whose `{port}--{id}` subdomains reach this server. */
  serviceDomain: string | undefined;
}

/**
 * The service-URL proxy: requests for `{port}--{sandbox}.{domain}` hosts or `/svc/{sandbox}/{port}/`
 * paths, authenticated by a signed token bound to that sandbox and port, forwarded over a TCP
 * connection the sandbox's agent dials inside the sandbox. Carries HTTP/1.1 (streamed bodies
 * both ways, server-sent events) and WebSocket upgrades as raw bytes.
 */
export class ServiceProxy {
  private readonly upgraded = new Set<Duplex>();

  constructor(
    private readonly sandboxes: SandboxService,
    private readonly tokens: LinkTokens,
    private readonly log: Logger,
  ) {}

  /** The service a request addresses, or undefined for the server's own routes. */
  match(req: IncomingMessage): Target | undefined {
    const url = req.url ?? "/";
    const host = HOST_FORM.exec(req.headers.host ?? "");
    if (host) return { sandboxId: (host[2] as string).toLowerCase(), port: Number(host[1]), path: url, cookiePath: "/", prefix: "" };
    if (!url.startsWith(PATH_PREFIX)) return undefined;
    const m = PATH_FORM.exec(url);
    if (!m) return undefined;
    const prefix = `${PATH_PREFIX}${(m[1] as string).toLowerCase()}/${m[2]}`;
    return { sandboxId: (m[1] as string).toLowerCase(), port: Number(m[2]), path: `${m[3] ?? "/"}${m[4] ?? ""}`, cookiePath: `${prefix}/`, prefix };
  }

  /** Serve a plain HTTP request for a service. */
  handleRequest(req: IncomingMessage, res: ServerResponse, t: Target): void {
    this.forward(req, res, t).catch((e: unknown) => this.fail(res, e));
  }

  /** Serve an Upgrade request (WebSocket) for a service: raw bytes after authentication. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, t: Target): void {
    socket.on("error", () => socket.destroy());
    this.tunnelUpgrade(req, socket, head, t).catch((e: unknown) => {
      const err = asSandbarError(e);
      const body = JSON.stringify(errorBody(err.code, err.message));
      const status = ERROR_TABLE[err.code].status;
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    });
  }

  /** Cut every upgraded connection (server shutdown). */
  closeAll(): void {
    for (const s of this.upgraded) s.destroy();
    this.upgraded.clear();
  }

  private authenticate(req: IncomingMessage, t: Target, token?: string): ServiceClaims {
    const header = headerValue(req.headers[SERVICE_TOKEN_HEADER]);
    // Cookies only on a service's own host: in the path form every service shares the
    // server's origin, so one service's pages could use another's cookie.
    const cookie = token === undefined && header === undefined && t.prefix === "" ? cookieValue(req.headers.cookie, SERVICE_COOKIE) : undefined;
    const presented = token ?? header ?? cookie;
    if (!presented) throw new SandbarError("UNAUTHENTICATED", `this service URL needs a token: send it in the ${SERVICE_TOKEN_HEADER} header or open the browser_url first`);
    if (cookie !== undefined && !sameOriginOrSafe(req)) {
      // Every {port}--{id} host is one site for SameSite: a page of another service must not
      // ride this cookie into a state-changing request or a WebSocket.
      throw new SandbarError("UNAUTHENTICATED", "cross-origin request with the service cookie refused; send the token header instead");
    }
    const claims = this.tokens.verifyService(presented);
    if (!claims) throw new SandbarError("UNAUTHENTICATED", "the service token is invalid or has expired; request a new service URL");
    if (claims.s !== t.sandboxId || claims.port !== t.port) throw new SandbarError("UNAUTHENTICATED", "the service token was issued for another sandbox or port");
    return claims;
  }

  private async forward(req: IncomingMessage, res: ServerResponse, t: Target): Promise<void> {
    const pathOnly = t.path.split("?")[0];
    if (pathOnly === AUTH_PATH) return this.login(req, res, t);
    const claims = this.authenticate(req, t);
    const { agent } = await this.sandboxes.agentFor(claims.w, claims.s);
    if (res.destroyed || req.destroyed) return; // the client left while the sandbox woke
    const headers = forwardHeaders(req, t);
    const upstream = http.request({ method: req.method, path: t.path, headers, agent: agent.portPool(t.port) });
    upstream.on("response", (up) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      // Server-sent events and other slow streams: send the head now, not with the first chunk.
      res.flushHeaders();
      // A long response (server-sent events) is activity: the idle timer must not stop the sandbox.
      up.on("data", () => this.sandboxes.touch(claims.s));
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", (e) => {
      if (!res.headersSent) this.fail(res, e instanceof SandbarError ? e : new SandbarError("SERVICE_UNAVAILABLE", `the service on port ${t.port} closed the connection: ${e.message}`));
      else res.destroy();
    });
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  /** GET {service}/__sandbar/auth?token=...&redirect=/path: set the cookie, redirect. */
  private login(req: IncomingMessage, res: ServerResponse, t: Target): void {
    if (t.prefix !== "") throw new SandbarError("INVALID_REQUEST", "cookie login is only for the browser_url's own host; the path form takes the token header");
    const q = new URLSearchParams(t.path.split("?")[1] ?? "");
    const claims = this.authenticate(req, t, q.get("token") ?? "");
    const redirect = q.get("redirect") ?? "/";
    // Only paths on this service: never an open redirect to another origin.
    const target = /^\/(?![/\\])/.test(redirect) && ![...redirect].some((ch) => ch <= " " || ch === "\\") ? redirect : "/";
    const maxAge = Math.max(0, Math.floor(claims.e - Date.now() / 1000));
    res.writeHead(302, {
      location: `${t.prefix}${target}`,
      "set-cookie": `${SERVICE_COOKIE}=${q.get("token") ?? ""}; Max-Age=${maxAge}; Path=${t.cookiePath}; HttpOnly; SameSite=Lax`,
      "cache-control": "no-store",
      "content-length": "0",
    });
    res.end();
  }

  private async tunnelUpgrade(req: IncomingMessage, client: Duplex, head: Buffer, t: Target): Promise<void> {
    const claims = this.authenticate(req, t);
    const { agent } = await this.sandboxes.agentFor(claims.w, claims.s);
    const upstream: Socket = await agent.dial(t.port);
    if (client.destroyed) {
      upstream.destroy(); // the client left while the port was dialed
      return;
    }
    const headers = forwardHeaders(req, t);
    headers.connection = "Upgrade";
    if (req.headers.upgrade) headers.upgrade = req.headers.upgrade;
    let text = `${req.method ?? "GET"} ${t.path} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) text += `${k}: ${one}\r\n`;
    upstream.write(`${text}\r\n`);
    if (head.length) upstream.write(head);
    this.upgraded.add(client);
    const done = (): void => {
      this.upgraded.delete(client);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", done);
    upstream.on("close", done);
    upstream.on("error", done);
    const touch = (): void => this.sandboxes.touch(claims.s);
    client.on("data", touch);
    upstream.on("data", touch);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private fail(res: ServerResponse, e: unknown): void {
    const err = asSandbarError(e);
    if (err.code === "INTERNAL_ERROR") this.log.error({ err: e }, "service proxy error");
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = JSON.stringify(errorBody(err.code, err.message));
    res.writeHead(ERROR_TABLE[err.code].status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  }
}

/** GET/HEAD/OPTIONS without an upgrade, or an Origin that is this very host. */
function sameOriginOrSafe(req: IncomingMessage): boolean {
  const origin = headerValue(req.headers.origin);
  if (origin !== undefined) {
    try {
      if (new URL(origin).host === req.headers.host) return true;
    } catch {
      return false;
    }
  }
  const safe = req.method === "GET" || req.method === "HEAD" || req.method === "OPTIONS";
  return safe && !req.headers.upgrade && origin === undefined;
}

function asSandbarError(e: unknown): SandbarError {
  return e instanceof SandbarError ? e : new SandbarError("INTERNAL_ERROR", "internal error");
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v || undefined;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const [k, ...rest] = part.trim().split("=");
    if (k === name) return rest.join("=");
  }
  return undefined;
}

/** The client's headers minus hop-by-hop ones and our credentials, plus X-Forwarded-*. */
function forwardHeaders(req: IncomingMessage, t: Target): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const h: IncomingHttpHeaders = req.headers;
  for (const [k, v] of Object.entries(h)) {
    // Our credentials never reach the sandbox's code; X-Forwarded-* are ours to set.
    if (v === undefined || HOP_BY_HOP.has(k) || k === SERVICE_TOKEN_HEADER || k === "x-api-key" || k.startsWith("x-forwarded-")) continue;
    if (k === "cookie") {
      const kept = String(v)
        .split(";")
        .map((c) => c.trim())
        .filter((c) => c && !c.startsWith(`${SERVICE_COOKIE}=`));
      if (kept.length) out.cookie = kept.join("; ");
      continue;
    }
    out[k] = v;
  }
  // Bodies are re-framed by Node: keep the length, or chunk when the client did.
  if (h["transfer-encoding"] && !h["content-length"]) out["transfer-encoding"] = "chunked";
  out["x-forwarded-for"] = req.socket.remoteAddress ?? "";
  out["x-forwarded-host"] = h.host ?? "";
  out["x-forwarded-proto"] = "http";
  if (t.prefix) out["x-forwarded-prefix"] = t.prefix;
  return out;
}

const nameParams = z.object({ name: z.string().min(1).max(128) });

/** Control plane: POST /boxes/{name}/service-url mints a token for one port. */
export function serviceUrlRoute(app: FastifyInstance, sandboxes: SandboxService, tokens: LinkTokens, urls: ServiceUrlBuilder, agentPort: number): void {
  app.post("/boxes/:name/service-url", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(serviceUrlRequest, req.body, "body");
    if (body.port === agentPort) throw validationError("port", `${agentPort} is the sandbox agent's own port, not a service`);
    if (body.access !== undefined) throw validationError("access", "login-gated service URLs need LangSmith accounts, which this server does not have; omit access to get a token URL");
    const sb = await sandboxes.get(req.workspaceId, name);
    const e = Math.floor(Date.now() / 1000) + (body.expires_in_seconds ?? DEFAULT_EXPIRY_SECONDS);
    const token = tokens.sign({ k: "svc", s: sb.id, w: sb.workspace_id, port: body.port, e });
    const pub = new URL(urls.publicUrl());
    const domain = urls.serviceDomain ?? `localhost${pub.port ? `:${pub.port}` : ""}`;
    const hostBase = `${pub.protocol}//${body.port}--${sb.id}.${domain}`;
    const serviceUrl = urls.serviceDomain ? hostBase : `${urls.publicUrl()}${PATH_PREFIX}${sb.id}/${body.port}`;
    return {
      browser_url: `${hostBase}${AUTH_PATH}?token=${encodeURIComponent(token)}`,
      service_url: serviceUrl,
      token,
      expires_at: new Date(e * 1000).toISOString(),
    };
  });
}
