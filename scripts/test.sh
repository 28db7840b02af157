#!/usr/bin/env bash
# Sets up (idempotent) and runs every test: Go agent, unit, e2e against the real runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo; echo "==> agent tests (go test)"
(cd agent && go test ./... 2>&1)
echo; echo "==> test images (built once, cached in ${SANDBAR_TEST_CACHE:-/var/cache/sandbar-test})"
npx tsx test/support/build-images-cli.ts
echo; echo "==> typecheck and lint"
npx tsc -p test/tsconfig.json --noEmit
npx eslint .
echo; echo "==> unit and e2e tests"
npx vitest run
