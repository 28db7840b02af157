import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SecretBox } from "./secret-box.js";

describe("SecretBox", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const fresh = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), "secret-box-"));
    dirs.push(d);
    return join(d, "key");
  };

  it("round-trips, never stores the plain text, and uses a fresh nonce each time", async () => {
    const box = await SecretBox.load(await fresh());
    const a = box.seal("hunter2");
    const b = box.seal("hunter2");
    expect(a).not.toContain("hunter2");
    expect(a).not.toBe(b);
    expect(box.open(a)).toBe("hunter2");
  });

  it("keeps its key in a 0600 file and reuses it", async () => {
    const path = await fresh();
    const sealed = (await SecretBox.load(path)).seal("s3cret");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await SecretBox.load(path)).open(sealed)).toBe("s3cret");
    expect((await readFile(path, "utf8")).trim()).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses tampered or foreign ciphertexts", async () => {
    const box = await SecretBox.load(await fresh());
    const other = await SecretBox.load(await fresh());
    const sealed = box.seal("value");
    const parts = sealed.split(".");
    parts[3] = Buffer.from("other").toString("base64url");
    expect(() => box.open(parts.join("."))).toThrow();
    expect(() => other.open(sealed)).toThrow();
    expect(() => box.open("garbage")).toThrow(/not a sealed secret/);
  });
});
