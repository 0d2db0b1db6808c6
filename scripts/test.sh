#!/usr/bin/env bash
# Runs the whole test suite from a fresh Debian machine: installs what is missing, then
#   1. formatting, clippy (-D warnings), the UI's type check and lint;
#   2. the Rust tests (unit, and cross-component tests against the real local Supabase stack:
#      PostgreSQL 15, postrust-server, the gateway and the Realtime stand-in);
#   3. the official realtime-js client against the stand-in (inside step 2);
#   4. Playwright (Debian's Chromium) against the headless backend;
#   5. the desktop app under Xvfb through tauri-driver and WebKitWebDriver.
# Set SKIP_DESKTOP=1 to skip step 5 (a release WebKit build and the .deb: the longest step).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
started=$(date +%s)
export CI=${CI:-}

say "checking system packages"
apt_ensure "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
[ -n "${SKIP_DESKTOP:-}" ] || apt_ensure "${DESKTOP_PKGS[@]}" "${DESKTOP_TEST_PKGS[@]}"
ensure_node
command -v cargo-nextest >/dev/null || cargo_tool cargo-nextest cargo-nextest
cargo_tool postrust postrust-server $POSTRUST_VERSION
[ -n "${SKIP_DESKTOP:-}" ] || cargo_tool tauri-driver tauri-driver $TAURI_DRIVER_VERSION

for d in ui tests/conformance tests/desktop .; do
  [ -f "$d/package-lock.json" ] && npm_ci "$ROOT/$d"
done
build_ui

say "1/5 formatting, lints, UI type check"
cargo fmt --all -- --check
cargo clippy --all-targets -q -- -D warnings
# The desktop crate builds in its own target dir (WebKit), shared with its release build below.
[ -n "${SKIP_DESKTOP:-}" ] || CARGO_TARGET_DIR=target/desktop cargo clippy -p collisionos-desktop --all-targets -q -- -D warnings
(cd ui && npm run --silent check && npm run --silent lint)

say "2/5 Rust tests (unit + against the local Supabase stack)"
cargo nextest run --no-fail-fast --profile ci

say "4/5 UI end-to-end (Playwright + Chromium against the headless backend)"
scripts/ui-e2e.sh

if [ -z "${SKIP_DESKTOP:-}" ]; then
  say "5/5 the installer and the desktop end-to-end test (Xvfb + tauri-driver + WebKitWebDriver)"
  # Release build and .deb through the Tauri CLI (offline), then the built app is driven.
  scripts/desktop-build.sh
  CARGO_TARGET_DIR=target/desktop cargo test --release -q -p collisionos-desktop
  deb=$(ls target/desktop/release/bundle/deb/*.deb)
  say "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KB); its Depends: $(dpkg-deb -f "$deb" Depends)"
  tests/desktop/run.sh target/desktop/release/collisionos-desktop
fi
say "all tests passed in $(( $(date +%s) - started )) s"
