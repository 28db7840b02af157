import type { Store } from "../store/store.js";
import type { ApiKeyRecord, WorkspaceRecord } from "../store/records.js";
import { newId, newSecret, nowIso, sha256Hex } from "../util/ids.js";
import { SandbarError } from "../util/errors.js";

/** A key as shown to operators: never the secret after creation. */
export interface ApiKeyView {
  id: string;
  name: string;
  workspace: string;
  prefix: string;
  created_at: string;
  revoked_at: string | null;
}

export const DEFAULT_WORKSPACE = "default";

/** Workspaces and their API keys. Keys are stored as SHA-256 hashes only. */
export class ApiKeyService {
  constructor(private readonly store: Store) {}

  async ensureWorkspace(name: string): Promise<WorkspaceRecord> {
    const found = await this.store.getWorkspaceByName(name);
    if (found) return found;
    const ws: WorkspaceRecord = { id: newId(), name, created_at: nowIso() };
    await this.store.createWorkspace(ws);
    return ws;
  }

  /** Create a key; the secret is returned once and never again. */
  async createKey(workspaceName: string, name: string, secret: string = `sb_${newSecret()}`): Promise<{ key: string; view: ApiKeyView }> {
    const ws = await this.ensureWorkspace(workspaceName);
    const rec: ApiKeyRecord = {
      id: newId(),
      workspace_id: ws.id,
      name,
      key_hash: sha256Hex(secret),
      prefix: secret.slice(0, 8),
      created_at: nowIso(),
      revoked_at: null,
    };
    await this.store.createApiKey(rec);
    return { key: secret, view: this.view(rec, ws.name) };
  }

  /** Make sure `secret` is a live key of the default workspace (SANDBAR_API_KEY). */
  async ensureBootstrapKey(secret: string): Promise<void> {
    const found = await this.store.findApiKeyByHash(sha256Hex(secret));
    if (found) {
      if (found.revoked_at) throw new Error("SANDBAR_API_KEY names a revoked key");
      return;
    }
    await this.createKey(DEFAULT_WORKSPACE, "bootstrap", secret);
  }

  /** The workspace id of a live key, or UNAUTHENTICATED. */
  async authenticate(secret: string | undefined): Promise<string> {
    if (!secret) throw new SandbarError("UNAUTHENTICATED", "missing X-Api-Key header");
    const rec = await this.store.findApiKeyByHash(sha256Hex(secret));
    if (!rec || rec.revoked_at) throw new SandbarError("UNAUTHENTICATED", "invalid or revoked API key");
    return rec.workspace_id;
  }

  async list(): Promise<ApiKeyView[]> {
    const workspaces = new Map((await this.store.listWorkspaces()).map((w) => [w.id, w.name]));
    return (await this.store.listApiKeys()).map((k) => this.view(k, workspaces.get(k.workspace_id) ?? k.workspace_id));
  }

  /** Revoke by id or by prefix (unique match required). */
  async revoke(idOrPrefix: string): Promise<ApiKeyView> {
    const keys = await this.list();
    const matches = keys.filter((k) => k.id === idOrPrefix || k.prefix === idOrPrefix);
    const match = matches[0];
    if (!match || matches.length > 1) throw new SandbarError("API_KEY_NOT_FOUND", `no single API key matches '${idOrPrefix}'`);
    if (match.revoked_at) return match;
    const at = nowIso();
    await this.store.revokeApiKey(match.id, at);
    return { ...match, revoked_at: at };
  }

  private view(k: ApiKeyRecord, workspace: string): ApiKeyView {
    return { id: k.id, name: k.name, workspace, prefix: k.prefix, created_at: k.created_at, revoked_at: k.revoked_at };
  }
}
