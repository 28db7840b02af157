/**
 * One interface over the two clients of a sandbar server, the official LangSmith sandbox
 * client (langsmith@0.12.0) and @sandbar/sdk, so one scenario list runs through both and
 * they stay in step.
 */
import * as ls from "langsmith/experimental/sandbox";
import * as sb from "@sandbar/sdk";

export interface RunResult {
  stdout: string;
  stderr: string;
  exit_code: number;
}

export interface AdapterSandbox {
  name: string;
  id: string;
  run(command: string, opts?: { timeout?: number; env?: Record<string, string>; cwd?: string }): Promise<RunResult>;
  write(path: string, content: string | Uint8Array): Promise<void>;
  read(path: string): Promise<Uint8Array>;
  delete(): Promise<void>;
}

export interface AdapterSnapshot {
  id: string;
  name: string;
  status: string;
}

/** What a thrown error means, in client-neutral terms. */
export type ErrorKind = "not_found" | "auth" | "conflict" | "validation" | "command_timeout" | "creation" | "other";

export interface ClientAdapter {
  name: string;
  createSnapshot(name: string, image: string, fsCapacityBytes: number): Promise<AdapterSnapshot>;
  getSnapshot(id: string): Promise<AdapterSnapshot>;
  listSnapshots(opts: { nameContains?: string; limit?: number; offset?: number }): Promise<AdapterSnapshot[]>;
  deleteSnapshot(id: string): Promise<void>;
  createSandbox(opts: { snapshotId?: string; snapshotName?: string; name?: string; idleTtlSeconds?: number }): Promise<AdapterSandbox>;
  getSandbox(name: string): Promise<AdapterSandbox>;
  listSandboxes(): Promise<{ name: string }[]>;
  updateSandbox(name: string, opts: { newName?: string; idleTtlSeconds?: number }): Promise<{ name: string; idle_ttl_seconds: number }>;
  deleteSandbox(name: string): Promise<void>;
  /** Classify an error this client threw; `resourceType` for not-found errors. */
  classify(e: unknown): { kind: ErrorKind; resourceType?: string };
}

export function langsmithAdapter(endpoint: string, apiKey: string): ClientAdapter {
  const c = new ls.SandboxClient({ apiEndpoint: `${endpoint}/v2/sandboxes`, apiKey });
  const wrap = (s: ls.Sandbox): AdapterSandbox => ({
    name: s.name,
    id: s.id ?? "",
    run: async (command, opts = {}) => {
      const r = await s.run(command, opts);
      return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code };
    },
    write: (p, content) => s.write(p, content),
    read: (p) => s.read(p),
    delete: () => s.delete(),
  });
  return {
    name: "langsmith@0.12.0",
    createSnapshot: (name, image, cap) => c.createSnapshot(name, image, cap),
    getSnapshot: (id) => c.getSnapshot(id),
    listSnapshots: (o) => c.listSnapshots(o),
    deleteSnapshot: (id) => c.deleteSnapshot(id),
    createSandbox: async (o) => wrap(o.snapshotId ? await c.createSandbox(o.snapshotId, { name: o.name, idleTtlSeconds: o.idleTtlSeconds }) : await c.createSandbox({ snapshotName: o.snapshotName, name: o.name, idleTtlSeconds: o.idleTtlSeconds })),
    getSandbox: async (n) => wrap(await c.getSandbox(n)),
    listSandboxes: async () => (await c.listSandboxes()).map((s) => ({ name: s.name })),
    updateSandbox: async (n, o) => {
      const s = await c.updateSandbox(n, { newName: o.newName, idleTtlSeconds: o.idleTtlSeconds });
      return { name: s.name, idle_ttl_seconds: s.idle_ttl_seconds ?? -1 };
    },
    deleteSandbox: (n) => c.deleteSandbox(n),
    classify: (e) => {
      if (e instanceof ls.LangSmithResourceNotFoundError) return { kind: "not_found", resourceType: e.resourceType };
      if (e instanceof ls.LangSmithSandboxAuthenticationError) return { kind: "auth" };
      if (e instanceof ls.LangSmithResourceNameConflictError) return { kind: "conflict" };
      if (e instanceof ls.LangSmithValidationError) return { kind: "validation" };
      if (e instanceof ls.LangSmithCommandTimeoutError) return { kind: "command_timeout" };
      if (e instanceof ls.LangSmithResourceCreationError) return { kind: "creation" };
      return { kind: "other" };
    },
  };
}

export function sandbarAdapter(endpoint: string, apiKey: string): ClientAdapter {
  const c = new sb.SandboxClient({ endpoint, apiKey });
  const wrap = (s: sb.Sandbox): AdapterSandbox => ({
    name: s.name,
    id: s.id,
    run: (command, opts = {}) => s.run(command, opts),
    write: (p, content) => s.write(p, content),
    read: (p) => s.read(p),
    delete: () => s.delete(),
  });
  return {
    name: "@sandbar/sdk",
    createSnapshot: (name, image, cap) => c.createSnapshot(name, image, cap),
    getSnapshot: (id) => c.getSnapshot(id),
    listSnapshots: (o) => c.listSnapshots(o),
    deleteSnapshot: (id) => c.deleteSnapshot(id),
    createSandbox: async (o) => wrap(await c.createSandbox({ snapshotId: o.snapshotId, snapshotName: o.snapshotName, name: o.name, idleTtlSeconds: o.idleTtlSeconds })),
    getSandbox: async (n) => wrap(await c.getSandbox(n)),
    listSandboxes: async () => (await c.listSandboxes()).map((s) => ({ name: s.name })),
    updateSandbox: async (n, o) => {
      const s = await c.updateSandbox(n, { newName: o.newName, idleTtlSeconds: o.idleTtlSeconds });
      return { name: s.name, idle_ttl_seconds: s.info.idle_ttl_seconds };
    },
    deleteSandbox: (n) => c.deleteSandbox(n),
    classify: (e) => {
      if (e instanceof sb.ResourceNotFoundError) return { kind: "not_found", resourceType: e.resourceType };
      if (e instanceof sb.AuthenticationError) return { kind: "auth" };
      if (e instanceof sb.ResourceNameConflictError) return { kind: "conflict" };
      if (e instanceof sb.ValidationError) return { kind: "validation" };
      if (e instanceof sb.CommandTimeoutError) return { kind: "command_timeout" };
      if (e instanceof sb.ResourceCreationError) return { kind: "creation" };
      return { kind: "other" };
    },
  };
}
