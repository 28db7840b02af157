/**
 * Property-based fuzzing (fast-check) of every route in the server's route table, against a
 * real server with one busybox sandbox, its snapshot, a registry and an empty warm pool, so
 * that routes with a valid id are fuzzed too: malformed JSON, wrong types for each field, odd
 * unicode (emoji, RTL, NUL, combining marks, lone surrogates, very long), path traversal and
 * broken percent-escapes in every path parameter, wrong query types, wrong methods, odd content
 * types and multipart bodies, bodies over the 4 MiB limit and headers over Node's limit.
 *
 * The invariant: never a 5xx, never a dead server (/healthz answers after every property),
 * and every error is a documented code with the status of ERROR_TABLE and the body shape of
 * error-body.ts. Routes whose valid-id requests would change or delete the fixtures only get
 * requests that cannot pass validation (a wrong-typed field) or ids that name nothing.
 */
import http, { type IncomingHttpHeaders } from "node:http";
import { connect } from "node:net";
import { readFile, access } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { ERROR_TABLE, isErrorCode, type ErrorCode } from "@sandbar/shared";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";

// ---------------------------------------------------------------------------------------------
// The route table this file fuzzes. Keys are "METHOD url" with `{cp}` for each control prefix.
// A route the server serves that is not here fails the first test: add it with its spec.
// ---------------------------------------------------------------------------------------------

const CONTROL_PREFIXES = ["/v2/sandboxes", "/api/v2/sandboxes"];

/** JSON field types, for wrong-typed values. */
type Kind = "str" | "path" | "int" | "num" | "bool" | "policy" | "map" | "strArr";

/** What valid ids a route may be fuzzed with. */
type Safety =
  /** Any request: reads, or writes that touch nothing the tests rely on. */
  | "any"
  /** Only bodies with a wrong-typed field (nothing can change). */
  | "invalidOnly"
  /** Never with a valid id (delete, stop). */
  | "never";

type Target = "sandbox" | "snapshot" | "registry" | "pool" | "link" | "none";

interface RouteSpec {
  /** Body fields and their types; absent: the route takes no body (one is sent anyway at times). */
  fields?: Record<string, Kind>;
  /** Body kind when not JSON. */
  body?: "upload" | "build";
  /** Query fields the route reads. */
  query?: Record<string, Kind>;
  /** Which resource its path parameter names, and how its real ids may be used. */
  target: Target;
  safety: Safety;
  /** Error codes the route documents, beyond the ones every route may answer. */
  codes: ErrorCode[];
}

/** Codes any route may answer to a bad request. */
const COMMON: ErrorCode[] = ["VALIDATION_ERROR", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "ROUTE_NOT_FOUND"];

const SANDBOX_FIELDS: Record<string, Kind> = {
  snapshot_id: "str",
  snapshot_name: "str",
  name: "str",
  wait_for_ready: "bool",
  timeout: "num",
  idle_ttl_seconds: "int",
  delete_after_stop_seconds: "int",
  vcpus: "num",
  mem_bytes: "int",
  fs_capacity_bytes: "int",
  labels: "map",
  network_policy: "policy",
  restore_memory: "bool",
  preserve_memory_on_stop: "bool",
};
const REGISTRY_FIELDS: Record<string, Kind> = { name: "str", url: "str", username: "str", password: "str", auth_type: "str", aws_role_arn: "str" };
const DP: ErrorCode[] = ["SANDBOX_NOT_FOUND", "SANDBOX_NOT_READY"];
const FILE_CODES: ErrorCode[] = ["FILE_NOT_FOUND", "IS_A_DIRECTORY", "RANGE_NOT_SATISFIABLE", "COMMAND_ERROR", "PERMISSION_DENIED"];

const CONTROL: Record<string, RouteSpec> = {
  "POST {cp}/boxes": { fields: SANDBOX_FIELDS, target: "none", safety: "any", codes: ["SNAPSHOT_NOT_FOUND", "SNAPSHOT_NOT_READY", "NAME_CONFLICT", "QUOTA_EXCEEDED"] },
  "GET {cp}/quotas": { target: "none", safety: "any", codes: [] },
  "HEAD {cp}/quotas": { target: "none", safety: "any", codes: [] },
  "GET {cp}/boxes": {
    query: { name_contains: "str", status: "str", limit: "int", offset: "int", sort_by: "str", sort_direction: "str" },
    target: "none",
    safety: "any",
    codes: [],
  },
  "HEAD {cp}/boxes": { query: { limit: "int", offset: "int", status: "str" }, target: "none", safety: "any", codes: [] },
  "GET {cp}/boxes/:name": { target: "sandbox", safety: "any", codes: ["SANDBOX_NOT_FOUND"] },
  "HEAD {cp}/boxes/:name": { target: "sandbox", safety: "any", codes: ["SANDBOX_NOT_FOUND"] },
  "GET {cp}/boxes/:name/status": { target: "sandbox", safety: "any", codes: ["SANDBOX_NOT_FOUND"] },
  "HEAD {cp}/boxes/:name/status": { target: "sandbox", safety: "any", codes: ["SANDBOX_NOT_FOUND"] },
  "PATCH {cp}/boxes/:name": {
    fields: { name: "str", idle_ttl_seconds: "int", delete_after_stop_seconds: "int", network_policy: "policy", preserve_memory_on_stop: "bool" },
    target: "sandbox",
    safety: "invalidOnly",
    codes: ["SANDBOX_NOT_FOUND", "NAME_CONFLICT"],
  },
  "DELETE {cp}/boxes/:name": { target: "sandbox", safety: "never", codes: ["SANDBOX_NOT_FOUND"] },
  "POST {cp}/boxes/:name/stop": { target: "sandbox", safety: "never", codes: ["SANDBOX_NOT_FOUND"] },
  "POST {cp}/boxes/:name/snapshot": {
    fields: { name: "str", docker_image: "str", fs_capacity_bytes: "int", include_memory: "bool", checkpoint: "str" },
    target: "sandbox",
    safety: "invalidOnly",
    codes: ["SANDBOX_NOT_FOUND", "NAME_CONFLICT", "SANDBOX_NOT_READY"],
  },
  "POST {cp}/boxes/:name/start": { fields: { timeout: "num" }, target: "sandbox", safety: "invalidOnly", codes: ["SANDBOX_NOT_FOUND", "SANDBOX_NOT_READY", "QUOTA_EXCEEDED"] },
  "POST {cp}/boxes/:name/download-url": {
    fields: { path: "path", expires_in_seconds: "int", content_type: "str", content_disposition: "str" },
    target: "sandbox",
    safety: "any",
    codes: ["SANDBOX_NOT_FOUND"],
  },
  "POST {cp}/boxes/:name/service-url": {
    fields: { port: "int", expires_in_seconds: "int", access: "str", embed_origins: "strArr" },
    target: "sandbox",
    safety: "any",
    codes: ["SANDBOX_NOT_FOUND"],
  },
  // Invalid bodies only: a valid one would pull an image over the network.
  "POST {cp}/snapshots": {
    fields: { name: "str", docker_image: "str", fs_capacity_bytes: "int", registry_id: "str", registry_url: "str", registry_username: "str", registry_password: "str" },
    target: "none",
    safety: "invalidOnly",
    codes: ["NAME_CONFLICT", "REGISTRY_NOT_FOUND"],
  },
  "GET {cp}/snapshots": { query: { name_contains: "str", limit: "int", offset: "int" }, target: "none", safety: "any", codes: [] },
  "HEAD {cp}/snapshots": { query: { limit: "int", offset: "int" }, target: "none", safety: "any", codes: [] },
  "GET {cp}/snapshots/:id": { target: "snapshot", safety: "any", codes: ["SNAPSHOT_NOT_FOUND"] },
  "HEAD {cp}/snapshots/:id": { target: "snapshot", safety: "any", codes: ["SNAPSHOT_NOT_FOUND"] },
  "DELETE {cp}/snapshots/:id": { target: "snapshot", safety: "never", codes: ["SNAPSHOT_NOT_FOUND", "SNAPSHOT_IN_USE"] },
  "POST {cp}/snapshots/build": { body: "build", target: "none", safety: "any", codes: ["NAME_CONFLICT"] },
  "GET {cp}/snapshots/:id/build-log": { query: { follow: "str" }, target: "snapshot", safety: "any", codes: ["SNAPSHOT_NOT_FOUND"] },
  "HEAD {cp}/snapshots/:id/build-log": { query: { follow: "str" }, target: "snapshot", safety: "any", codes: ["SNAPSHOT_NOT_FOUND"] },
  "POST {cp}/registries": { fields: REGISTRY_FIELDS, target: "none", safety: "any", codes: ["NAME_CONFLICT"] },
  "GET {cp}/registries": { query: { name_contains: "str", limit: "int", offset: "int", page_size: "int", cursor: "str" }, target: "none", safety: "any", codes: [] },
  "HEAD {cp}/registries": { query: { page_size: "int", cursor: "str" }, target: "none", safety: "any", codes: [] },
  "GET {cp}/registries/:name": { target: "registry", safety: "any", codes: ["REGISTRY_NOT_FOUND"] },
  "HEAD {cp}/registries/:name": { target: "registry", safety: "any", codes: ["REGISTRY_NOT_FOUND"] },
  "PATCH {cp}/registries/:name": { fields: REGISTRY_FIELDS, target: "registry", safety: "invalidOnly", codes: ["REGISTRY_NOT_FOUND", "NAME_CONFLICT"] },
  "DELETE {cp}/registries/:name": { target: "registry", safety: "never", codes: ["REGISTRY_NOT_FOUND"] },
  "POST {cp}/pools": {
    fields: { snapshot_id: "str", snapshot_name: "str", size: "int", vcpus: "num", mem_bytes: "int", fs_capacity_bytes: "int" },
    target: "none",
    safety: "any",
    codes: ["SNAPSHOT_NOT_FOUND", "SNAPSHOT_NOT_READY", "POOL_EXISTS"],
  },
  "GET {cp}/pools": { target: "none", safety: "any", codes: [] },
  "HEAD {cp}/pools": { target: "none", safety: "any", codes: [] },
  "GET {cp}/pools/:id": { target: "pool", safety: "any", codes: ["POOL_NOT_FOUND"] },
  "HEAD {cp}/pools/:id": { target: "pool", safety: "any", codes: ["POOL_NOT_FOUND"] },
  // A valid size would boot sandboxes.
  "PATCH {cp}/pools/:id": { fields: { size: "int" }, target: "pool", safety: "invalidOnly", codes: ["POOL_NOT_FOUND"] },
  "DELETE {cp}/pools/:id": { target: "pool", safety: "never", codes: ["POOL_NOT_FOUND"] },
};

