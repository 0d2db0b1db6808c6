#!/usr/bin/env bash
# Builds the release app and its .deb (and .rpm with --rpm) into target/desktop/, in its own
# target dir so the long WebKit build never holds the workspace's shared target lock.
#   scripts/desktop-build.sh [--rpm]
set -euo pipefail
cd "$(dirname "$0")/.."
bundles=deb
[ "${1:-}" = "--rpm" ] && bundles=deb,rpm
[ -d ui/node_modules ] || npm --prefix ui ci --no-audit --no-fund
[ -x node_modules/.bin/tauri ] || npm ci --no-audit --no-fund
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/desktop} npm run tauri -- build --bundles "$bundles"
ls -l target/desktop/release/bundle/*/*.{deb,rpm} 2>/dev/null || true
