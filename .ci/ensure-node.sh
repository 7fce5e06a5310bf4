#!/usr/bin/env bash
# Installs Node.js and npm from Debian's packages when missing, then the
# Socket.IO benchmark peer's packages (bench/peers/socketio, from npm, as
# pinned in its package-lock.json) when they are missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  .ci/apt-install.sh nodejs npm
fi
peer=bench/peers/socketio
stamp=$peer/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$peer/package-lock.json" -nt "$stamp" ]; then
  echo "installing the Socket.IO peer's packages (npm ci)"
  npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
fi
