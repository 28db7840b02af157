#!/usr/bin/env bash
# Installs everything sandbar needs on Debian 12 (as root) and builds it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup must run as root (it installs packages and the server manages mounts and namespaces)" >&2
  exit 1
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# runsc from trixie: the bookworm build (2022) panics checkpointing a paused sandbox and
# lacks --overlay2; trixie's is a static binary with no dependencies (docs/decisions.md).
if [ ! -f /etc/apt/sources.list.d/sandbar-trixie.sources ]; then
  log "adding Debian trixie (pinned low) for runsc"
  cat > /etc/apt/sources.list.d/sandbar-trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/sandbar-trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  rm -f /var/lib/sandbar-setup-apt-stamp
fi

PKGS=(runc skopeo umoci docker-registry iproute2 nftables e2fsprogs mmdebstrap golang-go attr util-linux zstd tar ca-certificates
  # tests and benches only: a real browser for service URLs, the reference yamux for interop, wrk,
  # htpasswd and openssl for the private-registry test
  chromium golang-github-hashicorp-yamux-dev wrk apache2-utils openssl)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
runsc_ok=0
runsc_version=$(runsc --version 2>/dev/null || true)
case "$runsc_version" in *2024*) runsc_ok=1 ;; esac
if [ "${#missing[@]}" -gt 0 ] || [ "$runsc_ok" -eq 0 ]; then
  log "installing Debian packages: ${missing[*]:-} runsc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  if [ "${#missing[@]}" -gt 0 ]; then apt-get install -y -q "${missing[@]}"; fi
  apt-get install -y -q -t trixie runsc
fi

log "installing npm packages"
# `npm install` follows package-lock.json; `npm ci` is not used because the npm here rejects
# lock files that omit other platforms' optional packages (rollup, esbuild).
npm install --no-audit --no-fund
# better-sqlite3 builds from source when no prebuilt binary can be fetched.
node -e 'require("better-sqlite3")' 2>/dev/null || npm rebuild better-sqlite3

log "building the agent"
bash agent/build.sh

log "building the TypeScript packages"
npm run build --silent

log "setup done: start the server with  npx sandbar serve --port 8080 --data-dir /var/lib/sandbar"
