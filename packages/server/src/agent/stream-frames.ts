import { Transform, type TransformCallback } from "node:stream";

/** Frame types of the agent's session stream (docs/agent-protocol.md). */
export const FrameType = { started: 1, stdout: 2, stderr: 3, exit: 4, error: 5 } as const;

/** One decoded frame. */
export type Frame =
  | { type: "started"; pid: number }
  | { type: "stdout" | "stderr"; offset: number; data: Buffer }
  | { type: "exit"; exitCode: number; info: { reason?: string; signal?: number } }
  | { type: "error"; info: { error?: string; message?: string } };

const HEADER = 13;

/** Splits the agent's binary stream into frames (object mode output). */
export class FrameDecoder extends Transform {
  private buf: Buffer = Buffer.alloc(0);

  constructor() {
    super({ readableObjectMode: true, readableHighWaterMark: 16 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    try {
      while (this.buf.length >= HEADER) {
        const len = this.buf.readUInt32BE(9);
        if (this.buf.length < HEADER + len) break;
        const type = this.buf.readUInt8(0);
        const a = this.buf.readBigUInt64BE(1);
        const payload = this.buf.subarray(HEADER, HEADER + len);
        this.buf = this.buf.subarray(HEADER + len);
        this.push(decode(type, a, Buffer.from(payload)));
      }
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }
}

function decode(type: number, a: bigint, payload: Buffer): Frame {
  switch (type) {
    case FrameType.started:
      return { type: "started", pid: Number(a) };
    case FrameType.stdout:
      return { type: "stdout", offset: Number(a), data: payload };
    case FrameType.stderr:
      return { type: "stderr", offset: Number(a), data: payload };
    case FrameType.exit:
      return { type: "exit", exitCode: Number(BigInt.asIntN(64, a)), info: payload.length ? (JSON.parse(payload.toString("utf8")) as { reason?: string }) : {} };
    case FrameType.error:
      return { type: "error", info: payload.length ? (JSON.parse(payload.toString("utf8")) as { error?: string; message?: string }) : {} };
    default:
      throw new Error(`unknown agent frame type ${type}`);
  }
}