const OTHER: Record<string, RouteSpec> = {
  "GET /healthz": { target: "none", safety: "any", codes: [] },
  "HEAD /healthz": { target: "none", safety: "any", codes: [] },
  "POST /dataplane/:id/execute": { fields: { command: "str", timeout: "num", shell: "str", env: "map", cwd: "path" }, target: "sandbox", safety: "any", codes: [...DP, "COMMAND_ERROR", "COMMAND_TIMEOUT"] },
  "POST /dataplane/:id/upload": { body: "upload", query: { path: "path" }, target: "sandbox", safety: "any", codes: [...DP, "WRITE_ERROR", "PERMISSION_DENIED", "FILE_NOT_FOUND"] },
  "GET /dataplane/:id/download": { query: { path: "path" }, target: "sandbox", safety: "any", codes: [...DP, ...FILE_CODES] },
  "HEAD /dataplane/:id/download": { query: { path: "path" }, target: "sandbox", safety: "any", codes: [...DP, ...FILE_CODES] },
  "GET /links/:token": { target: "link", safety: "any", codes: ["UNAUTHENTICATED", ...DP, ...FILE_CODES] },
  "HEAD /links/:token": { target: "link", safety: "any", codes: ["UNAUTHENTICATED", ...DP, ...FILE_CODES] },
  "POST /dataplane/:id/glob": { fields: { pattern: "str", path: "path", limit: "int" }, target: "sandbox", safety: "any", codes: [...DP, "FILE_NOT_FOUND", "PERMISSION_DENIED"] },
  "POST /dataplane/:id/grep": { fields: { pattern: "str", path: "path", glob: "str", limit: "int" }, target: "sandbox", safety: "any", codes: [...DP, "FILE_NOT_FOUND", "PERMISSION_DENIED"] },
  // Plain (non-upgrade) requests to the WebSocket routes; upgrades are fuzzed below.
  "GET /dataplane/:id/execute/ws": { target: "sandbox", safety: "any", codes: DP },
  "HEAD /dataplane/:id/execute/ws": { target: "sandbox", safety: "any", codes: DP },
  "GET /dataplane/:id/tunnel": { target: "sandbox", safety: "any", codes: DP },
  "HEAD /dataplane/:id/tunnel": { target: "sandbox", safety: "any", codes: DP },
};

/** Every route of the table with its spec, control routes once per prefix. */
const ROUTES: [string, RouteSpec][] = [
  ...Object.entries(OTHER),
  ...CONTROL_PREFIXES.flatMap((p) => Object.entries(CONTROL).map(([k, v]): [string, RouteSpec] => [k.replace("{cp}", p), v])),
];
const ROUTE_KEYS = new Set(ROUTES.map(([k]) => k));
/** Every documented code but INTERNAL_ERROR. */
const ANY_CODE = (Object.keys(ERROR_TABLE) as ErrorCode[]).filter((c) => c !== "INTERNAL_ERROR");

