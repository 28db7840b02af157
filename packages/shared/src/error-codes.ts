/**
 * Stable error codes: the public contract between the server, the SDK and the docs.
 *
 * Each code has exactly one HTTP status and one wire `error` type (the type names the
 * LangSmith clients know, so their error mapping works unmodified). A code missing from
 * {@link ERROR_TABLE} fails to compile.
 */
export const ERROR_CODES = [
  "UNAUTHENTICATED",
  "VALIDATION_ERROR",
  "INVALID_REQUEST",
  "PAYLOAD_TOO_LARGE",
  "ROUTE_NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "SANDBOX_NOT_FOUND",
  "SNAPSHOT_NOT_FOUND",
  "API_KEY_NOT_FOUND",
  "REGISTRY_NOT_FOUND",
  "POOL_NOT_FOUND",
  "FILE_NOT_FOUND",
  "NAME_CONFLICT",
  "SNAPSHOT_IN_USE",
  "POOL_EXISTS",
  "SNAPSHOT_NOT_READY",
  "SANDBOX_NOT_READY",
  "SANDBOX_CREATION_FAILED",
  "SANDBOX_TIMEOUT",
  "QUOTA_EXCEEDED",
  "UNSCHEDULABLE",
  "DISK_FULL",
  "SANDBOX_CONNECTION_ERROR",
  "SERVICE_UNAVAILABLE",
  "COMMAND_TIMEOUT",
  "COMMAND_NOT_FOUND",
  "SESSION_EXPIRED",
  "COMMAND_ERROR",
  "WRITE_ERROR",
  "READ_ERROR",
  "NO_SPACE",
  "PERMISSION_DENIED",
  "IS_A_DIRECTORY",
  "RANGE_NOT_SATISFIABLE",
  "INTERNAL_ERROR",
] as const;

/** One of the stable error codes. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** HTTP status and wire type of one error code. */
export interface ErrorInfo {
  readonly status: number;
  /** The `detail.error` string clients of the LangSmith protocol switch on. */
  readonly wireType: string;
  /** One line for docs/api.md. */
  readonly description: string;
}

export const ERROR_TABLE: Record<ErrorCode, ErrorInfo> = {
  UNAUTHENTICATED: { status: 401, wireType: "Unauthenticated", description: "Missing, unknown or revoked API key." },
  VALIDATION_ERROR: { status: 422, wireType: "ValidationError", description: "The request body or query failed validation; `detail` lists the fields." },
  INVALID_REQUEST: { status: 400, wireType: "InvalidRequest", description: "The request is malformed (bad JSON, wrong content type)." },
  PAYLOAD_TOO_LARGE: { status: 413, wireType: "PayloadTooLarge", description: "The body is larger than the server accepts." },
  ROUTE_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No such route." },
  METHOD_NOT_ALLOWED: { status: 405, wireType: "MethodNotAllowed", description: "The route exists but not with this method." },
  SANDBOX_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No sandbox with that name or id in this workspace." },
  SNAPSHOT_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No snapshot with that id or name in this workspace." },
  REGISTRY_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No registry with that id or name in this workspace." },
  POOL_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No warm pool with that id in this workspace." },
  API_KEY_NOT_FOUND: { status: 404, wireType: "NotFound", description: "No API key with that id." },
  FILE_NOT_FOUND: { status: 404, wireType: "FileNotFound", description: "The path does not exist inside the sandbox." },
  NAME_CONFLICT: { status: 409, wireType: "Conflict", description: "The name is already taken in this workspace." },
  SNAPSHOT_IN_USE: { status: 409, wireType: "Conflict", description: "The snapshot is still used by a sandbox (running or stopped)." },
  POOL_EXISTS: { status: 409, wireType: "Conflict", description: "A warm pool for this snapshot and size (vcpus, mem_bytes, fs_capacity_bytes) exists already; change its size instead." },
  SNAPSHOT_NOT_READY: { status: 409, wireType: "SnapshotNotReady", description: "The snapshot is still building or failed." },
  SANDBOX_NOT_READY: { status: 400, wireType: "NotReady", description: "The sandbox is not running (provisioning, stopped, failed or deleting)." },
  SANDBOX_CREATION_FAILED: { status: 422, wireType: "SandboxConfig", description: "The sandbox could not boot; the message names the cause." },
  SANDBOX_TIMEOUT: { status: 408, wireType: "Timeout", description: "The sandbox did not become ready within the requested timeout." },
  QUOTA_EXCEEDED: { status: 429, wireType: "QuotaExceeded", description: "A workspace quota (sandbox count, cpu, memory, storage) is used up." },
  UNSCHEDULABLE: { status: 503, wireType: "Unschedulable", description: "The server has no capacity (addresses, disk) for another sandbox." },
  DISK_FULL: { status: 507, wireType: "InsufficientStorage", description: "The server's data disk is full; the request changed nothing. Free space on it and retry." },
  SANDBOX_CONNECTION_ERROR: { status: 502, wireType: "ConnectionError", description: "The server could not reach the sandbox's agent." },
  SERVICE_UNAVAILABLE: { status: 502, wireType: "ServiceUnavailable", description: "Nothing in the sandbox accepts connections on that port (service URL, tunnel)." },
  COMMAND_TIMEOUT: { status: 408, wireType: "CommandTimeout", description: "The command ran past its timeout and was killed with its process group." },
  COMMAND_NOT_FOUND: { status: 404, wireType: "CommandNotFound", description: "No command session with that command_id in the sandbox." },
  SESSION_EXPIRED: { status: 410, wireType: "SessionExpired", description: "The command finished and its session outlived its ttl_seconds." },
  COMMAND_ERROR: { status: 400, wireType: "CommandError", description: "The command could not be started (bad cwd, bad shell)." },
  WRITE_ERROR: { status: 400, wireType: "WriteError", description: "The file could not be written." },
  READ_ERROR: { status: 400, wireType: "ReadError", description: "The file could not be read." },
  NO_SPACE: { status: 507, wireType: "WriteError", description: "The sandbox's filesystem is full (fs_capacity_bytes reached)." },
  PERMISSION_DENIED: { status: 403, wireType: "PermissionDenied", description: "The sandbox's filesystem refused the operation." },
  IS_A_DIRECTORY: { status: 400, wireType: "ReadError", description: "The path is a directory." },
  RANGE_NOT_SATISFIABLE: { status: 416, wireType: "RangeNotSatisfiable", description: "The requested byte range starts past the end of the file." },
  INTERNAL_ERROR: { status: 500, wireType: "InternalError", description: "A bug in the server; the log has the details." },
};

/** True when `value` is one of the stable error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}
