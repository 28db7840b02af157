import { get } from "node:http";

import { describe, expect, it } from "vitest";

import { testImage } from "./images.js";
import { pushImage, remoteLayerDigests, startRegistry } from "./registry.js";

const TIMEOUT_MS = 10 * 60_000;

function statusOf(url: string): Promise<number | "refused"> {
  return new Promise((resolve) => {
    get(url, { agent: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    }).on("error", () => resolve("refused"));
  });
}

describe("test registry", () => {
  it(
    "serves the v2 API on loopback and stops",
    async () => {
      const registry = await startRegistry();
      expect(registry.host).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(await statusOf(`${registry.url}/v2/`)).toBe(200);
      await registry.stop();
      expect(await statusOf(`${registry.url}/v2/`)).toBe("refused");
      await registry.stop();
    },
    TIMEOUT_MS,
  );

  it(
    "serves a pushed image with the layout's layer digests",
    async () => {
      const image = await testImage("busybox");
      const registry = await startRegistry();
      try {
        await pushImage(image.layoutDir, image.tag, registry.host, "busybox:latest");
        expect(await remoteLayerDigests(registry.host, "busybox:latest")).toEqual(image.layerDigests);
      } finally {
        await registry.stop();
      }
    },
    TIMEOUT_MS,
  );
});