/** A route pattern as a regex over concrete paths. */
function routeRegex(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:\w+/g, "[^/]+")}$`);
}
const ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

/** Hand-picked nasty strings: traversal, escapes, NUL, unicode oddities, numbers as text. */
const NASTY = [
  "..",
  "../..",
  "../../../../etc/passwd",
  "..%2F..%2F..%2Fetc%2Fpasswd",
  "%2e%2e%2f%2e%2e%2f",
  "..%252F..%252F",
  "%c0%ae%c0%ae%c0%af",
  "%ED%A0%80",
  "%FF%FE",
  "%",
  "%%",
  "%zz",
  "%00",
  "a%00b",
  "\u0000",
  "a\u0000b",
  "/",
  "//",
  "\\..\\..\\windows",
  "?",
  "#frag",
  "&x=1",
  " ",
  "\t\r\n",
  "😀",
  "👩‍👩‍👧‍👦",
  "\u202Egnp.exe",
  "\u05E9\u05DC\u05D5\u05DD\u200F",
  "e\u0301\u0301\u0301\u0301",
  "Z\u0335\u0321\u0322\u031B\u0317\u0318\u0319",
  "\uFEFF",
  "\uD800",
  "\uDFFF\uD800",
  "\u3000",
  "ｂｏｘ",
  "a".repeat(129),
  "b".repeat(4097),
  "null",
  "true",
  "0",
  "-1",
  "1e309",
  "NaN",
  "0x10",
  "99999999999999999999999",
  "9007199254740993",
  "__proto__",
  "constructor",
  "toString",
  "[object Object]",
  "' OR '1'='1",
  "<script>alert(1)</script>",
  "${jndi:ldap://x}",
  "CON",
  "sandbox-0",
  "valid-name",
];

const nastyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme-ascii", minLength: 100, maxLength: 6000 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom("..", ".", "%2F", "%00", "a", "😀", "\u202E", "\u0301"), { maxLength: 12 }).map((a) => a.join("/")) },
);

/** Paths inside a sandbox: absolute and relative, traversal, devices, proc, odd names. */
const fsPath: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "/etc/hostname",
    "/../../../etc/hostname",
    "/etc/../../../../etc/hostname",
    "/proc/self/environ",
    "/proc/1/root/etc/hostname",
    "/dev/zero",
    "/dev/null",
    "/",
    "/tmp",
    "/tmp/",
    "/nonexistent",
    "/etc/passwd/..",
    "/etc/passwd/x",
    "relative/path",
    "",
    "//etc//hostname",
  ),
  nastyString.map((s) => `/${s}`),
  nastyString,
);

/** Values of the wrong JSON type for a field of kind `k`. */
function wrongValue(k: Kind): fc.Arbitrary<unknown> {
  const obj = fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 });
  const arr = fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 });
  switch (k) {
    case "str":
    case "path":
      return fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null), arr, obj);
    case "int":
    case "num":
      return fc.oneof(nastyString, fc.boolean(), fc.constant(null), arr, obj);
    case "bool":
      return fc.oneof(nastyString, fc.integer(), fc.constant(null), arr, obj);
    case "policy":
    case "map":
      return fc.oneof(nastyString, fc.integer(), fc.boolean(), fc.constant(null), arr);
    case "strArr":
      return fc.oneof(nastyString, fc.integer(), fc.boolean(), fc.constant(null), obj);
  }
}

/** Any value for a field of kind `k`: plausible ones, boundary ones and wrong-typed ones. */
function anyValue(k: Kind): fc.Arbitrary<unknown> {
  const wrong = wrongValue(k);
  const num = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 1, 59, 60, 65535, 65536, 2 ** 31, 2 ** 53, 1e308, -1e308, 0.5, 1e-9), fc.double({ noNaN: true, noDefaultInfinity: true }));
  switch (k) {
    case "str":
      return fc.oneof({ weight: 3, arbitrary: nastyString }, { weight: 1, arbitrary: wrong });
    case "path":
      return fc.oneof({ weight: 3, arbitrary: fsPath }, { weight: 1, arbitrary: wrong });
    case "int":
    case "num":
      return fc.oneof({ weight: 3, arbitrary: num }, { weight: 1, arbitrary: wrong });
    case "bool":
      return fc.oneof({ weight: 3, arbitrary: fc.boolean() }, { weight: 1, arbitrary: wrong });
    case "map":
      return fc.oneof({ weight: 3, arbitrary: fc.dictionary(nastyString, fc.oneof(nastyString, fc.integer()), { maxKeys: 4 }) }, { weight: 1, arbitrary: wrong });
    case "strArr":
      return fc.oneof({ weight: 3, arbitrary: fc.array(fc.oneof(nastyString, fc.integer()), { maxLength: 7 }) }, { weight: 1, arbitrary: wrong });
    case "policy":
      return fc.oneof(
        {
          weight: 3,
          arbitrary: fc.record(
            {
              egress: fc.oneof(fc.constantFrom("deny_all", "allow_all", "allow_list"), nastyString),
              allow_cidrs: fc.array(fc.oneof(fc.constantFrom("10.0.0.0/8", "1.1.1.1", "0.0.0.0/0", "256.1.1.1", "1.1.1.1/33", "::1", "1.1.1.1/-1"), nastyString), { maxLength: 4 }),
              allow_domains: fc.array(fc.oneof(fc.constantFrom("example.com", "*.example.org", "*", "😀.com", "a..b", `${"a".repeat(64)}.com`), nastyString), { maxLength: 4 }),
              extra: fc.jsonValue({ maxDepth: 1 }),
            },
            { requiredKeys: [] },
          ),
        },
        { weight: 1, arbitrary: wrong },
      );
  }
}

/** A JSON object for `fields`; with `invalid`, at least one field has the wrong type. */
function objectBody(fields: Record<string, Kind>, invalid: boolean): fc.Arbitrary<Record<string, unknown>> {
  const names = Object.keys(fields);
  const model: Record<string, fc.Arbitrary<unknown>> = Object.fromEntries(names.map((n) => [n, anyValue(fields[n] as Kind)]));
  const base = fc.record(model, { requiredKeys: [] });
  const extra = fc.dictionary(nastyString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 2 });
  const body = fc.tuple(base, fc.option(extra, { freq: 4 })).map(([b, e]) => ({ ...(e ?? {}), ...b }) as Record<string, unknown>);
  if (!invalid) return body;
  return fc
    .tuple(body, fc.constantFrom(...names))
    .chain(([b, name]) => wrongValue(fields[name] as Kind).map((v) => ({ ...b, [name]: v })));
}

/** A request body: the raw bytes and the Content-Type to send (undefined: none). */
interface Body {
  data?: Buffer | string;
  type?: string;
}

const JSON_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin1", "APPLICATION/JSON", "application/vnd.api+json"];
const OTHER_TYPES = ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/octet-stream", "multipart/form-data", "multipart/form-data; boundary=", `multipart/form-data; boundary=${"b".repeat(300)}`, "", "*/*", "application/json\u00ff"];

/** Malformed JSON texts, plus a deep nesting. */
const badJson: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom("{", "}", "[1,", '{"a":}', "{'a':1}", '{"a":1,}', "\uFEFF{}", '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', "NaN", "undefined", "", " ", "[".repeat(20000) + "]".repeat(20000), '{"a":"\\ud800"}', '"\\u0000"'),
  fc.string({ unit: "binary", maxLength: 60 }),
);

/** Any JSON-ish body for a route with `fields`. */
function jsonRouteBody(fields: Record<string, Kind>, invalid: boolean): fc.Arbitrary<Body> {
  const asJson = (v: unknown, type: string): Body => ({ data: JSON.stringify(v) ?? "null", type });
  return fc.oneof(
    { weight: 8, arbitrary: fc.tuple(objectBody(fields, invalid), fc.constantFrom(...JSON_TYPES)).map(([v, t]) => asJson(v, t)) },
    // Top-level non-objects (null parses as no body: only valid where nothing is required).
    { weight: 2, arbitrary: fc.tuple(fc.oneof(fc.jsonValue({ maxDepth: 2 }), nastyString), fc.constantFrom(...JSON_TYPES)).map(([v, t]) => asJson(v, t)) },
    { weight: 2, arbitrary: fc.tuple(badJson, fc.constantFrom(...JSON_TYPES)).map(([d, t]) => ({ data: d, type: t })) },
    { weight: 1, arbitrary: fc.tuple(fc.oneof(badJson, nastyString), fc.constantFrom(...OTHER_TYPES)).map(([d, t]) => ({ data: d, type: t })) },
    { weight: 1, arbitrary: fc.constant<Body>({}) },
  );
}

/** multipart/form-data bodies: well-formed, truncated, or garbage, with odd boundaries. */
function multipartBody(names: string[], fixName?: (field: string, value: string) => string): fc.Arbitrary<Body> {
  const part = fc.record({
    name: fc.oneof(fc.constantFrom(...names), nastyString),
    filename: fc.option(nastyString, { nil: undefined }),
    value: fc.oneof(nastyString, fc.constantFrom("FROM scratch\n", "FROM busybox\nRUN true\n", '{"A":"1"}', "1073741824")),
  });
  return fc
    .record({
      boundary: fc.constantFrom("x", "----fuzz", "a b", "\"q\"", "b".repeat(70)),
      parts: fc.array(part, { maxLength: 4 }),
      cut: fc.option(fc.nat({ max: 400 }), { freq: 3 }),
      closed: fc.boolean(),
      type: fc.constantFrom("multipart/form-data; boundary=B", "multipart/form-data; boundary=B; charset=utf-8", "multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=B"),
    })
    .map(({ boundary, parts, cut, closed, type }) => {
      let text = "";
      for (const p of parts) {
        const value = fixName ? fixName(p.name, p.value) : p.value;
        const fname = p.filename === undefined ? "" : `; filename="${p.filename}"`;
        text += `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"${fname}\r\n\r\n${value}\r\n`;
      }
      if (closed) text += `--${boundary}--\r\n`;
      const data = cut === null ? text : text.slice(0, cut);
      return { data, type: type.replace("B", boundary) };
    });
}

