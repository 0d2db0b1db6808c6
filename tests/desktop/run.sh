#!/usr/bin/env bash
# Desktop e2e: runs the built CollisionOS Monitor under Xvfb with a private session bus, drives it
# with WebdriverIO through tauri-driver and Debian's WebKitWebDriver, and checks the window, the
# live health view, the tray (as a StatusNotifierItem on the bus), notifications, single instance
# and every exit path. Screenshots and app logs go to tests/desktop/artifacts/.
#
#   tests/desktop/run.sh [PATH_TO_APP]
#
# Default app: target/desktop/release/collisionos-desktop (build it with
# `npm run tauri -- build --bundles deb` or scripts/desktop-build.sh). Needs: xvfb, xauth,
# webkit2gtk-driver, dbus, python3-dbus, python3-gi, python3-xlib, imagemagick (Debian) and tauri-driver
# (`cargo install tauri-driver --locked`); scripts/desktop-deps.sh installs them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
app=${1:-$root/target/desktop/release/collisionos-desktop}
app=$(realpath "$app")
artifacts=$here/artifacts

need() { command -v "$1" >/dev/null || { echo "missing $1: run scripts/desktop-deps.sh" >&2; exit 2; }; }
for tool in Xvfb dbus-daemon tauri-driver WebKitWebDriver import identify node pgrep; do need "$tool"; done
[ -x "$app" ] || { echo "no app at $app: build it first (scripts/desktop-build.sh)" >&2; exit 2; }
[ -d "$here/node_modules/webdriverio" ] || (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts)

rm -rf "$artifacts"
mkdir -p "$artifacts"
run_dir=$(mktemp -d /tmp/collisionos-desktop-e2e.XXXXXX)
pids=()
cleanup() {
  local code=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # GTK may have started xdg-document-portal, whose FUSE mount in the runtime dir goes away
  # with the bus just killed; give it a moment rather than fail the run on it.
  fusermount -u "$XDG_RUNTIME_DIR/doc" 2>/dev/null || true
  rm -rf "$run_dir" 2>/dev/null || { sleep 1; rm -rf "$run_dir" 2>/dev/null || true; }
  exit "$code"
}
trap cleanup EXIT

# A private world: runtime dir (tray icon files), HOME (WebKit caches), data dir, free port.
export XDG_RUNTIME_DIR=$run_dir/runtime HOME=$run_dir/home
mkdir -p -m 0700 "$XDG_RUNTIME_DIR" "$HOME"
export PORT=0 LOG_LEVEL=info
unset WAYLAND_DISPLAY SUPABASE_URL SUPABASE_ANON_KEY SUPABASE_SERVICE_ROLE_KEY

# Session bus, display, the desktop's tray/notification host, the WebDriver server.
dbus_out=$(dbus-daemon --session --fork --print-address=1 --print-pid=1 --nosyslog)
export DBUS_SESSION_BUS_ADDRESS=$(sed -n 1p <<<"$dbus_out")
pids+=("$(sed -n 2p <<<"$dbus_out")")

display_no=$((90 + RANDOM % 100))
Xvfb ":$display_no" -screen 0 1440x900x24 -nolisten tcp >"$artifacts/xvfb.log" 2>&1 &
pids+=($!)
export DISPLAY=:$display_no
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$display_no" ] && break; sleep 0.1; done

export SNI_STATE=$run_dir/sni-state.json
/usr/bin/python3 "$here/sni_host.py" serve "$SNI_STATE" >"$artifacts/sni-host.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$artifacts/sni-host.log" 2>/dev/null && break; sleep 0.1; done

tauri-driver --port 4444 --native-driver /usr/bin/WebKitWebDriver >"$artifacts/tauri-driver.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4444) 2>/dev/null && break; sleep 0.1; done

# WebKitWebDriver starts the "browser" (the app) itself, with tauri-driver's environment; this
# wrapper adds the scenario's (written by e2e.mjs before each launch), records the app's pid,
# stderr and exit code for the checks, and passes signals on.
wrapper=$run_dir/app-under-test.sh
cat >"$wrapper" <<EOF
#!/bin/sh
. "$run_dir/scenario.env"
"$app" "\$@" 2>>"\$E2E_LOG_FILE" &
pid=\$!
echo \$pid >"\$E2E_PID_FILE"
trap 'kill -TERM \$pid 2>/dev/null' TERM INT HUP
while :; do
  wait \$pid
  code=\$?
  kill -0 \$pid 2>/dev/null || break
done
echo \$code >"\$E2E_EXIT_FILE"
exit \$code
EOF
chmod +x "$wrapper"

set +e
APP=$app WRAPPER=$wrapper RUN_DIR=$run_dir ARTIFACTS=$artifacts node "$here/e2e.mjs"
code=$?
set -e
echo "artifacts: $artifacts"
exit "$code"
