#!/usr/bin/env bash
# Builds (or finds cached) the OCI test images: busybox, python, python-extra.
# CI runs this before the tests so no test waits on an image build.
#   scripts/build-test-images.sh [--install-deps] [IMAGE ...]
# Cache: $SANDBAR_TEST_CACHE, else /var/cache/sandbar-test. Needs root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

install_deps=0
images=()
for arg in "$@"; do
  case "$arg" in
    --install-deps) install_deps=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) images+=("$arg") ;;
  esac
done

# Tool -> Debian package that provides it.
declare -A packages=(
  [umoci]=umoci [skopeo]=skopeo [mmdebstrap]=mmdebstrap [docker-registry]=docker-registry
  [dpkg-deb]=dpkg [apt-get]=apt [setpriv]=util-linux
)
missing=()
for tool in "${!packages[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${packages[$tool]}")
done

if ((${#missing[@]} > 0)); then
  if ((install_deps)); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "missing tools; install with: apt-get install -y ${missing[*]} (or pass --install-deps)" >&2
    exit 1
  fi
fi

exec npx tsx test/support/build-images-cli.ts "${images[@]}"
