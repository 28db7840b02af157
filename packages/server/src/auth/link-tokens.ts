import { createHmac, timingSafeEqual } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { newSecret } from "../util/ids.js";

/** What a download link is pinned to. */
export interface DownloadClaims {
  /** Sandbox id. */
  s: string;
  /** Workspace id. */
  w: string;
  /** Absolute path inside the sandbox. */
  p: string;
  /** Expiry, Unix seconds; absent = never. */
  e?: number;
  /** Content-Type and Content-Disposition to serve with. */
  ct?: string;
  cd?: "attachment" | "inline";
}

/** What a service-URL token is pinned to: one port of one sandbox. */
export interface ServiceClaims {
  k: "svc";
  /** Sandbox id. */
  s: string;
  /** Workspace id. */
  w: string;
  /** Port inside the sandbox. */
  port: number;
  /** Expiry, Unix seconds. */
  e: number;
}

/**
 * Signed, self-contained tokens (HMAC-SHA256 with a server secret kept in the data dir):
 * nothing to store, and a link cannot be repointed at another sandbox, file or header.
 */
export class LinkTokens {
  private constructor(private readonly key: Buffer) {}

  /** Load the server's signing key, creating it on first start. */
  static async load(path: string): Promise<LinkTokens> {
    let secret: string;
    try {
      secret = (await readFile(path, "utf8")).trim();
    } catch {
      secret = newSecret();
      await writeFile(path, `${secret}\n`, { mode: 0o600 });
    }
    return new LinkTokens(Buffer.from(secret, "utf8"));
  }

  sign(claims: DownloadClaims | ServiceClaims): string {
    const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
    return `${body}.${this.mac(body)}`;
  }

  /** The claims of a genuine, unexpired download token, else undefined. */
  verify(token: string, nowSeconds = Date.now() / 1000): DownloadClaims | undefined {
    const claims = this.open(token, nowSeconds);
    if (!claims || "k" in claims || typeof claims.p !== "string") return undefined;
    return claims as unknown as DownloadClaims;
  }

  /** The claims of a genuine, unexpired service-URL token, else undefined. */
  verifyService(token: string, nowSeconds = Date.now() / 1000): ServiceClaims | undefined {
    const claims = this.open(token, nowSeconds);
    if (!claims || claims.k !== "svc" || typeof claims.port !== "number" || typeof claims.e !== "number") return undefined;
    return claims as unknown as ServiceClaims;
  }

  private open(token: string, nowSeconds: number): Record<string, unknown> | undefined {
    const [body, mac] = token.split(".");
    if (!body || !mac || token.split(".").length !== 2) return undefined;
    const want = Buffer.from(this.mac(body));
    const got = Buffer.from(mac);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
    let claims: Record<string, unknown>;
    try {
      claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    if (typeof claims !== "object" || claims === null || typeof claims.s !== "string" || typeof claims.w !== "string") return undefined;
    if (claims.e !== undefined && (typeof claims.e !== "number" || claims.e < nowSeconds)) return undefined;
    return claims;
  }

  private mac(body: string): string {
    return createHmac("sha256", this.key).update(body).digest("base64url");
  }
}
