#!/usr/bin/env bash
# The whole benchmark suite in one command, on a machine set up with scripts/setup.sh (as root):
#   bench/run-all.sh [--no-build] [--quick] [--only core,pool,...] [--no-docs]
# Builds the TypeScript packages (unless --no-build), then runs bench/suite.ts: every bench in
# turn, its wall time printed, results in bench/results/<bench>.json, all rows in
# bench/results/summary.{json,md}, and summary.md spliced into docs/benchmarks.md (full runs
# where every bench succeeded). About 12 minutes on a 2-vCPU machine, 13 with the test images
# still to build (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
args=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
if ((build)); then
  echo "==> building the TypeScript packages"
  npm run build --silent
fi
exec npx tsx bench/suite.ts "${args[@]}"
