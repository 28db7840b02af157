import { chmod, copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import type { FastifyInstance } from "fastify";
import type { ServerConfig } from "./config.js";
import { SqliteStore } from "./store/sqlite-store.js";
import { ApiKeyService, DEFAULT_WORKSPACE } from "./auth/api-key-service.js";
import { LayerStore } from "./images/layer-store.js";
import { ImagePuller } from "./images/image-puller.js";
import { RootfsManager } from "./storage/rootfs-manager.js";
import { RegistryService } from "./registries/registry-service.js";
import { BuildService } from "./builds/build-service.js";
import { SecretBox } from "./auth/secret-box.js";
import { DnsProxy, readSystemResolvers } from "./network/dns-proxy.js";
import { NetworkManager } from "./network/network-manager.js";
import { OciRuntime } from "./runtime/oci-runtime.js";
import { SnapshotService } from "./snapshots/snapshot-service.js";
import { SandboxService } from "./sandboxes/sandbox-service.js";
import { PoolService } from "./pools/pool-service.js";
import { buildApp } from "./app.js";
import { RetentionSweeper } from "./sandboxes/retention.js";
import { LinkTokens } from "./auth/link-tokens.js";
import { openSockets } from "./dataplane/ws-execute.js";
import { sha256Hex } from "./util/ids.js";

/** A running server. Closing it leaves every sandbox running for the next start to adopt. */
export interface SandbarServer {
  app: FastifyInstance;
  config: ServerConfig;
  url: string;
  sandboxes: SandboxService;
  snapshots: SnapshotService;
  pools: PoolService;
  keys: ApiKeyService;
  /** The bootstrap key when this start generated one (printed once). */
  generatedApiKey: string | undefined;
  close(): Promise<void>;
}

const BOOTSTRAP_KEY_FILE = "bootstrap-api-key";

/** The composition root: wires store, images, storage, network, runtime and HTTP. */
export async function startServer(config: ServerConfig, logger?: Logger): Promise<SandbarServer> {
  const log = logger ?? pino({ level: config.logLevel });
  const d = config.dataDir;
  for (const sub of ["", "layers", "sandboxes", "tmp", "agent", "images", "memory", "builds"]) await mkdir(join(d, sub), { recursive: true });
  const instanceTag = sha256Hex(d).slice(0, 8);

  const store = new SqliteStore(join(d, "sandbar.db"));
  const keys = new ApiKeyService(store);
  const generatedApiKey = await bootstrapKey(keys, config, d);

  const agentDir = join(d, "agent");
  await installAgent(config.agentBinary, agentDir);

  const layers = new LayerStore(join(d, "layers"));
  await layers.init();
  const puller = new ImagePuller(layers, join(d, "tmp"), join(d, "policy.json"), config.insecureRegistries, join(d, "images"));
  await puller.init();
  const rootfs = new RootfsManager(join(d, "sandboxes"), join(d, "layers"));
  await rootfs.init();
  const network = new NetworkManager(config.subnet, `sandbar-${instanceTag}-`, log.child({ component: "network" }));
  await network.init();
  // Sandboxes resolve names through this proxy: it enforces domain allow lists and admits
  // the addresses it answered with. Port-53 traffic from sandboxes is redirected to it.
  const dns = new DnsProxy({
    upstreams: config.dnsUpstreams.length ? config.dnsUpstreams : await readSystemResolvers(),
    log: log.child({ component: "dns" }),
    policyFor: (ip) => network.policyForIp(ip),
    onResolved: (ip, addrs, policy) => network.admitResolved(ip, addrs, policy),
  });
  network.setDnsPort((await dns.listen("0.0.0.0", 0)).port);
  const rootOf = (name: string): string | undefined => (config.runtimeRoot ? join(config.runtimeRoot, name) : undefined);
  const runtimes = { runsc: OciRuntime.runsc(rootOf("runsc")), runc: OciRuntime.runc(rootOf("runc")) };

  const registries = new RegistryService(store, await SecretBox.load(join(d, "secret-key")));
  const snapshots = new SnapshotService(store, puller, layers, config.defaults.fsCapacityBytes, log.child({ component: "snapshots" }), join(d, "tmp"), join(d, "memory"), registries);
  const sandboxes = new SandboxService({ store, snapshots, rootfs, network, runtimes, config, agentDir, instanceTag, log: log.child({ component: "sandboxes" }) });
  const pools = new PoolService(store, sandboxes, config, { workspaceId: async (name) => (await store.getWorkspaceByName(name))?.id }, log.child({ component: "pools" }));
  sandboxes.setClaimer(pools.claim);
  snapshots.setBeforeDelete((id) => pools.drainSnapshot(id));
  const builds = new BuildService(store, snapshots, sandboxes, layers, puller, join(d, "tmp"), join(d, "builds"), log.child({ component: "builds" }));

  let ready = false;
  const tokens = await LinkTokens.load(join(d, "link-secret"));
  const app = await buildApp({ log, keys, sandboxes, snapshots, maxUploadBytes: config.maxUploadBytes, tokens, registries, builds, pools, tmpRoot: join(d, "tmp"), publicUrl: () => config.publicUrl, serviceDomain: config.serviceDomain, agentPort: config.agentPort, isReady: () => ready });
  await snapshots.recover();
  await sandboxes.recover();
  await builds.recover();
  sandboxes.startMonitor(config.monitorIntervalMs);
  const retention = new RetentionSweeper(store, sandboxes, config.timeScale, config.retentionIntervalMs, log.child({ component: "retention" }));
  retention.start();
  // After recovery: pooled sandboxes that survived are adopted; the pools top up the rest.
  await pools.start();
  await app.listen({ host: config.host, port: config.port });
  ready = true;
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.port;
  const url = `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${port}`;
  // With an ephemeral port the derived public URL only becomes known now.
  if (config.port === 0 && /:0$/.test(config.publicUrl)) config.publicUrl = url;
  log.info({ url, dataDir: d, runtime: config.runtime }, "sandbar listening");

  return {
    app,
    config,
    url,
    sandboxes,
    snapshots,
    pools,
    keys,
    generatedApiKey,
    async close() {
      retention.stop();
      pools.close();
      for (const s of openSockets) s.close(1001, "server shutting down");
      await sandboxes.drain();
      await network.close();
      await rootfs.close();
      await app.close();
      await dns.close();
      store.close();
    },
  };
}

/** SANDBAR_API_KEY wins; otherwise the first start makes a key and keeps it in the data dir. */
async function bootstrapKey(keys: ApiKeyService, config: ServerConfig, dataDir: string): Promise<string | undefined> {
  await keys.ensureWorkspace(DEFAULT_WORKSPACE);
  if (config.bootstrapApiKey) {
    await keys.ensureBootstrapKey(config.bootstrapApiKey);
    return undefined;
  }
  const file = join(dataDir, BOOTSTRAP_KEY_FILE);
  try {
    await readFile(file, "utf8");
    return undefined;
  } catch {
    const { key } = await keys.createKey(DEFAULT_WORKSPACE, "bootstrap");
    await writeFile(file, `${key}\n`, { mode: 0o600 });
    await chmod(file, 0o600);
    return key;
  }
}

/** Copy the agent into the data dir (atomically) so rebuilding it never disturbs running sandboxes. */
async function installAgent(binary: string, agentDir: string): Promise<void> {
  const target = join(agentDir, "sandbar-agent");
  const tmp = `${target}.new`;
  try {
    await copyFile(binary, tmp);
  } catch {
    throw new Error(`agent binary not found at ${binary}: build it with agent/build.sh or set SANDBAR_AGENT_BINARY`);
  }
  await chmod(tmp, 0o755);
  await rename(tmp, target);
}
