export { SandboxClient, type SandboxClientOptions } from "./client.js";
export { Sandbox } from "./sandbox.js";
export { CommandHandle, type OutputChunk } from "./command-handle.js";
export {
  SandboxClientError,
  AuthenticationError,
  ValidationError,
  ResourceNotFoundError,
  ResourceNameConflictError,
  ResourceCreationError,
  ResourceTimeoutError,
  SandboxNotReadyError,
  SandboxConnectionError,
  CommandTimeoutError,
  CommandNotFoundError,
  SessionExpiredError,
  QuotaExceededError,
  SandboxOperationError,
  ERROR_CLASSES,
} from "./errors.js";
export type { ExecutionResult, CreateSandboxOptions, UpdateSandboxOptions, CaptureSnapshotOptions, CreateSnapshotOptions, DockerfileBuildOptions, NetworkPolicyOptions, EgressMode, RunOptions, Snapshot, SandboxInfo, Quota } from "./types.js";
export { Registries, type Registry, type CreateRegistryOptions, type UpdateRegistryOptions } from "./registries.js";
export { Pools, type Pool, type CreatePoolOptions } from "./pools.js";
export { ServiceUrl, SERVICE_TOKEN_HEADER, type ServiceUrlOptions } from "./service-url.js";
export { TunnelError, type Tunnel, type TunnelOptions } from "./tunnel.js";
export type { FileInfo, GlobResult, GrepMatch, GrepResult, GlobOptions, GrepOptions, FileStat, FileChunk, ReadRangeOptions } from "./search.js";
export type { WebSocketConstructor, WebSocketLike } from "./ws-stream.js";
