import { errorFromFrame, SandboxConnectionError, SandboxOperationError } from "./errors.js";
import { MessageStream, StreamClosed, type Message, type WebSocketConstructor } from "./ws-stream.js";
import type { ExecutionResult } from "./types.js";

/** One piece of a command's output. @example `for await (const c of handle) console.log(c.stream, c.offset, c.data)` */
export interface OutputChunk {
  stream: "stdout" | "stderr";
  data: string;
  /** Byte offset of `data`'s first byte in its stream. */
  offset: number;
}

/** How a handle reaches its command again after a dropped connection. */
export interface Reattach {
  ctor: WebSocketConstructor;
  url: string;
  headers: Record<string, string>;
}

const MAX_RECONNECTS = 6;
const BACKOFF_MS = [0, 250, 500, 1000, 2000, 4000, 8000];

/**
 * A running (or finished) command: iterate its output, send input, kill it, or reattach.
 * Connections that drop are reattached automatically from the last offsets, so no byte is
 * lost or repeated; the command itself lives in the sandbox and does not depend on them.
 *
 * @example
 * ```ts
 * const handle = await sb.run("python3 train.py", { wait: false, timeout: 600 });
 * console.log(handle.commandId, handle.pid);
 * for await (const chunk of handle) process.stdout.write(chunk.data);
 * const result = await handle.result;
 * ```
 */
export class CommandHandle implements AsyncIterable<OutputChunk> {
  /** The command's id (chosen by the client); pass it to `sandbox.reconnect`. */
  readonly commandId: string;
  /** Process id inside the sandbox, once started. */
  pid: number | undefined;
  private stdoutOffset: number;
  private stderrOffset: number;
  private readonly stdoutParts: string[] = [];
  private readonly stderrParts: string[] = [];
  private final: ExecutionResult | undefined;
  private detached = false;
  private resultPromise: Promise<ExecutionResult> | undefined;

  /** @internal */
  constructor(
    private stream: MessageStream,
    private readonly reattach: Reattach,
    commandId: string,
    opts: { pid?: number; stdoutOffset?: number; stderrOffset?: number; onStdout?: (d: string) => void; onStderr?: (d: string) => void },
  ) {
    this.commandId = commandId;
    this.pid = opts.pid;
    this.stdoutOffset = opts.stdoutOffset ?? 0;
    this.stderrOffset = opts.stderrOffset ?? 0;
    this.onStdout = opts.onStdout;
    this.onStderr = opts.onStderr;
  }

  private readonly onStdout: ((d: string) => void) | undefined;
  private readonly onStderr: ((d: string) => void) | undefined;

  /** Bytes of stdout received so far (the offset to reconnect from). @example `handle.lastStdoutOffset` */
  get lastStdoutOffset(): number {
    return this.stdoutOffset;
  }
  /** Bytes of stderr received so far. @example `handle.lastStderrOffset` */
  get lastStderrOffset(): number {
    return this.stderrOffset;
  }

  /**
   * The command's result once it exits (drains the output if nobody iterates).
   *
   * @example `const { exit_code, stdout } = await handle.result;`
   */
  get result(): Promise<ExecutionResult> {
    this.resultPromise ??= (async () => {
      if (!this.final) {
        for await (const _chunk of this) {
          // drained into stdoutParts / stderrParts
        }
      }
      if (!this.final) throw new SandboxOperationError("the command's stream ended without an exit", "COMMAND_ERROR", undefined);
      return this.final;
    })();
    return this.resultPromise;
  }

  /** Write to the command's stdin (or its terminal under pty). @example `handle.sendInput("World\n")` */
  sendInput(data: string): void {
    this.stream.send({ type: "input", data });
  }

  /** Close the command's stdin (EOF). @example `handle.closeInput()` */
  closeInput(): void {
    this.stream.send({ type: "close_stdin" });
  }

  /** Kill the command's whole process group. @example `handle.kill(); await handle.result` */
  kill(): void {
    this.stream.send({ type: "kill" });
  }

  /** Resize the command's terminal (pty only). @example `handle.resize(120, 40)` */
  resize(cols: number, rows: number): void {
    this.stream.send({ type: "resize", cols, rows });
  }

  /**
   * Drop this client's connection without touching the command; reattach later with
   * `sandbox.reconnect(handle.commandId, { stdoutOffset, stderrOffset })`.
   *
   * @example `handle.detach()`
   */
  detach(): void {
    this.detached = true; // no automatic reattach
    this.stream.close(1000);
  }

  /** A new handle on the same command from this handle's offsets. @example `const again = await handle.reconnect()` */
  async reconnect(): Promise<CommandHandle> {
    const stream = await MessageStream.open(this.reattach.ctor, this.reattach.url, this.reattach.headers, {
      type: "reconnect",
      command_id: this.commandId,
      stdout_offset: this.stdoutOffset,
      stderr_offset: this.stderrOffset,
    });
    return new CommandHandle(stream, this.reattach, this.commandId, { pid: this.pid, stdoutOffset: this.stdoutOffset, stderrOffset: this.stderrOffset });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<OutputChunk> {
    let attempts = 0;
    while (!this.final) {
      try {
        for await (const msg of this.stream) {
          const chunk = this.take(msg);
          if (chunk) {
            attempts = 0;
            yield chunk;
          }
          if (this.final) return;
        }
      } catch (e) {
        if (!(e instanceof StreamClosed)) throw e;
        if (this.final) return;
        if (e.code === 1000 || this.detached) throw new SandboxConnectionError("the stream closed before the command exited", undefined, undefined);
        if (++attempts > MAX_RECONNECTS) throw new SandboxConnectionError(`lost the command's stream and could not reattach: ${e.message}`, undefined, undefined);
        // 1001: the server is restarting; try at once, then back off.
        await new Promise((r) => setTimeout(r, e.code === 1001 && attempts === 1 ? 0 : (BACKOFF_MS[attempts] ?? 8000)));
        try {
          this.stream = await MessageStream.open(this.reattach.ctor, this.reattach.url, this.reattach.headers, {
            type: "reconnect",
            command_id: this.commandId,
            stdout_offset: this.stdoutOffset,
            stderr_offset: this.stderrOffset,
          });
        } catch (openErr) {
          if (!(openErr instanceof StreamClosed)) throw openErr;
          // keep the stream that failed; the next loop turn sees it closed and backs off again
        }
      }
    }
  }

  /** Apply one server message; returns the chunk to yield, if any. */
  private take(msg: Message): OutputChunk | undefined {
    switch (msg.type) {
      case "started":
        if (typeof msg.pid === "number") this.pid = msg.pid;
        return undefined;
      case "stdout":
      case "stderr": {
        const data = typeof msg.data === "string" ? msg.data : "";
        const offset = typeof msg.offset === "number" ? msg.offset : 0;
        const len = new TextEncoder().encode(data).length;
        if (msg.type === "stdout") {
          this.stdoutParts.push(data);
          this.stdoutOffset = offset + len;
          this.onStdout?.(data);
        } else {
          this.stderrParts.push(data);
          this.stderrOffset = offset + len;
          this.onStderr?.(data);
        }
        return { stream: msg.type, data, offset };
      }
      case "exit": {
        const exitCode = typeof msg.exit_code === "number" ? msg.exit_code : -1;
        this.final = { stdout: this.stdoutParts.join(""), stderr: this.stderrParts.join(""), exit_code: exitCode, success: exitCode === 0 };
        this.stream.close(1000);
        return undefined;
      }
      case "error":
        this.stream.close(1000);
        throw errorFromFrame(msg);
      default:
        return undefined;
    }
  }
}
