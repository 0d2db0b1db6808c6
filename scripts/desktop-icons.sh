#!/usr/bin/env bash
# Regenerates every icon in icons/ from icons/logo.svg (app) and icons/tray.svg (tray, one PNG per
# health level). Needs the repo's npm install (Tauri CLI, for `tauri icon`) and ImageMagick.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# App icons: the CLI renders the SVG (with gradients) and writes every size the bundlers use.
npx tauri icon icons/logo.svg -o "$tmp" >/dev/null 2>&1
for f in 32x32.png 64x64.png 128x128.png 128x128@2x.png icon.png icon.ico icon.icns; do
  cp "$tmp/$f" "icons/$f"
done

# Tray icons: flat colours, so ImageMagick's own SVG renderer is enough.
convert=/usr/bin/convert
[ -x "$convert" ] || convert=convert
for level in ok:#16a34a warning:#f59e0b critical:#dc2626 offline:#6b7280; do
  name=${level%%:*}
  colour=${level#*:}
  sed "s/FILL/$colour/" icons/tray.svg >"$tmp/tray-$name.svg"
  "$convert" -background none -density 96 "$tmp/tray-$name.svg" -resize 64x64 \
    -depth 8 -define png:color-type=6 "icons/tray-$name.png"
done
ls -l icons
