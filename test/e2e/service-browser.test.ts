import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser } from "playwright-core";
import { SandboxClient, ServiceUrl as LangSmithServiceUrl } from "langsmith/experimental/sandbox";
import { startWorld, type SandboxJson, type World } from "../support/fixture.js";
import { SERVICE_APP, SERVICE_APP_PATH, startServiceApp } from "../support/service-app.js";

/** Debian's chromium package (setup.sh installs it). */
const CHROMIUM = process.env["SANDBAR_TEST_CHROMIUM"] ?? "/usr/bin/chromium";

interface ServiceUrl {
  browser_url: string;
  service_url: string;
  token: string;
}

describe("service URLs in a real browser and through the official client", () => {
  let w: World;
  let app: SandboxJson;
  let browser: Browser;

  const mint = async (port: number, expires?: number): Promise<ServiceUrl> => {
    const res = await w.t.call("POST", `/boxes/${app.name}/service-url`, { port, ...(expires ? { expires_in_seconds: expires } : {}) });
    expect(res.status).toBe(200);
    return (await res.json()) as ServiceUrl;
  };

  beforeAll(async () => {
    w = await startWorld(["python"]);
    app = await w.createSandbox({ snapshot_id: w.snapshots.python, name: "browser-app" });
    const up = await fetch(`${app.dataplane_url}/upload?path=${SERVICE_APP_PATH}`, {
      method: "POST",
      headers: { "x-api-key": w.t.apiKey, "content-type": "application/octet-stream" },
      body: SERVICE_APP,
    });
    expect(up.status).toBeLessThan(300);
    const r = await w.exec(app, startServiceApp(8000));
    expect(r.body.exit_code, r.body.stdout + r.body.stderr).toBe(0);
    // `python3 -m http.server`, as the browser check names it.
    const r2 = await w.exec(app, "mkdir -p /site && echo '<h1 id=t>served by http.server</h1>' > /site/index.html && cd /site && (nohup python3 -m http.server 8080 >/tmp/hs.log 2>&1 &) && sleep 0.5");
    expect(r2.body.exit_code).toBe(0);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  });
  afterAll(async () => {
    await browser?.close();
    await w?.stop();
  });

  it("opening browser_url shows the page python3 -m http.server serves", async () => {
    const svc = await mint(8080);
    const page = await browser.newPage();
    try {
      const res = await page.goto(svc.browser_url);
      expect(res?.status()).toBe(200);
      expect(new URL(page.url()).pathname).toBe("/");
      expect(new URL(page.url()).hostname).toBe(`8080--${app.id}.localhost`);
      expect(await page.textContent("#t")).toBe("served by http.server");
      // The token is in an HttpOnly cookie: page scripts cannot read it.
      expect(await page.evaluate(() => document.cookie)).toBe("");
      const cookies = await page.context().cookies();
      expect(cookies.find((c) => c.name === "sandbar_service_token")?.httpOnly).toBe(true);
    } finally {
      await page.close();
    }
  });

  it("a WebSocket echo and a server-sent event stream work from the page", async () => {
    const svc = await mint(8000);
    const page = await browser.newPage();
    try {
      await page.goto(svc.browser_url);
      expect(await page.textContent("#title")).toBe("hello from the sandbox");
      const echoed = await page.evaluate(
        () =>
          new Promise<string[]>((resolve, reject) => {
            const ws = new WebSocket(`ws://${location.host}/ws`);
            const got: string[] = [];
            ws.onopen = () => {
              ws.send("ping 1");
              ws.send("ping 2");
            };
            ws.onmessage = (e) => {
              got.push(String(e.data));
              if (got.length === 2) {
                ws.close();
                resolve(got);
              }
            };
            ws.onerror = () => reject(new Error("websocket error"));
          }),
      );
      expect(echoed).toEqual(["echo: ping 1", "echo: ping 2"]);
      const events = await page.evaluate(
        () =>
          new Promise<string[]>((resolve, reject) => {
            const es = new EventSource("/sse");
            const got: string[] = [];
            es.onmessage = (e) => {
              got.push(String(e.data).split(" ").slice(0, 2).join(" "));
              if (got.length === 3) {
                es.close();
                resolve(got);
              }
            };
            es.onerror = () => {
              if (got.length < 3) reject(new Error(`event stream failed after ${got.length} events`));
            };
          }),
      );
      expect(events).toEqual(["tick 0", "tick 1", "tick 2"]);
    } finally {
      await page.close();
    }
  });

  it("an expired token is refused", async () => {
    const svc = await mint(8000, 1);
    await new Promise((r) => setTimeout(r, 2100));
    const page = await browser.newPage();
    try {
      const res = await page.goto(svc.browser_url);
      expect(res?.status()).toBe(401);
      expect(await page.textContent("body")).toContain("UNAUTHENTICATED");
    } finally {
      await page.close();
    }
  });

  it("a fresh browser without the cookie is refused", async () => {
    const svc = await mint(8000);
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    try {
      const res = await page.goto(new URL("/", svc.browser_url).toString());
      expect(res?.status()).toBe(401);
    } finally {
      await ctx.close();
    }
  });

  it("langsmith@0.12.0's client fetches through a service URL it obtained", async () => {
    const client = new SandboxClient({ apiEndpoint: `${w.t.url}/v2/sandboxes`, apiKey: w.t.apiKey });
    const svc = await client.serviceUrl(app.name, { port: 8000, expiresInSeconds: 600 });
    if (!(svc instanceof LangSmithServiceUrl)) throw new Error("expected a token service URL");
    expect(await svc.serviceUrl()).toBe(`${w.t.url}/svc/${app.id}/8000`);
    const res = await svc.fetch("/");
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("hello from the sandbox");
    const post = await svc.fetch("/echo", { method: "POST", body: "abc" });
    expect(((await post.json()) as { bytes: number }).bytes).toBe(3);
  });
});
