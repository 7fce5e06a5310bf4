#!/usr/bin/env bash
# Installs Debian packages (as root, or with sudo): .ci/apt-install.sh PKG...
# Used by the ensure-* scripts when something the tests need is missing.
set -euo pipefail
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get is not available: install $* yourself" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing $* from Debian's packages"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
