#!/usr/bin/env bash
# Installs redis-server (and redis-cli, which comes with it) from Debian's
# packages when missing. The tests start their own servers on free ports.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing and apt-get is not available: install Redis 7 yourself" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing redis-server from Debian's packages"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
# The package may start a system service on 6379; the tests do not need it.
command -v redis-server >/dev/null
