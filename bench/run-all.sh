#!/usr/bin/env bash
# Runs every benchmark and prints their markdown tables (results JSON in bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsx bench/core-bench.ts "$@"
echo
npx tsx bench/streaming-bench.ts
echo
npx tsx bench/network-bench.ts
echo
npx tsx bench/memory-bench.ts
echo
npx tsx bench/build-bench.ts