/** A query string from entries of (name, value), each escaped one of three ways. */
type Enc = "component" | "raw" | "double";
const enc: fc.Arbitrary<Enc> = fc.constantFrom("component", "component", "raw", "double");

function queryArb(spec: RouteSpec): fc.Arbitrary<string> {
  const known = Object.keys(spec.query ?? {});
  const names = fc.oneof({ weight: 3, arbitrary: known.length ? fc.constantFrom(...known) : nastyString }, { weight: 1, arbitrary: fc.constantFrom("__proto__", "constructor", "a[b]", "limit[]", "") }, { weight: 1, arbitrary: nastyString });
  const values = fc.oneof(
    nastyString,
    fsPath,
    fc.constantFrom("-1", "0", "1", "1.5", "500", "501", "1e3", " 1", "true", "1", "asc", "name", "ready", "99999999999999999999", "9007199254740991"),
  );
  return fc.array(fc.tuple(names, values, enc), { maxLength: 5 }).map((entries) => entries.map(([k, v, e]) => `${escapePart(k, e)}=${escapePart(v, e)}`).join("&"));
}

// ---------------------------------------------------------------------------------------------
// HTTP on node:http, so that paths go out byte for byte (fetch would resolve `..` segments)
// ---------------------------------------------------------------------------------------------

/** Percent-encode `s` (as UTF-8) except the characters `keep` accepts. */
function escapeExcept(s: string, keep: (ch: string) => boolean): string {
  let out = "";
  for (const ch of s) {
    if (keep(ch)) out += ch;
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** component: like encodeURIComponent; raw: only what cannot go on the wire; double: escaped twice. */
function escapePart(s: string, e: Enc): string {
  if (e === "raw") return escapeExcept(s, (ch) => ch >= "!" && ch <= "~");
  const once = escapeExcept(s, (ch) => /^[A-Za-z0-9\-_.~]$/.test(ch));
  return e === "double" ? escapeExcept(once, (ch) => /^[A-Za-z0-9\-_.~]$/.test(ch)) : once;
}

/** A header value Node will send: controls and non-Latin-1 characters replaced. */
function headerSafe(s: string): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    out += (c >= 0x20 && c <= 0x7e) || ch === "\t" ? ch : "?";
  }
  return out;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface Req {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Body;
}

let base: URL;

function send(r: Req): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(r.headers ?? {}) };
    if (r.body?.type !== undefined) headers["content-type"] = r.body.type;
    if (r.body?.data !== undefined) headers["content-length"] = String(Buffer.byteLength(r.body.data));
    const req = http.request({ host: base.hostname, port: base.port, method: r.method, path: r.path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`no answer within 60 s: ${r.method} ${r.path.slice(0, 200)}`)));
    req.on("error", reject);
    req.end(r.body?.data);
  });
}

// ---------------------------------------------------------------------------------------------
// The invariant
// ---------------------------------------------------------------------------------------------

interface ErrorJson {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
}

/** Never a 5xx; an error is a documented code, with ERROR_TABLE's status and error-body.ts's shape. */
function checkAnswer(r: Req, a: Answer, allowed: readonly ErrorCode[]): ErrorJson | undefined {
  const what = `${r.method} ${r.path.slice(0, 300)} (content-type ${r.body?.type ?? "-"}) -> ${a.status} ${a.body.toString("utf8").slice(0, 400)}`;
  if (a.status >= 500 || a.status < 200) throw new Error(`server error: ${what}`);
  if (a.status < 400) return undefined;
  if (!String(a.headers["content-type"] ?? "").startsWith("application/json")) throw new Error(`error without a JSON content type: ${what}`);
  if (r.method === "HEAD") {
    if (a.body.length !== 0) throw new Error(`HEAD answered with a body: ${what}`);
    // No body to read the code from: the status must be one some allowed code has.
    if (!allowed.some((c) => ERROR_TABLE[c].status === a.status)) throw new Error(`HEAD status not among the route's codes: ${what}`);
    return undefined;
  }
  let body: ErrorJson;
  try {
    body = JSON.parse(a.body.toString("utf8")) as ErrorJson;
  } catch {
    throw new Error(`error body is not JSON: ${what}`);
  }
  if (!isErrorCode(body.code)) throw new Error(`undocumented error code: ${what}`);
  const code = body.code;
  if (ERROR_TABLE[code].status !== a.status) throw new Error(`status ${a.status} is not ${code}'s ${ERROR_TABLE[code].status}: ${what}`);
  if (!allowed.includes(code)) throw new Error(`code ${code} is not one this route documents (${allowed.join(", ")}): ${what}`);
  if (typeof body.message !== "string") throw new Error(`no message: ${what}`);
  if (Array.isArray(body.detail)) {
    if (code !== "VALIDATION_ERROR" || body.detail.length === 0) throw new Error(`a detail list outside VALIDATION_ERROR: ${what}`);
    for (const i of body.detail as { loc?: unknown; msg?: unknown; type?: unknown }[]) {
      const loc = i.loc;
      if (!Array.isArray(loc) || !["body", "query", "params"].includes(loc[0] as string) || typeof i.msg !== "string" || i.type !== "value_error") {
        throw new Error(`malformed validation issue ${JSON.stringify(i)}: ${what}`);
      }
    }
  } else {
    const d = body.detail as { error?: unknown; message?: unknown } | undefined;
    if (!d || d.error !== ERROR_TABLE[code].wireType || d.message !== body.message) throw new Error(`detail is not {error: ${ERROR_TABLE[code].wireType}, message}: ${what}`);
  }
  return body;
}

// ---------------------------------------------------------------------------------------------

/** fast-check runs per property; SANDBAR_FUZZ_RUNS=500 for a longer hunt. */
const RUNS = Number(process.env.SANDBAR_FUZZ_RUNS ?? 100);

