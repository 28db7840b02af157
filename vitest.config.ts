import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["packages/*/src/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/**/*.test.ts"],
          environment: "node",
          pool: "forks",
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // Two cores: more parallel files only queue on the runtime.
          maxWorkers: 2,
          minWorkers: 1,
        },
      },
    ],
  },
});
