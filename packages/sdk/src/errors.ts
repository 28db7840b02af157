import { isErrorCode, type ErrorCode } from "@sandbar/shared";

/**
 * Base class of every error the SDK throws.
 *
 * @example
 * ```ts
 * try { await client.getSandbox("nope"); } catch (e) {
 *   if (e instanceof SandboxClientError) console.log(e.code, e.status);
 * }
 * ```
 */
export class SandboxClientError extends Error {
  constructor(
    message: string,
    /** Stable server error code, when the server sent one. */
    readonly code: ErrorCode | undefined,
    /** HTTP status, when the error came from a response. */
    readonly status: number | undefined,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The API key is missing, unknown or revoked. @example `catch (e) { if (e instanceof AuthenticationError) relogin(); }` */
export class AuthenticationError extends SandboxClientError {}
/** The request was invalid; `fields` names what was wrong. @example `catch (e) { if (e instanceof ValidationError) console.log(e.fields); }` */
export class ValidationError extends SandboxClientError {
  /** Paths of the invalid fields, e.g. `["body", "idle_ttl_seconds"]`. */
  fields: (string | number)[][] = [];
}
/** A resource does not exist. @example `catch (e) { if (e instanceof ResourceNotFoundError) console.log(e.resourceType); }` */
export class ResourceNotFoundError extends SandboxClientError {
  /** "sandbox", "snapshot", "file" or "route". */
  resourceType = "resource";
}
/** A name is already taken, or a resource is still in use. @example `catch (e) { if (e instanceof ResourceNameConflictError) pickAnotherName(); }` */
export class ResourceNameConflictError extends SandboxClientError {}
/**
 * A sandbox or snapshot could not be created. For a failed Dockerfile build
 * (`createSnapshotFromDockerfile`) the message is the snapshot's `status_message` followed by
 * the last lines of the build log, which are also in `buildLogTail`.
 *
 * @example `catch (e) { if (e instanceof ResourceCreationError) console.log(e.message, e.buildLogTail ?? []); }`
 */
export class ResourceCreationError extends SandboxClientError {
  /** The last lines (up to 20) of the build log of a failed Dockerfile build; undefined otherwise. */
  buildLogTail: string[] | undefined;
}
/** A wait for a resource ran out of time. @example `catch (e) { if (e instanceof ResourceTimeoutError) console.log(e.resourceType); }` */
export class ResourceTimeoutError extends SandboxClientError {
  /** "sandbox" or "snapshot". */
  resourceType = "sandbox";
}
/** The sandbox is not running. @example `catch (e) { if (e instanceof SandboxNotReadyError) await sb.start(); }` */
export class SandboxNotReadyError extends SandboxClientError {}
/** The server or the sandbox could not be reached. @example `catch (e) { if (e instanceof SandboxConnectionError) retry(); }` */
export class SandboxConnectionError extends SandboxClientError {}
/** A command ran past its timeout and was killed. @example `catch (e) { if (e instanceof CommandTimeoutError) console.log(e.stdout); }` */
export class CommandTimeoutError extends SandboxClientError {
  /** Output the command wrote before it was killed (blocking runs over HTTP). */
  stdout: string | undefined;
  stderr: string | undefined;
}
/** No command with that id in the sandbox (reconnect to an unknown id). @example `catch (e) { if (e instanceof CommandNotFoundError) startAgain(); }` */
export class CommandNotFoundError extends ResourceNotFoundError {}
/** The command finished and its session expired (ttlSeconds passed). @example `catch (e) { if (e instanceof SessionExpiredError) useSavedOutput(); }` */
export class SessionExpiredError extends SandboxClientError {}
/** A workspace quota is used up. @example `catch (e) { if (e instanceof QuotaExceededError) cleanup(); }` */
export class QuotaExceededError extends SandboxClientError {}
/** A file operation inside the sandbox failed. @example `catch (e) { if (e instanceof SandboxOperationError) console.log(e.code); }` */
export class SandboxOperationError extends SandboxClientError {}

type ErrorClass = new (message: string, code: ErrorCode | undefined, status: number | undefined) => SandboxClientError;

/** The one table from server codes to classes. @example `ERROR_CLASSES.SANDBOX_NOT_FOUND === ResourceNotFoundError` */
export const ERROR_CLASSES: Record<ErrorCode, ErrorClass> = {
  UNAUTHENTICATED: AuthenticationError,
  VALIDATION_ERROR: ValidationError,
  INVALID_REQUEST: ValidationError,
  PAYLOAD_TOO_LARGE: ValidationError,
  ROUTE_NOT_FOUND: ResourceNotFoundError,
  METHOD_NOT_ALLOWED: SandboxClientError,
  SANDBOX_NOT_FOUND: ResourceNotFoundError,
  SNAPSHOT_NOT_FOUND: ResourceNotFoundError,
  API_KEY_NOT_FOUND: ResourceNotFoundError,
  REGISTRY_NOT_FOUND: ResourceNotFoundError,
  POOL_NOT_FOUND: ResourceNotFoundError,
  FILE_NOT_FOUND: ResourceNotFoundError,
  NAME_CONFLICT: ResourceNameConflictError,
  SNAPSHOT_IN_USE: ResourceNameConflictError,
  POOL_EXISTS: ResourceNameConflictError,
  SNAPSHOT_NOT_READY: ResourceCreationError,
  SANDBOX_NOT_READY: SandboxNotReadyError,
  SANDBOX_CREATION_FAILED: ResourceCreationError,
  SANDBOX_TIMEOUT: ResourceTimeoutError,
  QUOTA_EXCEEDED: QuotaExceededError,
  UNSCHEDULABLE: ResourceCreationError,
  DISK_FULL: SandboxClientError,
  SANDBOX_CONNECTION_ERROR: SandboxConnectionError,
  SERVICE_UNAVAILABLE: SandboxConnectionError,
  COMMAND_TIMEOUT: CommandTimeoutError,
  COMMAND_NOT_FOUND: CommandNotFoundError,
  SESSION_EXPIRED: SessionExpiredError,
  COMMAND_ERROR: SandboxOperationError,
  WRITE_ERROR: SandboxOperationError,
  READ_ERROR: SandboxOperationError,
  NO_SPACE: SandboxOperationError,
  PERMISSION_DENIED: SandboxOperationError,
  IS_A_DIRECTORY: SandboxOperationError,
  RANGE_NOT_SATISFIABLE: SandboxOperationError,
  INTERNAL_ERROR: SandboxClientError,
};

const RESOURCE_TYPES: Partial<Record<ErrorCode, string>> = {
  SANDBOX_NOT_FOUND: "sandbox",
  SNAPSHOT_NOT_FOUND: "snapshot",
  FILE_NOT_FOUND: "file",
  API_KEY_NOT_FOUND: "api_key",
  REGISTRY_NOT_FOUND: "registry",
  POOL_NOT_FOUND: "pool",
  ROUTE_NOT_FOUND: "route",
  COMMAND_NOT_FOUND: "command",
};

/** Wire `error_type`s of WebSocket error frames, to codes. */
const WIRE_TYPES: Record<string, ErrorCode> = {
  CommandTimeout: "COMMAND_TIMEOUT",
  CommandNotFound: "COMMAND_NOT_FOUND",
  SessionExpired: "SESSION_EXPIRED",
  CommandError: "COMMAND_ERROR",
};

/** Turn a WebSocket `{type: "error"}` frame into the matching class. */
export function errorFromFrame(frame: Record<string, unknown>): SandboxClientError {
  const code = isErrorCode(frame.code) ? frame.code : (WIRE_TYPES[String(frame.error_type)] ?? "COMMAND_ERROR");
  const err = new ERROR_CLASSES[code](typeof frame.error === "string" ? frame.error : "command failed", code, undefined);
  if (err instanceof ResourceNotFoundError) err.resourceType = RESOURCE_TYPES[code] ?? "resource";
  return err;
}

/** Turn an error response into the matching class (the SDK's one adapter). */
export async function errorFromResponse(res: Response): Promise<SandboxClientError> {
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const b = (body ?? {}) as { code?: unknown; message?: unknown; detail?: unknown };
  const code = isErrorCode(b.code) ? b.code : undefined;
  const message = typeof b.message === "string" ? b.message : `HTTP ${res.status}`;
  const Cls = code ? ERROR_CLASSES[code] : res.status === 401 || res.status === 403 ? AuthenticationError : res.status === 404 ? ResourceNotFoundError : SandboxClientError;
  const err = new Cls(message, code, res.status);
  if (err instanceof ResourceNotFoundError && code) err.resourceType = RESOURCE_TYPES[code] ?? "resource";
  if (err instanceof CommandTimeoutError) {
    const extra = body as { stdout?: unknown; stderr?: unknown } | undefined;
    err.stdout = typeof extra?.stdout === "string" ? extra.stdout : undefined;
    err.stderr = typeof extra?.stderr === "string" ? extra.stderr : undefined;
  }
  if (err instanceof ValidationError && Array.isArray(b.detail)) {
    err.fields = (b.detail as { loc?: (string | number)[] }[]).map((d) => d.loc ?? []);
  }
  return err;
}
