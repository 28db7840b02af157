import { call, callJson, type HttpSettings } from "./http.js";
import { ResourceNotFoundError, ValidationError } from "./errors.js";

/**
 * One filesystem entry found by {@link Sandbox.glob} or {@link Sandbox.ls}.
 *
 * @example
 * ```ts
 * const { matches } = await sb.ls("/app");
 * matches.forEach((f: FileInfo) => console.log(f.is_dir ? `${f.path}/` : `${f.path} ${f.size_bytes}`));
 * ```
 */
export interface FileInfo {
  /** Absolute path of the entry. */
  path: string;
  /** True for a directory (a symlink is described by its target, but never walked into). */
  is_dir: boolean;
  /** Size in bytes (0 for a directory). */
  size_bytes: number;
  /** RFC 3339 modification timestamp (UTC, milliseconds). */
  modified_at?: string;
}

/**
 * Entries matching a glob pattern.
 *
 * @example
 * ```ts
 * const r: GlobResult = await sb.glob("src/**", "/app");
 * if (r.truncated) console.log("more than", r.matches.length, "files; narrow the pattern");
 * ```
 */
export interface GlobResult {
  matches: FileInfo[];
  /** True when the server hit its result cap or its deadline: the answer is partial. */
  truncated: boolean;
}

/**
 * One matching line found by {@link Sandbox.grep}.
 *
 * @example
 * ```ts
 * const { matches } = await sb.grep("TODO", "/app");
 * matches.forEach((m: GrepMatch) => console.log(`${m.path}:${m.line}: ${m.text}`));
 * ```
 */
export interface GrepMatch {
  /** Absolute path of the file the match was found in. */
  path: string;
  /** 1-based line number. */
  line: number;
  /** The matching line's text (at most 2000 characters). */
  text: string;
}

/**
 * Lines matching a literal search.
 *
 * @example
 * ```ts
 * const r: GrepResult = await sb.grep("import os", "/app", { glob: "*.py" });
 * console.log(r.matches.length, r.truncated);
 * ```
 */
export interface GrepResult {
  matches: GrepMatch[];
  /** True when the server hit its result cap or its deadline. */
  truncated: boolean;
}

/**
 * Options of {@link Sandbox.glob} and {@link Sandbox.ls}.
 *
 * @example
 * ```ts
 * await sb.glob("*.log", "/var/log", { limit: 50, timeout: 30 });
 * ```
 */
export interface GlobOptions {
  /** Maximum matches to return (server default 1000, at most 10000). */
  limit?: number;
  /** Request timeout in seconds (default 60). */
  timeout?: number;
}

/**
 * Options of {@link Sandbox.grep}.
 *
 * @example
 * ```ts
 * await sb.grep("def main", "/app", { glob: "*.py", limit: 20 });
 * ```
 */
export interface GrepOptions extends GlobOptions {
  /**
   * Restrict which files are searched. A bare `*.py` matches by base name at any depth; a
   * pattern containing `/` or `**` matches the path relative to the search root.
   */
  glob?: string;
}

/**
 * What a `HEAD` on a sandbox file reports, without transferring it.
 *
 * @example
 * ```ts
 * const s: FileStat = await sb.stat("/data/big.bin");
 * console.log(s.size_bytes, s.etag, s.last_modified);
 * ```
 */
export interface FileStat {
  /** The file's size. */
  size_bytes: number;
  /** Strong validator of the current contents: pass it as `ifRange` or `ifNoneMatch`. Opaque. */
  etag?: string;
  /** HTTP-date of the last modification (second resolution). */
  last_modified?: string;
  /** The server's content type for the file. */
  content_type?: string;
}

/**
 * Bytes returned by {@link Sandbox.readRange}, and where they sit in the file.
 *
 * @example
 * ```ts
 * const c: FileChunk = await sb.readRange("/data/big.bin", { start: 0, end: 1023 });
 * if (c.partial) console.log(`bytes ${c.start}-${c.start + c.content.length - 1} of ${c.total_bytes}`);
 * ```
 */
export interface FileChunk {
  /** The bytes returned; empty when `unchanged`. */
  content: Uint8Array;
  /** Validator of the version these bytes came from; pass it as `ifRange` for the next chunk. */
  etag?: string;
  /** The file's full size, when the server reported it. */
  total_bytes?: number;
  /** Offset of the first byte returned. */
  start: number;
  /**
   * True when the server answered 206 with part of the file. False after a ranged request
   * means the file changed (stale `ifRange`) and came whole: restart from zero.
   */
  partial: boolean;
  /** True when `ifNoneMatch` still matched: no bytes are returned. */
  unchanged: boolean;
  /** HTTP-date of the last modification. */
  last_modified?: string;
}

/**
 * Options of {@link Sandbox.readRange}: `start` (with optional `end`), or `suffixBytes`.
 *
 * @example
 * ```ts
 * await sb.readRange("/log.txt", { suffixBytes: 4096 });
 * await sb.readRange("/big.bin", { start: 1024, ifRange: etag });
 * await sb.readRange("/cfg.json", { start: 0, ifNoneMatch: etag }); // unchanged: true if same
 * ```
 */
