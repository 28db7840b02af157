/**
 * A POSIX ustar writer in plain JavaScript (no Node built-ins), for Dockerfile build contexts:
 * regular files, directories and symlinks, with mode and mtime, owned by 0:0. A path that does
 * not fit the ustar `name` field (100 bytes) is split into `prefix` (155 bytes) and `name` at a
 * slash when possible, else carried by a PAX extended header (`path`); so are link targets
 * longer than 100 bytes (`linkpath`) and sizes of 8 GiB and more (`size`). The archive ends
 * with the two zero blocks of the format and is not gzip-compressed.
 *
 * Used by `SandboxClient.createSnapshotFromDockerfile` for both forms of context: a map of
 * files ({@link tarFromFiles}) and, on Node, a directory (`./node/context-tar.ts`).
 */

/** One entry of a tar archive; `path` is relative, `/`-separated, without a leading `./`. */
export type TarEntry =
  | { type: "file"; path: string; data: Uint8Array | string; mode?: number; mtime?: number }
  | { type: "directory"; path: string; mode?: number; mtime?: number }
  | { type: "symlink"; path: string; target: string; mode?: number; mtime?: number };

const BLOCK = 512;
/** Largest size the 11-digit octal `size` field holds. */
const MAX_OCTAL_SIZE = 0o77777777777;
const encoder = new TextEncoder();

const DEFAULT_MODE = { file: 0o644, directory: 0o755, symlink: 0o777 } as const;
const TYPE_FLAG = { file: "0", directory: "5", symlink: "2" } as const;

/**
 * Normalise a relative archive path: `\` is not special, `.` segments and repeated or
 * leading slashes go; `..` segments and empty paths are refused.
 */
export function normalizeTarPath(path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length === 0) throw new Error(`empty path in build context: '${path}'`);
  if (parts.includes("..")) throw new Error(`'..' in build context path: '${path}'`);
  if (parts.some((p) => p.includes("\0"))) throw new Error(`NUL in build context path: '${path}'`);
  return parts.join("/");
}

/** Write `value` as zero-padded octal of `width - 1` digits plus a NUL terminator. */
function octal(buf: Uint8Array, offset: number, width: number, value: number): void {
  const s = Math.max(0, Math.floor(value))
    .toString(8)
    .padStart(width - 1, "0");
  if (s.length > width - 1) throw new Error(`tar header value ${value} does not fit`);
  writeAscii(buf, offset, s);
  buf[offset + width - 1] = 0;
}

function writeAscii(buf: Uint8Array, offset: number, s: string): void {
  for (let i = 0; i < s.length; i++) buf[offset + i] = s.charCodeAt(i) & 0xff;
}

function writeBytes(buf: Uint8Array, offset: number, bytes: Uint8Array, max: number): void {
  buf.set(bytes.subarray(0, max), offset);
}

/** Split a UTF-8 path into ustar `prefix` and `name`, or undefined when it cannot be. */
function splitUstar(path: Uint8Array): { prefix: Uint8Array; name: Uint8Array } | undefined {
  if (path.length <= 100) return { prefix: new Uint8Array(0), name: path };
  // The prefix ends just before a slash; the name after it is 1..100 bytes.
  for (let i = Math.min(path.length - 2, 155); i >= path.length - 101 && i > 0; i--) {
    if (path[i] === 0x2f) return { prefix: path.subarray(0, i), name: path.subarray(i + 1) };
  }
  return undefined;
}

/** A PAX extended header's data: `"<len> <key>=<value>\n"` records, `len` counting itself. */
function paxRecords(records: [string, string][]): Uint8Array {
  let text = "";
  for (const [key, value] of records) {
    const body = ` ${key}=${value}\n`;
    const bodyLen = encoder.encode(body).length;
    let len = bodyLen + 1;
    while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
    text += `${len}${body}`;
  }
  return encoder.encode(text);
}

interface HeaderFields {
  name: Uint8Array;
  prefix: Uint8Array;
  mode: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Uint8Array;
}

