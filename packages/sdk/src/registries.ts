import type { RegistryView } from "@sandbar/shared";
import { call, callJson, type HttpSettings } from "./http.js";

/**
 * A private registry as the server describes it (snake_case, as on the wire). The password is
 * never returned: `has_password` says whether one is stored. `auth_type` is always
 * `"DOCKER_CONFIG"` (username and password) and `provider` `"DOCKER_REGISTRY"`.
 *
 * @example
 * ```ts
 * const r: Registry = await client.registries.get("ghcr");
 * console.log(r.id, r.url, r.username, r.has_password);
 * ```
 */
export type Registry = RegistryView;

/**
 * Fields of {@link Registries.create}. `username` and `password` go together (both or
 * neither; without them pulls through the registry are anonymous).
 *
 * @example
 * ```ts
 * const opts: CreateRegistryOptions = { name: "ghcr", url: "https://ghcr.io", username: "me", password: token };
 * await client.registries.create(opts);
 * ```
 */
export interface CreateRegistryOptions {
  /** Unique in the workspace: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`. */
  name: string;
  /**
   * The registry's address, `https://host[:port]` or `host[:port]` (a path is ignored). Its
   * `host[:port]` must be the registry of the images pulled with it.
   */
  url: string;
  username?: string;
  /** Sealed by the server before it is stored; never returned. */
  password?: string;
}

/**
 * Changes of {@link Registries.update}; omitted fields stay as they are.
 *
 * @example
 * ```ts
 * const change: UpdateRegistryOptions = { password: newToken };
 * await client.registries.update("ghcr", change);
 * ```
 */
export interface UpdateRegistryOptions {
  /** Rename the registry. */
  name?: string;
  url?: string;
  username?: string;
  /** Replace the stored password. */
  password?: string;
}

/**
 * Private registry credentials of the workspace, as `client.registries`. A snapshot built with
 * `registryId` pulls its image with the registry's username and password; the password is
 * stored encrypted by the server and no call ever returns it.
 *
 * @example
 * ```ts
 * const reg = await client.registries.create({ name: "corp", url: "registry.corp.example:5000", username: "ci", password: secret });
 * await client.createSnapshot("app", "registry.corp.example:5000/team/app:1.4", undefined, { registryId: "corp", timeout: 600 });
 * for (const r of await client.registries.list({ nameContains: "corp" })) console.log(r.name, r.url);
 * await client.registries.update("corp", { password: rotated });
 * await client.registries.delete(reg.id);
 * ```
 */
export class Registries {
  /** Made by {@link SandboxClient}; use `client.registries`. */
  constructor(private readonly http: HttpSettings) {}

  private url(path = ""): string {
    return `${this.http.baseUrl}/registries${path}`;
  }

  /**
   * Register a registry. `ResourceNameConflictError` when the name is taken,
   * `ValidationError` for a bad name or address, or a username without a password.
   *
   * @example `const r = await client.registries.create({ name: "ghcr", url: "https://ghcr.io", username: "me", password: token })`
   */
  create(opts: CreateRegistryOptions): Promise<Registry> {
    return callJson<Registry>(this.http, this.url(), "POST", { name: opts.name, url: opts.url, username: opts.username, password: opts.password });
  }

  /**
   * The workspace's registries, newest first (one page: `limit` default 50, at most 500).
   *
   * @example `const regs = await client.registries.list({ nameContains: "gh", limit: 100 })`
   */
  async list(opts: { nameContains?: string; limit?: number; offset?: number } = {}): Promise<Registry[]> {
    const q = new URLSearchParams();
    if (opts.nameContains !== undefined) q.set("name_contains", opts.nameContains);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.offset !== undefined) q.set("offset", String(opts.offset));
    const r = await callJson<{ items?: Registry[]; registries?: Registry[] }>(this.http, this.url(q.toString() ? `?${q.toString()}` : ""), "GET");
    return r.items ?? r.registries ?? [];
  }

  /**
   * A registry by name or id; `ResourceNotFoundError` (code `REGISTRY_NOT_FOUND`) when none.
   *
   * @example `const { has_password } = await client.registries.get("ghcr")`
   */
  get(nameOrId: string): Promise<Registry> {
    return callJson<Registry>(this.http, this.url(`/${encodeURIComponent(nameOrId)}`), "GET");
  }

  /**
   * Rename a registry or change its address, username or password.
   *
   * @example `await client.registries.update("ghcr", { username: "bot", password: botToken })`
   */
  update(nameOrId: string, changes: UpdateRegistryOptions): Promise<Registry> {
    const body = { name: changes.name, url: changes.url, username: changes.username, password: changes.password };
    return callJson<Registry>(this.http, this.url(`/${encodeURIComponent(nameOrId)}`), "PATCH", body, { idempotent: changes.name === undefined });
  }

  /**
   * Delete a registry and its stored password. Snapshots built with it stay usable.
   *
   * @example `await client.registries.delete("ghcr")`
   */
  async delete(nameOrId: string): Promise<void> {
    await call(this.http, this.url(`/${encodeURIComponent(nameOrId)}`), { method: "DELETE" });
  }
}
