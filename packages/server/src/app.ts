import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import websocket from "@fastify/websocket";
import multipart from "@fastify/multipart";
import type { Logger } from "pino";
import type { ApiKeyService } from "./auth/api-key-service.js";
import type { SandboxService } from "./sandboxes/sandbox-service.js";
import type { SnapshotService } from "./snapshots/snapshot-service.js";
import { frameworkErrorHandler, installErrorHandling } from "./http/error-handler.js";
import { installAuth } from "./http/auth.js";
import { sandboxRoutes } from "./sandboxes/sandbox-routes.js";
import { snapshotRoutes } from "./snapshots/snapshot-routes.js";
import { executeRoutes } from "./dataplane/execute-routes.js";
import { fileRoutes } from "./dataplane/file-routes.js";
import { searchRoutes } from "./dataplane/search-routes.js";
import { wsExecuteRoutes } from "./dataplane/ws-execute.js";
import { downloadLinkRoutes, downloadUrlRoute } from "./dataplane/download-links.js";
import type { LinkTokens } from "./auth/link-tokens.js";
import { ServiceProxy, serviceUrlRoute } from "./dataplane/service-proxy.js";
import { tunnelRoutes } from "./dataplane/tunnel.js";
import { registryRoutes, type RegistryService } from "./registries/registry-service.js";
import { buildRoutes, type BuildService } from "./builds/build-service.js";
import { poolRoutes, type PoolService } from "./pools/pool-service.js";

export interface AppDeps {
  log: Logger;
  keys: ApiKeyService;
  sandboxes: SandboxService;
  snapshots: SnapshotService;
  maxUploadBytes: number;
  tokens: LinkTokens;
  registries: RegistryService;
  builds: BuildService;
  pools: PoolService;
  /** Scratch space (build contexts land here). */
  tmpRoot: string;
  publicUrl: () => string;
  /** Wildcard domain for service URLs (config.serviceDomain). */
  serviceDomain: string | undefined;
  /** Port the agent listens on inside sandboxes; tunnels may not reach it. */
  agentPort: number;
  /** False until start-up recovery is done; /healthz answers 503 until then. */
  isReady: () => boolean;
}

/** One entry of the app's route table: a method and a URL pattern as registered. */
export interface RouteEntry {
  method: string;
  url: string;
  websocket: boolean;
}

declare module "fastify" {
  interface FastifyInstance {
    /**
     * Every route the app serves (auto-added HEAD routes included), in registration order.
     * Tests enumerate it so that a new route cannot escape the auth and fuzz suites.
     */
    readonly routeTable: readonly RouteEntry[];
  }
}

/** Control-plane prefixes; both are served (clients use either). */
export const CONTROL_PREFIXES = ["/v2/sandboxes", "/api/v2/sandboxes"] as const;

/** Build the HTTP app (no listening): routes, auth, error mapping. */
export async function buildApp(d: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: d.log as FastifyBaseLogger,
    bodyLimit: 4 * 1024 * 1024,
    // Per-request lines would drown the structured events; errors are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    // Download-link tokens travel in the path.
    routerOptions: { maxParamLength: 4096 },
    // Bad percent-escapes and over-long parameters: the documented error body, after the key check.
    frameworkErrors: frameworkErrorHandler(d.keys),
  });
  // Registered first so that it sees every route, those of child scopes included.
  const routeTable: RouteEntry[] = [];
  app.decorate("routeTable", routeTable);
  app.addHook("onRoute", (r) => {
    for (const method of [r.method].flat()) routeTable.push({ method, url: r.url, websocket: (r as { websocket?: boolean }).websocket === true });
  });
  installErrorHandling(app);
  await app.register(websocket, { options: { maxPayload: 16 * 1024 * 1024 } });
  await app.register(multipart, { limits: { fileSize: d.maxUploadBytes, files: 1, fields: 8 } });
  // Raw uploads stream through untouched; the route enforces the size limit.
  // Bodies are JSON, multipart or raw bytes; plain text is not a body any route takes.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));
  installAuth(app, d.keys);
  interceptServiceTraffic(app, new ServiceProxy(d.sandboxes, d.tokens, d.log.child({ component: "service-proxy" })));

  app.get("/healthz", async (_req, reply) => {
    if (!d.isReady()) return reply.status(503).send({ status: "starting" });
    return { status: "ok" };
  });
  for (const prefix of CONTROL_PREFIXES) {
    await app.register(
      async (scope) => {
        sandboxRoutes(scope, d.sandboxes, d.snapshots);
        downloadUrlRoute(scope, d.sandboxes, d.tokens, d.publicUrl);
        serviceUrlRoute(scope, d.sandboxes, d.tokens, { publicUrl: d.publicUrl, serviceDomain: d.serviceDomain }, d.agentPort);
        snapshotRoutes(scope, d.snapshots);
        registryRoutes(scope, d.registries);
        poolRoutes(scope, d.pools);
        buildRoutes(scope, d.builds, d.snapshots, d.tmpRoot, d.maxUploadBytes);
      },
      { prefix },
    );
  }
  executeRoutes(app, d.sandboxes);
  fileRoutes(app, d.sandboxes, d.maxUploadBytes);
  downloadLinkRoutes(app, d.sandboxes, d.tokens);
  searchRoutes(app, d.sandboxes);
  wsExecuteRoutes(app, d.sandboxes, d.log);
  tunnelRoutes(app, d.sandboxes, d.log, d.agentPort);
  return app;
}

/**
 * Service-URL traffic (a `{port}--{id}` host or a `/svc/` path) bypasses the router: it is
 * authenticated by its own token and forwarded byte for byte, upgrades included.
 */
function interceptServiceTraffic(app: FastifyInstance, proxy: ServiceProxy): void {
  const server = app.server;
  const emit = server.emit.bind(server) as (event: string, ...args: unknown[]) => boolean;
  server.emit = ((event: string, ...args: unknown[]) => {
    if (event === "request" || event === "upgrade") {
      const req = args[0] as IncomingMessage;
      const target = proxy.match(req);
      if (target) {
        if (event === "request") proxy.handleRequest(req, args[1] as ServerResponse, target);
        else proxy.handleUpgrade(req, args[1] as Duplex, args[2] as Buffer, target);
        return true;
      }
    }
    return emit(event, ...args);
  }) as typeof server.emit;
  app.addHook("onClose", async () => proxy.closeAll());
}
