#!/bin/sh
# Builds the static agent binary at agent/bin/sandbar-agent. Idempotent.
set -eu
cd "$(dirname "$0")"
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/sandbar-agent ./cmd/sandbar-agent
