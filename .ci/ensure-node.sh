#!/usr/bin/env bash
# Installs Node.js and npm from Debian's packages when missing, then the
# Socket.IO benchmark peer's packages (bench/peers/socketio, from npm, as
# pinned in its package-lock.json) when they are missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "node/npm are missing and apt-get is not available: install Node.js 18+ yourself" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing nodejs and npm from Debian's packages"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm
fi
peer=bench/peers/socketio
stamp=$peer/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$peer/package-lock.json" -nt "$stamp" ]; then
  echo "installing the Socket.IO peer's packages (npm ci)"
  npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
fi
