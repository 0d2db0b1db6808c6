#!/usr/bin/env bash
# Installs what building, bundling and testing the desktop app needs on Debian 12: WebKitGTK and
# friends (build), Xvfb + WebKitWebDriver + a session bus + python3-dbus/gi (e2e), ImageMagick
# (icons, screenshots), tauri-driver (cargo), and the npm packages (Tauri CLI, WebdriverIO).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev build-essential pkg-config
  xvfb xauth webkit2gtk-driver dbus python3-dbus python3-gi python3-xlib imagemagick procps rpm)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v tauri-driver >/dev/null || cargo install tauri-driver --locked
[ -x node_modules/.bin/tauri ] || npm ci --no-audit --no-fund
[ -d tests/desktop/node_modules/webdriverio ] ||
  (cd tests/desktop && npm ci --no-audit --no-fund --ignore-scripts)
