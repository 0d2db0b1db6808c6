#!/usr/bin/env bash
# Proves the .deb's Depends are enough: a minimal Debian 12 (debootstrap minbase, nothing but
# what the package pulls in), `apt-get install ./x.deb`, the installed app started against a
# display of the host's Xvfb, checked (API answers, window on screen, screenshot), stopped with
# SIGTERM (exit 0), then `apt-get remove`. Root only (debootstrap, chroot, mounts).
#
#   scripts/desktop-clean-debian.sh [PATH_TO_DEB] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=""
keep=0
for a in "$@"; do
  case $a in
    --keep) keep=1 ;;
    *) deb=$a ;;
  esac
done
if [ -z "$deb" ]; then
  deb=$(ls -t target/desktop/release/bundle/deb/*.deb 2>/dev/null | head -n 1 || true)
fi
[ -f "$deb" ] || { echo "no .deb: build it first (scripts/desktop-build.sh)" >&2; exit 2; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
mkdir -p tests/desktop/artifacts

root=/tmp/collisionos-clean-debian
port=3996
display_no=$((90 + RANDOM % 100))
xvfb=""
cleanup() {
  local code=$?
  [ -f "$root/tmp/app.pid" ] && kill "$(cat "$root/tmp/app.pid")" 2>/dev/null || true
  [ -n "$xvfb" ] && kill "$xvfb" 2>/dev/null || true
  for m in tmp/.X11-unix sys dev proc; do umount "$root/$m" 2>/dev/null || true; done
  [ "$keep" -eq 1 ] || rm -rf "$root"
  exit "$code"
}
trap cleanup EXIT

if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "debootstrap minbase bookworm into $root"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/tmp/clean-debian-debootstrap.log
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/tmp/.X11-unix"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /sys "$root/sys"
mount --bind /tmp/.X11-unix "$root/tmp/.X11-unix"
before=$(chroot "$root" dpkg-query -W -f '${Status}\n' | grep -c "install ok installed")

cp "$deb" "$root/tmp/app.deb"
chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/app.deb' \
  >/tmp/clean-debian-install.log 2>&1
after=$(chroot "$root" dpkg-query -W -f '${Status}\n' | grep -c "install ok installed")
echo "  ok   installed on minimal Debian 12 ($before packages before, $after after)"

Xvfb ":$display_no" -screen 0 1440x900x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$display_no" ] && break; sleep 0.1; done
cat >"$root/tmp/run-app.sh" <<EOF
#!/bin/sh
export DISPLAY=:$display_no HOME=/root PORT=$port COLLISIONOS_DATA_DIR=/root/collisionos
mkdir -p /run/user/0 && chmod 700 /run/user/0 && export XDG_RUNTIME_DIR=/run/user/0
/usr/bin/collisionos-desktop >/tmp/app.log 2>&1 &
echo \$! >/tmp/app.pid
wait \$!
echo \$? >/tmp/app.exit
EOF
chmod +x "$root/tmp/run-app.sh"
rm -f "$root/tmp/app.exit" "$root/tmp/app.pid"
chroot "$root" /tmp/run-app.sh &

fail=0
ok() { echo "  ok   $1"; }
bad() { echo "  FAIL $1"; fail=1; }
health=""
for _ in $(seq 60); do
  health=$(curl -fsS "http://127.0.0.1:$port/api/health" 2>/dev/null || true)
  [ -n "$health" ] && break
  sleep 0.5
done
[[ $health == *'"status"'* ]] && ok "the installed app's backend answers on :$port" || bad "no answer on :$port"
viewable=0
for _ in $(seq 40); do
  viewable=$(DISPLAY=:$display_no /usr/bin/python3 tests/desktop/sni_host.py mapped "CollisionOS Monitor" |
    sed -n 's/.*"viewable": \([0-9]*\).*/\1/p')
  [ "${viewable:-0}" -ge 1 ] && break
  sleep 0.5
done
[ "${viewable:-0}" -ge 1 ] && ok "its window is on screen" || bad "no window on screen"
sleep 5 # live figures on the charts for the screenshot
DISPLAY=:$display_no import -window root tests/desktop/artifacts/clean-debian.png
ok "screenshot: tests/desktop/artifacts/clean-debian.png"

kill -TERM "$(cat "$root/tmp/app.pid")"
for _ in $(seq 40); do [ -f "$root/tmp/app.exit" ] && break; sleep 0.5; done
code=$(cat "$root/tmp/app.exit" 2>/dev/null || echo none)
[ "$code" = 0 ] && ok "SIGTERM: exit code 0" || bad "SIGTERM: exit code $code"
grep -q "backend stopped" "$root/tmp/app.log" && ok "the backend stopped before the exit" || bad "no 'backend stopped' in the log"
rm -f "$root/tmp/app.pid"

chroot "$root" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq collision-os-monitor' >/dev/null 2>&1
[ ! -e "$root/usr/bin/collisionos-desktop" ] && ok "apt-get remove takes the binary away" || bad "binary still installed"
exit "$fail"