export interface ReadRangeOptions {
  /** First byte to return. With `end`, an inclusive range. */
  start?: number;
  /** Last byte to return, inclusive; clamped to the end of the file. */
  end?: number;
  /** Return the last N bytes. Not combined with `start`/`end`. */
  suffixBytes?: number;
  /** An `ETag` of an earlier chunk: the range is honoured only while the file still matches it. */
  ifRange?: string;
  /** An `ETag` already held: an unchanged file answers `unchanged: true` and no bytes. */
  ifNoneMatch?: string;
  /** Request timeout in seconds (default 60). */
  timeout?: number;
}

const signalFor = (timeout: number | undefined): AbortSignal => AbortSignal.timeout((timeout ?? 60) * 1000);

/** POST one of the read-only search routes (`glob`, `grep`). @internal */
export function fileSearch<T>(
  http: HttpSettings,
  dataplaneUrl: string,
  op: "glob" | "grep",
  body: Record<string, unknown>,
  timeout: number | undefined,
): Promise<T> {
  // Read-only, so safe to retry.
  return callJson<T>(http, `${dataplaneUrl}/${op}`, "POST", body, { idempotent: true, signal: signalFor(timeout) });
}

/** `HEAD` a file. @internal */
export async function statFile(http: HttpSettings, dataplaneUrl: string, path: string, timeout: number | undefined): Promise<FileStat> {
  const res = await call(http, downloadUrl(dataplaneUrl, path), { method: "HEAD", signal: signalFor(timeout) }).catch((e: unknown) => {
    // A HEAD error has no body to name the code; like the LangSmith client, 404 means the file.
    if (e instanceof ResourceNotFoundError && e.status === 404 && e.code === undefined) {
      const err = new ResourceNotFoundError(`file '${path}' not found`, "FILE_NOT_FOUND", 404);
      err.resourceType = "file";
      throw err;
    }
    throw e;
  });
  const length = res.headers.get("content-length");
  return {
    size_bytes: length && /^\d+$/.test(length) ? Number(length) : 0,
    etag: res.headers.get("etag") ?? undefined,
    last_modified: res.headers.get("last-modified") ?? undefined,
    content_type: res.headers.get("content-type") ?? undefined,
  };
}

/** Ranged `GET` of a file. @internal */
export async function readFileRange(http: HttpSettings, dataplaneUrl: string, path: string, opts: ReadRangeOptions): Promise<FileChunk> {
  const headers: Record<string, string> = { range: rangeHeader(opts) };
  if (opts.ifRange) headers["if-range"] = opts.ifRange;
  if (opts.ifNoneMatch) headers["if-none-match"] = opts.ifNoneMatch;
  const res = await call(http, downloadUrl(dataplaneUrl, path), { headers, signal: signalFor(opts.timeout) });
  const etag = res.headers.get("etag") ?? undefined;
  const last_modified = res.headers.get("last-modified") ?? undefined;
  if (res.status === 304) {
    await res.body?.cancel();
    return { content: new Uint8Array(0), etag, start: 0, partial: false, unchanged: true, last_modified };
  }
  const content = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 206) {
    // A stale If-Range (or an empty file) answers 200 with the whole file.
    return { content, etag, total_bytes: content.length, start: 0, partial: false, unchanged: false, last_modified };
  }
  const { start, total } = parseContentRange(res.headers.get("content-range"));
  return { content, etag, total_bytes: total, start, partial: true, unchanged: false, last_modified };
}

function downloadUrl(dataplaneUrl: string, path: string): string {
  return `${dataplaneUrl}/download?path=${encodeURIComponent(path)}`;
}

/** Render the `Range` header of a ranged read (RFC 9110). @internal */
export function rangeHeader(opts: Pick<ReadRangeOptions, "start" | "end" | "suffixBytes">): string {
  const { start, end, suffixBytes } = opts;
  const bad = (msg: string): ValidationError => new ValidationError(msg, undefined, undefined);
  const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
  if (suffixBytes !== undefined) {
    if (start !== undefined || end !== undefined) throw bad("suffixBytes cannot be combined with start/end");
    if (!isCount(suffixBytes) || suffixBytes === 0) throw bad("suffixBytes must be a positive integer");
    return `bytes=-${suffixBytes}`;
  }
  if (start === undefined) throw bad("readRange needs start (with optional end) or suffixBytes");
  if (!isCount(start)) throw bad("start must be a non-negative integer");
  if (end === undefined) return `bytes=${start}-`;
  if (!isCount(end)) throw bad("end must be a non-negative integer");
  if (end < start) throw bad("end must not precede start");
  return `bytes=${start}-${end}`;
}

/** First byte offset and total size of a `Content-Range: bytes a-b/total`. */
function parseContentRange(value: string | null): { start: number; total: number | undefined } {
  const m = /^bytes\s+(\d+)-\d+\/(\d+|\*)$/.exec((value ?? "").trim());
  if (!m) return { start: 0, total: undefined };
  return { start: Number(m[1]), total: m[2] === "*" ? undefined : Number(m[2]) };
}
