#!/usr/bin/env bash
# Installs Node.js and npm from Debian's packages when missing, then the
# npm packages of the Socket.IO benchmark peer and of the client library.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  .ci/apt-install.sh nodejs npm
fi
# The Socket.IO benchmark peer and the client library (clients/js), each
# as pinned in its package-lock.json, when missing or out of date.
for dir in bench/peers/socketio clients/js; do
  stamp=$dir/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    echo "installing $dir's packages (npm ci)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
