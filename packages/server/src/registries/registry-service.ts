import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { createRegistryRequest, listRegistriesQuery, updateRegistryRequest, type CreateRegistryRequest, type ListRegistriesQuery, type RegistryView, type UpdateRegistryRequest } from "@sandbar/shared";
import type { Store } from "../store/store.js";
import { NameTakenError } from "../store/store.js";
import type { RegistryRecord } from "../store/records.js";
import type { SecretBox } from "../auth/secret-box.js";
import type { RegistryCredentials } from "../images/image-puller.js";
import { parseImageRef } from "../images/image-ref.js";
import { parse } from "../http/validate.js";
import { SandbarError, validationError } from "../util/errors.js";
import { newId, nowIso } from "../util/ids.js";

const DOCKER_HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

/** host[:port] of a registry address, normalised the way image references name registries. */
export function registryHost(url: string): string {
  const host = url.replace(/^https?:\/\//i, "").split("/")[0]?.toLowerCase() ?? "";
  return DOCKER_HUB_HOSTS.has(host) ? "docker.io" : host;
}

/**
 * Private registry credentials per workspace. Passwords are sealed with the server's
 * {@link SecretBox} before they reach the store and are opened only to pull an image.
 */
export class RegistryService {
  constructor(
    private readonly store: Store,
    private readonly box: SecretBox,
  ) {}

  view(r: RegistryRecord): RegistryView {
    return {
      id: r.id,
      name: r.name,
      url: r.url,
      auth_type: "DOCKER_CONFIG",
      provider: "DOCKER_REGISTRY",
      username: r.username,
      has_password: r.password_enc !== null,
      created_at: r.created_at,
      updated_at: r.updated_at,
    };
  }

  async create(workspaceId: string, req: CreateRegistryRequest): Promise<RegistryRecord> {
    const now = nowIso();
    const rec: RegistryRecord = {
      id: newId(),
      workspace_id: workspaceId,
      name: req.name,
      url: req.url,
      host: registryHost(req.url),
      username: req.username ?? null,
      password_enc: req.password !== undefined ? this.box.seal(req.password) : null,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.store.insertRegistry(rec);
    } catch (e) {
      if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `registry name '${rec.name}' is already in use`);
      throw e;
    }
    return rec;
  }

  async get(workspaceId: string, idOrName: string): Promise<RegistryRecord> {
    const r = await this.store.getRegistry(workspaceId, idOrName);
    if (!r) throw new SandbarError("REGISTRY_NOT_FOUND", `registry '${idOrName}' not found`);
    return r;
  }

  async list(workspaceId: string, q: ListRegistriesQuery): Promise<{ items: RegistryRecord[]; offset: number; nextCursor: string | null }> {
    const cursorMode = q.page_size !== undefined || q.cursor !== undefined;
    const limit = cursorMode ? (q.page_size ?? 20) : (q.limit ?? 50);
    const offset = cursorMode ? Number(q.cursor ?? 0) : (q.offset ?? 0);
    // A cursor of more digits than a safe integer reached SQLite as a REAL offset: 500
    // "datatype mismatch". No page starts there; say so.
    if (!Number.isSafeInteger(offset)) {
      throw new SandbarError("VALIDATION_ERROR", "cursor: must be a cursor from next_cursor", [{ loc: ["query", "cursor"], msg: "cursor: must be a cursor from next_cursor", type: "value_error" }]);
    }
    // One more than asked tells whether another page exists.
    const rows = await this.store.listRegistries(workspaceId, { nameContains: q.name_contains, limit: limit + 1, offset });
    const items = rows.slice(0, limit);
    return { items, offset: offset + items.length, nextCursor: rows.length > limit ? String(offset + limit) : null };
  }

  async update(workspaceId: string, idOrName: string, req: UpdateRegistryRequest): Promise<RegistryRecord> {
    const r = await this.get(workspaceId, idOrName);
    const patch: Partial<RegistryRecord> = { updated_at: nowIso() };
    if (req.name !== undefined) patch.name = req.name;
    if (req.url !== undefined) {
      patch.url = req.url;
      patch.host = registryHost(req.url);
    }
    if (req.username !== undefined) patch.username = req.username;
    if (req.password !== undefined) patch.password_enc = this.box.seal(req.password);
    try {
      await this.store.updateRegistry(r.id, patch);
    } catch (e) {
      if (e instanceof NameTakenError) throw new SandbarError("NAME_CONFLICT", `registry name '${req.name ?? ""}' is already in use`);
      throw e;
    }
    return this.get(workspaceId, r.id);
  }

  async delete(workspaceId: string, idOrName: string): Promise<void> {
    const r = await this.get(workspaceId, idOrName);
    await this.store.deleteRegistry(r.id);
  }

  /**
   * Credentials to pull `image` with: a registered registry's (its host must be the image's
   * registry) or inline ones (never stored). Undefined when the request names none.
   */
  async credentialsFor(
    workspaceId: string,
    image: string,
    req: { registry_id?: string; registry_url?: string; registry_username?: string; registry_password?: string },
  ): Promise<{ credentials?: RegistryCredentials; registryId: string | null }> {
    let imageRegistry: string;
    try {
      imageRegistry = registryHost(parseImageRef(image).registry);
    } catch {
      return { registryId: null }; // the pull reports the bad reference
    }
    if (req.registry_id !== undefined) {
      const r = await this.get(workspaceId, req.registry_id);
      if (r.host !== imageRegistry) throw validationError("registry_id", `registry '${r.name}' is ${r.host}, but the image is on ${imageRegistry}`);
      if (r.username === null || r.password_enc === null) return { registryId: r.id };
      let password: string;
      try {
        password = this.box.open(r.password_enc);
      } catch {
        throw validationError("registry_id", `the stored password of registry '${r.name}' cannot be decrypted (the server's secret-key changed); set it again with PATCH /registries/${r.name}`);
      }
      return { credentials: { username: r.username, password }, registryId: r.id };
    }
    if (req.registry_url !== undefined && registryHost(req.registry_url) !== imageRegistry) {
      throw validationError("registry_url", `registry_url is ${registryHost(req.registry_url)}, but the image is on ${imageRegistry}`);
    }
    if (req.registry_username !== undefined && req.registry_password !== undefined) {
      return { credentials: { username: req.registry_username, password: req.registry_password }, registryId: null };
    }
    return { registryId: null };
  }
}

const nameParams = z.object({ name: z.string().min(1).max(128) });

/** Control plane: /registries CRUD (mounted under both control prefixes). */
export function registryRoutes(app: FastifyInstance, registries: RegistryService): void {
  app.post("/registries", async (req, reply) => {
    const body = parse(createRegistryRequest, req.body, "body");
    return reply.status(201).send(registries.view(await registries.create(req.workspaceId, body)));
  });
  app.get("/registries", async (req) => {
    const q = parse(listRegistriesQuery, req.query, "query");
    const page = await registries.list(req.workspaceId, q);
    const views = page.items.map((r) => registries.view(r));
    return { items: views, registries: views, offset: page.offset, next_cursor: page.nextCursor };
  });
  app.get("/registries/:name", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    return registries.view(await registries.get(req.workspaceId, name));
  });
  app.patch("/registries/:name", async (req) => {
    const { name } = parse(nameParams, req.params, "params");
    const body = parse(updateRegistryRequest, req.body ?? {}, "body");
    return registries.view(await registries.update(req.workspaceId, name, body));
  });
  app.delete("/registries/:name", async (req, reply) => {
    const { name } = parse(nameParams, req.params, "params");
    await registries.delete(req.workspaceId, name);
    return reply.status(204).send();
  });
}
