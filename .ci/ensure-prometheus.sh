#!/usr/bin/env bash
# Puts promtool and prometheus from Debian's `prometheus` package into a
# cache directory (extracted from the .deb: no service, no dependencies but
# libc) unless they are on PATH. Prints the directory holding both.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  dirname "$(command -v promtool)"
  exit 0
fi
cache=${FANOUT_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fanout-ci}
bin="$cache/prometheus-deb/usr/bin"
if [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ]; then
  echo "$bin"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || { echo "promtool missing and apt-get/dpkg-deb unavailable" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1); then
  # Package lists may be missing on a fresh machine.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1) || { cat "$tmp/log" >&2; exit 1; }
fi
rm -rf "$cache/prometheus-deb"
mkdir -p "$cache/prometheus-deb"
dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb \
  | tar -x -C "$cache/prometheus-deb" ./usr/bin/promtool ./usr/bin/prometheus
"$bin/promtool" --version >&2
echo "$bin"
