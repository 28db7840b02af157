import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";

/**
 * Encryption at rest for secrets the server must use again (registry passwords):
 * AES-256-GCM with a key kept in the data dir (mode 0600), made on first start. A row of the
 * database alone does not reveal a password; the data dir with its key does, by design.
 */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  static async load(path: string): Promise<SecretBox> {
    let hex: string;
    try {
      hex = (await readFile(path, "utf8")).trim();
    } catch {
      hex = randomBytes(32).toString("hex");
      await writeFile(path, `${hex}\n`, { mode: 0o600, flag: "wx" }).catch(async () => {
        // Another process made it first: use theirs.
        hex = (await readFile(path, "utf8")).trim();
      });
    }
    const key = Buffer.from(hex, "hex");
    if (key.length !== 32) throw new Error(`${path} does not hold a 256-bit key`);
    return new SecretBox(key);
  }

  /** `v1.<iv>.<tag>.<ciphertext>`, base64url parts. */
  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    const data = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return ["v1", iv, c.getAuthTag(), data].map((p) => (typeof p === "string" ? p : p.toString("base64url"))).join(".");
  }

  open(sealed: string): string {
    const [v, iv, tag, data] = sealed.split(".");
    if (v !== "v1" || !iv || !tag || data === undefined) throw new Error("not a sealed secret");
    const d = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64url"));
    d.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([d.update(Buffer.from(data, "base64url")), d.final()]).toString("utf8");
  }
}
