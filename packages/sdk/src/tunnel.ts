/**
 * The public face of TCP tunnels: types and the error class. The implementation needs Node
 * (`node:net`) and lives in ./node/tunnel.ts, which {@link Sandbox.tunnel} loads on demand.
 */
import { SandboxConnectionError } from "./errors.js";

/** Status bytes the server answers on each tunnel stream (the LangSmith tunnel protocol). */
export const TunnelStatus = { OK: 0, PORT_NOT_ALLOWED: 1, DIAL_FAILED: 2, UNSUPPORTED_VERSION: 3 } as const;

/**
 * Options of {@link Sandbox.tunnel}.
 *
 * @example `const t = await sb.tunnel(5432, { localPort: 15432, host: "127.0.0.1" })`
 */
export interface TunnelOptions {
  /** Local port to listen on; 0 or omitted picks a free one (read it from `tunnel.localPort`). */
  localPort?: number;
  /** Local address to listen on (default `127.0.0.1`; `0.0.0.0` exposes the tunnel to your network). */
  host?: string;
}

/**
 * A local TCP listener whose connections are forwarded to a port inside a sandbox (Node only).
 * Each local connection becomes one stream of a multiplexed WebSocket to the sandbox's data
 * plane; half-closes travel both ways. A connection the server refuses (port not allowed,
 * nothing listening in the sandbox) is closed at once and reported as an `'error'` event (a
 * {@link TunnelError}) when there are listeners; the tunnel itself keeps listening. A dropped
 * WebSocket is reopened for the next connection.
 *
 * @example
 * ```ts
 * await sb.run("python3 -m http.server 8000 >/dev/null 2>&1 &");
 * await using tunnel = await sb.tunnel(8000);          // a free local port
 * tunnel.on("error", (e) => console.error(e.message));
 * const res = await fetch(`http://127.0.0.1:${tunnel.localPort}/`);
 * // leaving the block calls tunnel.close()
 * ```
 */
export interface Tunnel extends AsyncDisposable {
  /** The local address listened on. */
  readonly host: string;
  /** The local port listened on (the chosen one when `localPort` was 0 or omitted). */
  readonly localPort: number;
  /** The port inside the sandbox. */
  readonly remotePort: number;
  /** Stop listening, cut every forwarded connection and close the WebSocket; resolves once all are closed. Idempotent. */
  close(): Promise<void>;
  /** Connections that failed (refused by the server, WebSocket could not be opened). Without a listener they fail silently. */
  on(event: "error", listener: (err: TunnelError) => void): this;
  off(event: "error", listener: (err: TunnelError) => void): this;
}

/**
 * One tunnel connection failed: the server refused the port (`tunnelStatus` 1), nothing in the
 * sandbox accepts connections on it (2, code `SERVICE_UNAVAILABLE`), the server speaks another
 * tunnel version (3), or the tunnel WebSocket could not be opened (`tunnelStatus` undefined).
 *
 * @example
 * ```ts
 * tunnel.on("error", (e: TunnelError) => {
 *   if (e.tunnelStatus === 2) console.error(`nothing listens on ${e.remotePort} in the sandbox yet`);
 * });
 * ```
 */
export class TunnelError extends SandboxConnectionError {
  /** The port inside the sandbox. */
  readonly remotePort: number;
  /** The status byte the server answered, or undefined when no stream could be opened. */
  readonly tunnelStatus: number | undefined;

  /** @internal */
  constructor(message: string, remotePort: number, tunnelStatus: number | undefined) {
    super(message, tunnelStatus === TunnelStatus.DIAL_FAILED ? "SERVICE_UNAVAILABLE" : undefined, undefined);
    this.remotePort = remotePort;
    this.tunnelStatus = tunnelStatus;
  }

  /** @internal The error for a non-zero status byte. */
  static fromStatus(remotePort: number, status: number): TunnelError {
    const why =
      status === TunnelStatus.PORT_NOT_ALLOWED
        ? "the server does not allow tunnels to this port (status 1, port not allowed)"
        : status === TunnelStatus.DIAL_FAILED
          ? `nothing in the sandbox accepts connections on port ${remotePort} (status 2, dial failed)`
          : status === TunnelStatus.UNSUPPORTED_VERSION
            ? "the server does not speak tunnel protocol version 1 (status 3, unsupported version)"
            : `the server answered an unknown status ${status}`;
    return new TunnelError(`tunnel to sandbox port ${remotePort}: ${why}`, remotePort, status);
  }
}
