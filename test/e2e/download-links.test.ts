/** Download links: a tokenized URL per file that serves GET/HEAD/Range without an API key. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxClient } from "@sandbar/sdk";
import * as ls from "langsmith/experimental/sandbox";
import { startWorld, type World } from "../support/fixture.js";

describe("download links", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld(["busybox"]);
  });
  afterAll(async () => {
    await w?.stop();
  });

  it("serves the file, HEAD and ranges without a key, through both clients' links", async () => {
    const c = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    const sb = await c.createSandbox({ snapshotName: "busybox", name: "links" });
    await sb.write("/srv/report.txt", "0123456789");
    const ours = await sb.generateDownloadURL("/srv/report.txt", { expiresInSeconds: 600, contentType: "text/plain", contentDisposition: "attachment" });
    expect(ours.expires_at).not.toBeNull();
    const got = await fetch(ours.download_url);
    expect(got.status).toBe(200);
    expect(await got.text()).toBe("0123456789");
    expect(got.headers.get("content-type")).toBe("text/plain");
    expect(got.headers.get("content-disposition")).toBe('attachment; filename="report.txt"');
    const head = await fetch(ours.download_url, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe("10");
    const part = await fetch(ours.download_url, { headers: { range: "bytes=3-5" } });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe("345");

    const lc = new ls.SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey });
    const theirs = await lc.generateDownloadURL("links", "/srv/report.txt");
    expect(theirs.expires_at).toBeNull();
    expect(await (await fetch(theirs.download_url)).text()).toBe("0123456789");
  });

  it("refuses expired, forged and repointed links with 401", async () => {
    const c = new SandboxClient({ endpoint: w.t.url, apiKey: w.t.apiKey });
    const sb = await c.createSandbox({ snapshotName: "busybox" });
    await sb.write("/a.txt", "a");
    await sb.write("/b.txt", "b");
    const short = await sb.generateDownloadURL("/a.txt", { expiresInSeconds: 1 });
    expect((await fetch(short.download_url)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2100));
    const expired = await fetch(short.download_url);
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    const good = await sb.generateDownloadURL("/a.txt");
    const [body, mac] = good.token.split(".") as [string, string];
    // Repoint the link at another file, keeping the signature: refused.
    const claims = JSON.parse(Buffer.from(body, "base64url").toString()) as { p: string };
    claims.p = "/b.txt";
    const repointed = `${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${mac}`;
    expect((await fetch(good.download_url.replace(good.token, repointed))).status).toBe(401);
    expect((await fetch(good.download_url.replace(good.token, `${body}.AAAA`))).status).toBe(401);
    expect((await fetch(`${w.t.url}/links/garbage`)).status).toBe(401);
    // A missing file behind a genuine link is a 404, and a relative path is refused when minting.
    const missing = await sb.generateDownloadURL("/nope.txt");
    expect((await fetch(missing.download_url)).status).toBe(404);
    await expect(sb.generateDownloadURL("relative.txt")).rejects.toMatchObject({ code: "VALIDATION_ERROR" });
  });
});
