/**
 * Pre-builds the cached test images so a CI run pays the build time before the tests start:
 *   npx tsx test/support/build-images-cli.ts [busybox|python|python-extra ...]
 * Prints one line per image: name, seconds, layout dir and layer digests.
 */
import { type TestImageName, testCacheRoot, testImage } from "./images.js";

const ALL: readonly TestImageName[] = ["busybox", "python", "python-extra"];

function isImageName(name: string): name is TestImageName {
  return ALL.some((known) => known === name);
}

async function main(args: readonly string[]): Promise<void> {
  const unknown = args.filter((arg) => !isImageName(arg));
  if (unknown.length > 0) {
    console.error(`unknown image(s): ${unknown.join(", ")}; known: ${ALL.join(", ")}`);
    process.exitCode = 2;
    return;
  }
  const names = args.length > 0 ? args.filter(isImageName) : ALL;
  console.log(`test image cache: ${testCacheRoot()}`);
  for (const name of names) {
    const started = performance.now();
    const image = await testImage(name);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    console.log(`${name}\t${seconds}s\t${image.layoutDir}\t${image.layerDigests.join(",")}`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