describe("API fuzzing: every route answers bad input with a documented error, never a 5xx", () => {
  let w: World;
  let sb: SandboxJson;
  let key: string;
  const res = { sandboxId: "", sandboxName: "fuzz-box", snapshotId: "", snapshotName: "busybox", registryId: "", registryName: "fuzz-reg", poolId: "", linkToken: "" };

  const realTargets = (t: Target): string[] => {
    switch (t) {
      case "sandbox":
        return [res.sandboxId, res.sandboxName];
      case "snapshot":
        return [res.snapshotId, res.snapshotName];
      case "registry":
        return [res.registryId, res.registryName];
      case "pool":
        return [res.poolId];
      case "link":
        return [res.linkToken];
      case "none":
        return [];
    }
  };

  beforeAll(async () => {
    w = await startWorld(["busybox"]);
    key = w.t.apiKey;
    base = new URL(w.t.url);
    sb = await w.createSandbox({ snapshot_id: w.snapshots.busybox, name: res.sandboxName });
    res.sandboxId = sb.id;
    res.snapshotId = w.snapshots.busybox as string;
    const reg = await w.t.call("POST", "/registries", { name: res.registryName, url: "registry.example.com" });
    expect(reg.status).toBe(201);
    res.registryId = ((await reg.json()) as { id: string }).id;
    const pool = await w.t.call("POST", "/pools", { snapshot_id: res.snapshotId, size: 0 });
    expect(pool.status).toBe(201);
    res.poolId = ((await pool.json()) as { id: string }).id;
    const link = await w.t.call("POST", `/boxes/${sb.id}/download-url`, { path: "/etc/passwd", expires_in_seconds: 3600 });
    res.linkToken = ((await link.json()) as { token: string }).token;
  });

  afterEach(async () => {
    // The server is alive and well after every test.
    const h = await send({ method: "GET", path: "/healthz" });
    expect(h.status).toBe(200);
  });

  afterAll(async () => {
    if (!w) return;
    await w.t.call("DELETE", `/pools/${res.poolId}`);
    // The fuzz may have created registries (valid random bodies): delete them all.
    const regs = (await (await w.t.call("GET", "/registries?limit=500")).json()) as { items: { id: string }[] };
    for (const r of regs.items) await w.t.call("DELETE", `/registries/${r.id}`);
    await w.stop();
  });

  it("the server's route table is exactly the fuzzed one", () => {
    const served = w.t.server.app.routeTable.map((r) => `${r.method} ${r.url}`);
    expect([...new Set(served)].sort()).toEqual([...ROUTE_KEYS].sort());
  });

  it.each(ROUTES.map(([k, s]) => [k, s] as const))("%s", async (routeKey, spec) => {
    const [method, pattern] = routeKey.split(" ") as [string, string];
    const param = /:(\w+)/.exec(pattern)?.[0];
    const realIds = realTargets(spec.target);
    // Methods no route serves on a path of this shape (`/snapshots/build` is also a
    // `/snapshots/:id`): those must be 404 ROUTE_NOT_FOUND.
    const concrete = pattern.replace(/:(\w+)/, "x");
    const served = new Set(ROUTES.filter(([k]) => routeRegex(k.split(" ")[1] as string).test(concrete)).map(([k]) => k.split(" ")[0]));
    const otherMethods = ALL_METHODS.filter((m) => !served.has(m));
    const allowed = [...COMMON, ...spec.codes];

    const paramArb: fc.Arbitrary<{ value: string; real: boolean; enc: Enc }> = fc.oneof(
      { weight: 3, arbitrary: fc.record({ value: nastyString, real: fc.constant(false), enc }) },
      ...(realIds.length && spec.safety !== "never" ? [{ weight: 2, arbitrary: fc.record({ value: fc.constantFrom(...realIds), real: fc.constant(true), enc: fc.constant<Enc>("component") }) }] : []),
      // A random UUID: the right shape, nothing behind it.
      { weight: 1, arbitrary: fc.uuid().map((u) => ({ value: u, real: false, enc: "component" as Enc })) },
    );
    const methodArb = fc.oneof({ weight: 5, arbitrary: fc.constant(method) }, ...(otherMethods.length ? [{ weight: 1, arbitrary: fc.constantFrom(...otherMethods) }] : []));
    const bodyArb = (real: boolean): fc.Arbitrary<Body> => {
      if (spec.body === "upload") return uploadBody;
      if (spec.body === "build") return fc.oneof(buildBody, jsonRouteBody({ name: "str", dockerfile: "str" }, false));
      if (spec.fields) return jsonRouteBody(spec.fields, real && spec.safety === "invalidOnly");
      // Routes without a body: usually none, sometimes junk.
      return fc.oneof({ weight: 4, arbitrary: fc.constant<Body>({}) }, { weight: 1, arbitrary: jsonRouteBody({ x: "str" }, false) });
    };
    const extraHeaders = fc.dictionary(
      fc.constantFrom("range", "if-range", "if-none-match", "if-modified-since", "accept", "accept-encoding", "x-forwarded-for", "origin", "cookie", "transfer-encoding-x"),
      fc.oneof(nastyString, fc.constantFrom("bytes=0-1", "bytes=5-2", "bytes=-1", "bytes=0-1,3-4", "bytes=99999999999999999999-", "bytes=abc", "*")).map(headerSafe),
      { maxKeys: 3 },
    );

    // Uploads with a real id write under /tmp/fuzz only: one segment, escaped so that the
    // server's one decoding cannot make a `/` (no `..` above /tmp/fuzz/..).
    const uploadPath = fc.tuple(nastyString, fc.constantFrom<Enc>("component", "double")).map(([s, e]) => `path=${escapePart(`/tmp/fuzz/${s.replace(/\//g, "_")}`, e)}`);
    const sample = fc
      .record({ p: paramArb, m: methodArb, q: fc.option(queryArb(spec), { freq: 2 }), h: extraHeaders, up: uploadPath })
      .chain(({ p, m, q, h, up }) => bodyArb(p.real).map((b) => ({ p, m, q, h, up, b })));

    await fc.assert(
      fc.asyncProperty(sample, async ({ p, m, q, h, up, b }) => {
        let path = param ? pattern.replace(param, escapePart(p.value, p.enc)) : pattern;
        if (routeKey.endsWith("/upload") && p.real) path += `?${up}`;
        else if (q !== null) path += `?${q}`;
        // Bodies only with the route's own method (a wrong method is refused before any body).
        let body = m !== method || m === "GET" || m === "HEAD" ? ({} as Body) : b;
        // Commands that run get a short timeout.
        if (routeKey.endsWith("/execute") && p.real && body.data !== undefined) body = boundExecute(body);
        const r: Req = { method: m, path, headers: { "x-api-key": key, ...h }, body };
        const a = await send(r);
        // A raw parameter with `/`, `?` or `#` may land on another route: any documented code.
        if (p.enc === "raw" && /[/?#]/.test(p.value)) checkAnswer(r, a, ANY_CODE);
        // A wrong method: no route (or a URL the router refuses first).
        else if (m !== method) {
          checkAnswer(r, a, ["ROUTE_NOT_FOUND", "INVALID_REQUEST"]);
          expect([400, 404], `${m} ${path}`).toContain(a.status);
        }
        else checkAnswer(r, a, allowed);
      }),
      { numRuns: spec.target === "sandbox" && pattern.startsWith("/dataplane") ? RUNS * 2 : RUNS, endOnFailure: true },
    );
  });

  it("JSON bodies over 4 MiB are 413 PAYLOAD_TOO_LARGE on every route that takes a body, with a length or chunked", async () => {
    const big = `{"pad":"${"x".repeat(4 * 1024 * 1024)}"}`;
    for (const [routeKey] of ROUTES) {
      const [method, pattern] = routeKey.split(" ") as [string, string];
      if (method === "GET" || method === "HEAD") continue;
      const path = pattern.replace(/:(\w+)/, "no-such-thing").replace("/dataplane/no-such-thing", `/dataplane/${res.sandboxId}`);
      const r: Req = { method, path, headers: { "x-api-key": key }, body: { data: big, type: "application/json" } };
      const a = await send(r);
      checkAnswer(r, a, ["PAYLOAD_TOO_LARGE"]);
      expect(a.status, routeKey).toBe(413);
    }
    // Without a Content-Length the limit is enforced while reading.
    for (const path of ["/v2/sandboxes/boxes", `/dataplane/${res.sandboxId}/execute`, "/api/v2/sandboxes/registries"]) {
      const a = await sendChunked(path, key, big);
      expect(a.status, path).toBe(413);
      expect((JSON.parse(a.body.toString("utf8")) as ErrorJson).code).toBe("PAYLOAD_TOO_LARGE");
    }
  });

  it("headers over Node's limit are 431 on every route, and the server keeps serving", async () => {
    // On a raw socket: Node's 431 carries a body even for HEAD, which an HTTP client would
    // take for the start of the next response.
    for (const [routeKey] of ROUTES) {
      const [method, pattern] = routeKey.split(" ") as [string, string];
      const path = pattern.replace(/:(\w+)/, res.sandboxId);
      for (const headers of [`X-Huge: ${"h".repeat(20 * 1024)}\r\n`, Array.from({ length: 2000 }, (_, i) => `X-H${i}: vvvvvvvv\r\n`).join("")]) {
        const out = await rawExchange(`${method} ${path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${key}\r\n${headers}\r\n`);
        expect(out.split("\r\n")[0], routeKey).toBe("HTTP/1.1 431 Request Header Fields Too Large");
      }
    }
    expect((await send({ method: "GET", path: "/v2/sandboxes/boxes", headers: { "x-api-key": key } })).status).toBe(200);
  });

  it("malformed HTTP on the socket is refused and the server keeps serving", async () => {
    for (const raw of [
      "GARBAGE\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
      "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
      "POST /v2/sandboxes/boxes HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /v2/sandboxes/boxes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET /\u0000 HTTP/1.1\r\nHost: x\r\n\r\n",
      `GET /${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    ]) {
      const out = await rawExchange(raw);
      expect(out, JSON.stringify(raw.slice(0, 80))).toMatch(/^HTTP\/1\.1 4\d\d /);
    }
  });

  it("odd unicode names are refused with 422 and create or rename nothing", async () => {
    const odd = fc.oneof(
      fc.constantFrom("😀", "box-😀", "\u202Ebox", "bo\u0000x", "e\u0301", "ｂｏｘ", "Box", "-box", "box-", "a".repeat(64), "\uD800", "box\n"),
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }).filter((s) => !/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(s)),
    );
    await fc.assert(
      fc.asyncProperty(odd, async (name) => {
        for (const [method, path, body] of [
          ["POST", "/v2/sandboxes/boxes", { snapshot_id: res.snapshotId, name, wait_for_ready: false }],
          ["PATCH", `/v2/sandboxes/boxes/${res.sandboxId}`, { name }],
          ["POST", "/api/v2/sandboxes/registries", { name: `${name}\u0000`, url: "r.example.com" }],
          ["POST", `/v2/sandboxes/boxes/${res.sandboxId}/snapshot`, { name: `-${name}` }],
        ] as const) {
          const r: Req = { method, path, headers: { "x-api-key": key }, body: { data: JSON.stringify(body), type: "application/json" } };
          const a = await send(r);
          const e = checkAnswer(r, a, ["VALIDATION_ERROR"]);
          expect(e?.code, `${method} ${path} ${JSON.stringify(name)}`).toBe("VALIDATION_ERROR");
        }
      }),
      { numRuns: RUNS },
    );
    const boxes = (await (await w.t.call("GET", "/boxes?limit=500")).json()) as { sandboxes: SandboxJson[] };
    expect(boxes.sandboxes.map((b) => b.name)).toEqual([res.sandboxName]);
  });

  it("the cases this fuzzing found answer as documented (each was a 500, a 502, a hang or a bare body)", async () => {
    const H = { "x-api-key": key };
    const expectCode = async (r: Req, code: ErrorCode): Promise<void> => {
      const e = checkAnswer(r, await send(r), [code]);
      expect(e?.code, `${r.method} ${r.path.slice(0, 80)} ${r.body?.type ?? ""}`).toBe(code);
    };
    // Multipart without a usable boundary, or ending inside a part: was 500, or no answer at all.
    const truncated = '--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc';
    for (const type of ["multipart/form-data", "multipart/form-data; boundary=", `multipart/form-data; boundary=${"b".repeat(300)}`]) {
      await expectCode({ method: "POST", path: `/dataplane/${res.sandboxId}/upload?path=/tmp/mp`, headers: H, body: { data: truncated, type } }, "INVALID_REQUEST");
      await expectCode({ method: "POST", path: "/v2/sandboxes/snapshots/build", headers: H, body: { data: truncated, type } }, "INVALID_REQUEST");
    }
    await expectCode({ method: "POST", path: `/dataplane/${res.sandboxId}/upload?path=/tmp/mp`, headers: H, body: { data: truncated, type: "multipart/form-data; boundary=B" } }, "INVALID_REQUEST");
    await expectCode({ method: "POST", path: "/v2/sandboxes/snapshots/build", headers: H, body: { data: truncated.replace('name="file"', 'name="context"'), type: "multipart/form-data; boundary=B" } }, "INVALID_REQUEST");
    // Malformed escapes and over-long parameters: were Fastify's own body (and 414), before the key check.
    await expectCode({ method: "GET", path: "/v2/sandboxes/boxes/%E0%A4%A", headers: H }, "INVALID_REQUEST");
    await expectCode({ method: "GET", path: `/links/${"a".repeat(5000)}` }, "INVALID_REQUEST");
    await expectCode({ method: "GET", path: "/v2/sandboxes/boxes/%" }, "UNAUTHENTICATED");
    // A cursor beyond a safe integer: was 500 (SQLite "datatype mismatch").
    await expectCode({ method: "GET", path: `/v2/sandboxes/registries?cursor=${"9".repeat(30)}`, headers: H }, "VALIDATION_ERROR");
    // A NUL in a command: was 502 SANDBOX_CONNECTION_ERROR (the agent's 500).
    await expectCode({ method: "POST", path: `/dataplane/${res.sandboxId}/execute`, headers: H, body: { data: JSON.stringify({ command: "echo a\u0000b" }), type: "application/json" } }, "VALIDATION_ERROR");
    const frames = await wsSession(`/dataplane/${res.sandboxId}/execute/ws`, key, [JSON.stringify({ type: "execute", command: "echo a\u0000b" })]);
    expect(frames).toMatchObject([{ type: "error", error_type: "CommandError", code: "COMMAND_ERROR" }]);
    // A plain GET of a WebSocket route: was a 404 without a body.
    await expectCode({ method: "GET", path: `/dataplane/${res.sandboxId}/execute/ws`, headers: H }, "ROUTE_NOT_FOUND");
    await expectCode({ method: "GET", path: `/dataplane/${res.sandboxId}/tunnel`, headers: H }, "ROUTE_NOT_FOUND");
  });

  it("an upload the client abandons halfway is ended, raw or multipart: no partial file stays in the sandbox", async () => {
    expect((await w.exec(sb, "mkdir -p /tmp/abandoned")).body.exit_code).toBe(0);
    for (const [type, start] of [
      ["application/octet-stream", "0123456789"],
      ["multipart/form-data; boundary=B", '--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n0123456789'],
    ] as const) {
      const s = connect(Number(base.port), base.hostname);
      await new Promise<void>((resolve) => s.on("connect", resolve));
      s.write(`POST /dataplane/${res.sandboxId}/upload?path=/tmp/abandoned/f HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${key}\r\nContent-Type: ${type}\r\nContent-Length: 1000000\r\n\r\n${start}`);
      await new Promise((r) => setTimeout(r, 500));
      s.destroy();
      // The agent's temporary file goes once the upload is ended (it stayed, with the agent's
      // request open, when a raw upload's client went away).
      let left = "";
      for (let i = 0; i < 50; i++) {
        left = (await w.exec(sb, "ls -A /tmp/abandoned")).body.stdout;
        if (left === "") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(left, type).toBe("");
    }
  });

  describe("paths inside the sandbox stay inside it", () => {
    const hostName = async (): Promise<string> => (await readFile("/etc/hostname", "utf8").catch(() => "")).trim();

    it("download with .. segments, escaped slashes or /proc/1/root serves the sandbox's file, not the host's", async () => {
      const inside = (await w.exec(sb, "cat /etc/hostname")).body.stdout.trim();
      expect(inside).toBe(res.sandboxName);
      expect(await hostName()).not.toBe(inside);
      for (const q of ["/../../../etc/hostname", "%2F..%2F..%2F..%2Fetc%2Fhostname", "/etc/../../../etc/./hostname", "//..//..//etc//hostname", "/proc/1/root/etc/hostname", "/proc/self/root/etc/hostname"]) {
        const a = await send({ method: "GET", path: `/dataplane/${res.sandboxId}/download?path=${q}`, headers: { "x-api-key": key } });
        expect(a.status, q).toBe(200);
        expect(a.body.toString("utf8").trim(), q).toBe(inside);
      }
    });

    it("a symlink to / inside the sandbox resolves inside the sandbox", async () => {
      expect((await w.exec(sb, "ln -sfn / /tmp/rootlink && ln -sfn ../../../../../.. /tmp/uplink")).body.exit_code).toBe(0);
      for (const p of ["/tmp/rootlink/etc/hostname", "/tmp/uplink/etc/hostname"]) {
        const a = await send({ method: "GET", path: `/dataplane/${res.sandboxId}/download?path=${encodeURIComponent(p)}`, headers: { "x-api-key": key } });
        expect(a.status, p).toBe(200);
        expect(a.body.toString("utf8").trim()).toBe(res.sandboxName);
      }
    });

    it("a download link for /../../../etc/hostname serves the sandbox's file", async () => {
      const made = await w.t.call("POST", `/boxes/${res.sandboxId}/download-url`, { path: "/../../../etc/hostname" });
      expect(made.status).toBe(200);
      const { token } = (await made.json()) as { token: string };
      const a = await send({ method: "GET", path: `/links/${token}` });
      expect(a.status).toBe(200);
      expect(a.body.toString("utf8").trim()).toBe(res.sandboxName);
    });

    it("an upload to /../../../tmp/X lands in the sandbox's /tmp, not the host's", async () => {
      const name = `sandbar-fuzz-escape-${randomBytes(6).toString("hex")}`;
      for (const q of [`/../../../../tmp/${name}`, `%2F..%2F..%2Ftmp%2F${name}-2`]) {
        const a = await send({ method: "POST", path: `/dataplane/${res.sandboxId}/upload?path=${q}`, headers: { "x-api-key": key }, body: { data: "inside", type: "application/octet-stream" } });
        expect(a.status, q).toBe(200);
      }
      await expect(access(`/tmp/${name}`)).rejects.toThrow();
      await expect(access(`/tmp/${name}-2`)).rejects.toThrow();
      expect((await w.exec(sb, `cat /tmp/${name} /tmp/${name}-2`)).body.stdout).toBe("insideinside");
    });

    it("glob and grep from /../../.. walk the sandbox's root", async () => {
      const g = await send({ method: "POST", path: `/dataplane/${res.sandboxId}/glob`, headers: { "x-api-key": key }, body: { data: JSON.stringify({ pattern: "*", path: "/../../.." }), type: "application/json" } });
      expect(g.status).toBe(200);
      const paths = ((JSON.parse(g.body.toString("utf8")) as { matches: { path: string }[] }).matches ?? []).map((m) => m.path);
      expect(paths.some((p) => p.endsWith("/bin"))).toBe(true);
      expect(paths.some((p) => p.endsWith("/work"))).toBe(false); // the host's root has /work
      const gr = await send({ method: "POST", path: `/dataplane/${res.sandboxId}/grep`, headers: { "x-api-key": key }, body: { data: JSON.stringify({ pattern: res.sandboxName, path: "/../../etc/hostname" }), type: "application/json" } });
      expect(gr.status).toBe(200);
      expect((JSON.parse(gr.body.toString("utf8")) as { matches: unknown[] }).matches.length).toBe(1);
    });
  });

  it("upgrade requests the router refuses (bad escapes, over-long ids) are answered and leave no socket open", async () => {
    const server = w.t.server.app.server;
    const connections = (): Promise<number> => new Promise((resolve, reject) => server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
    const before = await connections();
    for (const path of ["/dataplane/%/execute/ws", "/dataplane/%zz/tunnel", "/dataplane/%E0%A4%A/execute/ws", `/dataplane/${"a".repeat(5000)}/tunnel`, "/v2/sandboxes/boxes/%"]) {
      for (const [k, code] of [[key, "INVALID_REQUEST"], ["sb_wrong", "UNAUTHENTICATED"]] as const) {
        const r: Req = { method: "GET", path };
        const e = checkAnswer(r, await upgradeStatus(path, k), [code]);
        expect(e?.code, path).toBe(code);
      }
    }
    // Each of those sockets is closed by the server (they used to stay half-open for good,
    // and the server's close() waited on them).
    for (let i = 0; i < 50 && (await connections()) > before; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await connections()).toBeLessThanOrEqual(before);
  });

  it("WebSocket upgrades with odd ids, and odd messages on a real socket, get documented answers", async () => {
    await fc.assert(
      fc.asyncProperty(fc.record({ id: fc.oneof(nastyString, fc.uuid()), route: fc.constantFrom("execute/ws", "tunnel"), e: enc }), async ({ id, route, e }) => {
        const path = `/dataplane/${escapePart(id, e)}/${route}`;
        const a = await upgradeStatus(path, key);
        if (a.status === 101) throw new Error(`upgrade to ${path} opened`);
        checkAnswer({ method: "GET", path }, a, [...COMMON, ...DP]);
      }),
      { numRuns: RUNS },
    );
    const message = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? "null"),
      fc.string({ unit: "binary", maxLength: 50 }),
      fc
        .record(
          {
            type: fc.oneof(fc.constantFrom("execute", "reconnect", "input", "close_stdin", "kill", "resize"), nastyString),
            command: fc.oneof(fc.constantFrom("true", "echo hi", "printf 'a\\0b'", "exit 3", "a\u0000b"), nastyString, wrongValue("str")),
            command_id: fc.oneof(nastyString, fc.uuid(), wrongValue("str")),
            cwd: fc.oneof(fsPath, wrongValue("str")),
            shell: fc.oneof(nastyString, fc.constant("/bin/sh")),
            env: anyValue("map"),
            timeout_seconds: fc.oneof(fc.constantFrom(1, 2, 0.001), wrongValue("num")),
            idle_timeout_seconds: fc.constantFrom(1, 5),
            ttl_seconds: fc.constantFrom(1, 5),
            kill_on_disconnect: fc.constant(true),
            pty: fc.boolean(),
            cols: fc.oneof(fc.integer({ min: -70000, max: 70000 }), fc.constantFrom(0, 1e9), wrongValue("int")),
            rows: fc.oneof(fc.integer({ min: -70000, max: 70000 }), fc.constantFrom(0, 1e9), wrongValue("int")),
            stdout_offset: fc.oneof(fc.integer(), fc.constantFrom(-1, 2 ** 60), wrongValue("int")),
            data: fc.oneof(nastyString, wrongValue("str")),
            close_stdin: fc.boolean(),
          },
          { requiredKeys: ["type"] },
        )
        .map((m) => JSON.stringify(m)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 4 }), async (msgs) => {
        const frames = await wsSession(`/dataplane/${res.sandboxId}/execute/ws`, key, msgs);
        for (const f of frames) {
          expect(["started", "stdout", "stderr", "exit", "error"], JSON.stringify(f)).toContain(f.type);
          if (f.type === "error") {
            expect(["COMMAND_TIMEOUT", "COMMAND_NOT_FOUND", "SESSION_EXPIRED", "COMMAND_ERROR"], JSON.stringify(f)).toContain(f.code);
            expect(typeof f.error).toBe("string");
          }
        }
      }),
      { numRuns: Math.ceil(RUNS / 4) },
    );
  });

  it("service-URL traffic (path and host form) with odd paths and tokens is refused with 401, never forwarded", async () => {
    const sample = fc.record({
      form: fc.constantFrom("path", "host"),
      id: fc.oneof(fc.constant(res.sandboxId), fc.uuid()),
      port: fc.oneof(fc.constantFrom("80", "0", "99999", "2024", "00080"), fc.nat({ max: 65535 }).map(String)),
      rest: fc.oneof(nastyString, fsPath).map((s) => escapePart(s, "raw")),
      token: fc.option(fc.oneof(nastyString.map(headerSafe), fc.constant(res.linkToken), fc.constant(`${res.linkToken.split(".")[0] ?? ""}.AAAA`)), { nil: undefined }),
      cookie: fc.option(nastyString.map((s) => `sandbar_service_token=${escapePart(s, "component")}`), { nil: undefined }),
      method: fc.constantFrom("GET", "POST", "DELETE", "OPTIONS", "PUT"),
    });
    await fc.assert(
      fc.asyncProperty(sample, async (s) => {
        const headers: Record<string, string> = { "x-api-key": key };
        if (s.token !== undefined) headers["x-langsmith-sandbox-service-token"] = s.token;
        if (s.cookie !== undefined) headers.cookie = s.cookie;
        let path: string;
        if (s.form === "path") path = `/svc/${s.id}/${s.port}/${s.rest}`;
        else {
          headers.host = `${s.port}--${s.id}.localhost`;
          path = `/${s.rest}`;
        }
        const r: Req = { method: s.method, path, headers };
        const a = await send(r);
        // A path-form URL that is not a service's (bad port digits, say) falls through to the
        // routes, which the API key opens: 404 there.
        checkAnswer(r, a, ["UNAUTHENTICATED", "INVALID_REQUEST", "ROUTE_NOT_FOUND", "VALIDATION_ERROR"]);
      }),
      { numRuns: RUNS * 2 },
    );
  });
});

/** Cap `timeout` of an execute body (present, a number) at 3 s; wrong types are left alone. */
function boundExecute(b: Body): Body {
  let v: unknown;
  try {
    v = JSON.parse(String(b.data));
  } catch {
    return b;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return b;
  const o = v as Record<string, unknown>;
  if (o.timeout === undefined || (typeof o.timeout === "number" && (o.timeout <= 0 || o.timeout > 3))) o.timeout = 3;
  return { ...b, data: JSON.stringify(o) };
}

/** Upload bodies: raw bytes, multipart (well-formed or not), JSON, nothing. */
const uploadBody: fc.Arbitrary<Body> = fc.oneof(
  fc.oneof(nastyString, fc.constant("")).map((d): Body => ({ data: d, type: "application/octet-stream" })),
  multipartBody(["file", "files", "upload"]),
  fc.tuple(fc.oneof(nastyString, badJson), fc.constantFrom(...JSON_TYPES, ...OTHER_TYPES)).map(([d, t]): Body => ({ data: d, type: t })),
  fc.constant<Body>({}),
);

/** Build bodies: multipart whose `name` can never be valid, so no build starts. */
const buildBody: fc.Arbitrary<Body> = multipartBody(["name", "dockerfile", "build_args", "target", "fs_capacity_bytes", "context"], (field, value) => (field === "name" ? `-${value}` : value));

function sendChunked(path: string, key: string, data: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: base.hostname, port: base.port, method: "POST", path, headers: { "x-api-key": key, "content-type": "application/json", "transfer-encoding": "chunked" }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    // The server may answer and close before all of it is sent.
    req.on("error", (e) => (e.message.includes("EPIPE") || e.message.includes("ECONNRESET") ? undefined : reject(e)));
    for (let i = 0; i < data.length; i += 64 * 1024) req.write(data.slice(i, i + 64 * 1024));
    req.end();
  });
}

/** Write bytes on a fresh socket; the first answer line and whatever follows. */
function rawExchange(data: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(Number(base.port), base.hostname, () => s.write(data));
    let out = "";
    const done = (): void => {
      s.destroy();
      resolve(out);
    };
    s.on("data", (c: Buffer) => (out += c.toString("latin1")));
    s.on("end", done);
    s.on("error", done);
    setTimeout(done, 5000);
  });
}

/** The answer to a WebSocket upgrade request: 101 when it opens. */
function upgradeStatus(path: string, key: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: base.hostname,
      port: base.port,
      path,
      agent: false,
      headers: { "x-api-key": key, connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": randomBytes(16).toString("base64") },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, headers: res.headers, body: Buffer.alloc(0) });
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Open a socket, send `msgs`, collect JSON frames until it closes or 1.5 s pass. */
type Frame = { type?: unknown; code?: unknown; error?: unknown; error_type?: unknown };

function wsSession(path: string, key: string, msgs: string[]): Promise<Frame[]> {
  return new Promise((resolve, reject) => {
    const frames: Frame[] = [];
    const ws = new WebSocket(`ws://${base.host}${path}`, { headers: { "x-api-key": key } });
    const timer = setTimeout(() => ws.terminate(), 1500);
    ws.on("open", () => {
      for (const m of msgs) ws.send(m);
    });
    ws.on("message", (d: Buffer) => {
      try {
        frames.push(JSON.parse(d.toString("utf8")) as { type?: unknown });
      } catch {
        frames.push({ type: `not JSON: ${d.toString("utf8").slice(0, 100)}` });
      }
    });
    ws.on("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode ?? 0}`)));
    ws.on("close", () => {
      clearTimeout(timer);
      resolve(frames);
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