function header(f: HeaderFields): Uint8Array {
  const h = new Uint8Array(BLOCK);
  writeBytes(h, 0, f.name, 100);
  octal(h, 100, 8, f.mode & 0o7777);
  octal(h, 108, 8, 0); // uid
  octal(h, 116, 8, 0); // gid
  octal(h, 124, 12, f.size > MAX_OCTAL_SIZE ? 0 : f.size);
  octal(h, 136, 12, Math.min(Math.max(0, f.mtime), MAX_OCTAL_SIZE));
  writeAscii(h, 148, "        "); // checksum placeholder: eight spaces
  writeAscii(h, 156, f.typeflag);
  writeBytes(h, 157, f.linkname, 100);
  writeAscii(h, 257, "ustar\u000000");
  writeAscii(h, 265, "root"); // uname
  writeAscii(h, 297, "root"); // gname
  octal(h, 329, 8, 0); // devmajor
  octal(h, 337, 8, 0); // devminor
  writeBytes(h, 345, f.prefix, 155);
  let sum = 0;
  for (const b of h) sum += b;
  // Six octal digits, NUL, space.
  writeAscii(h, 148, sum.toString(8).padStart(6, "0"));
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

function padding(size: number): Uint8Array {
  const rest = size % BLOCK;
  return new Uint8Array(rest === 0 ? 0 : BLOCK - rest);
}

/**
 * The archive as a list of chunks (headers, contents, padding, end blocks) in order; join
 * them with `new Blob(chunks)` or {@link writeTar}.
 */
export function tarChunks(entries: Iterable<TarEntry>): Uint8Array[] {
  const out: Uint8Array[] = [];
  let paxCount = 0;
  for (const e of entries) {
    const isDir = e.type === "directory";
    const path = normalizeTarPath(e.path) + (isDir ? "/" : "");
    const data = e.type === "file" ? (typeof e.data === "string" ? encoder.encode(e.data) : e.data) : new Uint8Array(0);
    const linkname = e.type === "symlink" ? encoder.encode(e.target) : new Uint8Array(0);
    const pathBytes = encoder.encode(path);
    const pax: [string, string][] = [];
    let split = splitUstar(pathBytes);
    if (!split) {
      pax.push(["path", path]);
      // The ustar fields still carry a truncated name, for readers without PAX.
      split = { prefix: new Uint8Array(0), name: pathBytes.subarray(0, 100) };
    }
    if (linkname.length > 100) pax.push(["linkpath", (e as { target: string }).target]);
    if (data.length > MAX_OCTAL_SIZE) pax.push(["size", String(data.length)]);
    const mtime = Math.floor(e.mtime ?? 0);
    if (pax.length > 0) {
      const records = paxRecords(pax);
      const paxName = encoder.encode(`PaxHeaders.${paxCount++}/${path.replace(/\/$/, "").split("/").pop() ?? ""}`).subarray(0, 100);
      out.push(header({ name: paxName, prefix: new Uint8Array(0), mode: 0o644, size: records.length, mtime, typeflag: "x", linkname: new Uint8Array(0) }));
      out.push(records, padding(records.length));
    }
    out.push(
      header({
        name: split.name,
        prefix: split.prefix,
        mode: e.mode ?? DEFAULT_MODE[e.type],
        size: data.length,
        mtime,
        typeflag: TYPE_FLAG[e.type],
        linkname: linkname.subarray(0, 100),
      }),
    );
    if (data.length > 0) out.push(data, padding(data.length));
  }
  out.push(new Uint8Array(BLOCK * 2));
  return out;
}

/** The archive in one buffer. */
export function writeTar(entries: Iterable<TarEntry>): Uint8Array {
  const chunks = tarChunks(entries);
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const buf = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    buf.set(c, at);
    at += c.length;
  }
  return buf;
}

/**
 * Entries for a map of relative path -> content, sorted by path, each parent directory
 * before its contents (mode 0755), files mode 0644, mtime 0 (the same map gives the same
 * bytes). A key ending in `/` is a directory (its value is ignored).
 */
export function entriesFromFiles(files: Record<string, string | Uint8Array>): TarEntry[] {
  const dirs = new Set<string>();
  const fileEntries = new Map<string, string | Uint8Array>();
  for (const [raw, data] of Object.entries(files)) {
    const path = normalizeTarPath(raw);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    if (raw.endsWith("/")) dirs.add(path);
    else fileEntries.set(path, data);
  }
  for (const d of dirs) if (fileEntries.has(d)) throw new Error(`build context path '${d}' is both a file and a directory`);
  const entries: TarEntry[] = [...dirs].map((path) => ({ type: "directory", path }));
  for (const [path, data] of fileEntries) entries.push({ type: "file", path, data });
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** A tar archive of a map of relative path -> content (see {@link entriesFromFiles}). */
export function tarFromFiles(files: Record<string, string | Uint8Array>): Uint8Array[] {
  return tarChunks(entriesFromFiles(files));
}
