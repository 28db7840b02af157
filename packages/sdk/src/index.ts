export { SandboxClient, type SandboxClientOptions } from "./client.js";
export { Sandbox } from "./sandbox.js";
export * from "./errors.js";
export type { ExecutionResult, CreateSandboxOptions, RunOptions, Snapshot, SandboxInfo } from "./types.js";
