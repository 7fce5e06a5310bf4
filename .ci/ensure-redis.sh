#!/usr/bin/env bash
# Installs redis-server (and redis-cli, which comes with it) from Debian's
# packages when missing. The tests start their own servers on free ports.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" redis-server
# The package may start a system service on 6379; the tests do not need it.
command -v redis-server >/dev/null
