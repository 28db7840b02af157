export { SandboxClient, type SandboxClientOptions } from "./client.js";
export { Sandbox } from "./sandbox.js";
export * from "./errors.js";
export type { ExecutionResult, CreateSandboxOptions, RunOptions, Snapshot, SandboxInfo } from "./types.js";
export { CommandHandle, type OutputChunk } from "./command-handle.js";
export type { WebSocketConstructor, WebSocketLike } from "./ws-stream.js";
