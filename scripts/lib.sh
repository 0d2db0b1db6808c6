# Shared set-up helpers for run.sh and test.sh: every step says what it does, installs only
# what is missing, and is safe to run again.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
# Pinned versions of the cargo-installed tools (cached in ~/.cargo/bin).
POSTRUST_VERSION=${POSTRUST_VERSION:-3.1.0}
TAURI_DRIVER_VERSION=${TAURI_DRIVER_VERSION:-2.1.0}

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m==>\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (run as root or install sudo)"; fi
}

# apt_ensure PKG...: installs the Debian packages that are not installed yet.
apt_ensure() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  say "installing Debian packages: ${missing[*]}"
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cargo_tool BIN CRATE [VERSION]: cargo-installs CRATE unless BIN is already on PATH.
cargo_tool() {
  local bin=$1 crate=$2 version=${3:-}
  if command -v "$bin" >/dev/null 2>&1; then return 0; fi
  say "installing $crate with cargo (first time only; cached in ~/.cargo/bin)"
  if [ -n "$version" ]; then cargo install --locked "$crate" --version "$version"; else cargo install --locked "$crate"; fi
}

# npm_ci DIR: runs `npm ci` in DIR when node_modules is missing or older than the lock file.
npm_ci() {
  local dir=$1
  [ -f "$dir/package-lock.json" ] || return 0
  local stamp="$dir/node_modules/.ci-stamp"
  local want; want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "npm ci in ${dir#"$ROOT"/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

# Packages every build needs (Rust crates that build C: jemalloc, ring; pkg-config for GTK).
BUILD_PKGS=(build-essential pkg-config ca-certificates curl git)
# The desktop shell (Tauri 2 on WebKitGTK 4.1) and its tray.
DESKTOP_PKGS=(libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev)
# The desktop end-to-end test: a private session bus for the tray, X for screenshots.
DESKTOP_TEST_PKGS=(dbus python3-dbus python3-gi python3-xlib procps)
# Tests: the local Supabase stack, browsers, the desktop driver and screenshots.
TEST_PKGS=(postgresql-15 postgresql-15-wal2json chromium chromium-driver xvfb xauth webkit2gtk-driver imagemagick)

ensure_node() {
  if command -v node >/dev/null && command -v npm >/dev/null; then return 0; fi
  apt_ensure nodejs npm
}

build_ui() {
  ensure_node
  npm_ci "$ROOT/ui"
  say "building the UI (ui/dist)"
  (cd "$ROOT/ui" && npm run --silent build)
}

has_display() { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; }
